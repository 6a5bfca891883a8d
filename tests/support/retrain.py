"""Helpers for the operator integration tests: emulator admin shortcuts, deferral driving, scoring."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import BaseTaskEndEvent

from support.airflow_context import make_context
from support.emulator import CHURN_COLUMNS, CHURN_ROWS, ENERGY_COLUMNS, ENERGY_ROWS, DataPlane, RunningEmulator

CHURN_SMOKE_ROWS = [dict(zip(CHURN_COLUMNS, row, strict=True)) for row in CHURN_ROWS]
ENERGY_SMOKE_ROWS = [dict(zip(ENERGY_COLUMNS, row, strict=True)) for row in ENERGY_ROWS]


# --- emulator admin ------------------------------------------------------------------------------


def requests_log(emulator: RunningEmulator, route: str | None = None) -> list[dict[str, Any]]:
    params = {"route": route} if route else None
    return list(emulator.admin("GET", "requests", params=params).json()["requests"])


def route_count(emulator: RunningEmulator, route: str, method: str | None = None) -> int:
    return sum(1 for r in requests_log(emulator, route) if method is None or r["method"] == method)


def add_fault(emulator: RunningEmulator, route: str, *steps: dict[str, Any] | None) -> None:
    """Fault ``route``: one step per matching request (None = serve normally)."""
    emulator.admin("POST", "faults", json={"route": route, "sequence": list(steps)})


def status(code: int, retry_after: int | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"kind": "status", "status": code}
    if retry_after is not None:
        step["retry_after_seconds"] = retry_after
    return step


def job_fault(emulator: RunningEmulator, outcome: str, **options: Any) -> None:
    emulator.admin("POST", "faults/jobs", json={"outcome": outcome, **options})


def state(emulator: RunningEmulator) -> dict[str, Any]:
    return dict(emulator.admin("GET", "state").json())


def jobs(emulator: RunningEmulator) -> list[dict[str, Any]]:
    return list(state(emulator)["jobs"])


# --- scoring through the data plane with raw HTTP --------------------------------------------------


def classic_scoring(emulator: RunningEmulator, endpoint: str = "retrain01") -> DataPlane:
    ep = emulator.classic_endpoint("predictive", endpoint)
    return DataPlane(ep["api_location"], ep["primary_key"])


def arm_scoring(emulator: RunningEmulator, kind: str = "predictive") -> DataPlane:
    svc = emulator.arm_service(kind)
    return DataPlane(svc["api_location"], svc["primary_key"])


def predictions(plane: DataPlane, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    response = plane.execute({"Inputs": {"input1": rows}, "GlobalParameters": {}}, query="format=swagger")
    assert response.status_code == 200, response.text
    return list(response.json()["Results"]["output1"])


# --- running operators as Airflow would ------------------------------------------------------------


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("trigger ended without an event")


def run_trigger(trigger: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Run a trigger's ``run()`` (as the triggerer does) until its first event; return the payload.

    An event that ends the task in the triggerer comes back as ``{"task_instance_state", "xcoms"}``."""
    event = asyncio.run(asyncio.wait_for(_first_event(trigger), timeout))
    if isinstance(event, BaseTaskEndEvent):
        return {"task_instance_state": str(event.task_instance_state), "xcoms": event.xcoms}
    return dict(event.payload)


def run_deferrable(
    op: Any, context: dict[str, Any] | None = None, *, on_defer: Callable[[TaskDeferred], None] | None = None
) -> Any:
    """``execute``; on deferral run the trigger inline and resume with its event, like ``dag.test()``.

    When the trigger ends the task itself (success in the triggerer), return the XCom it set."""
    context = context if context is not None else make_context()
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        if on_defer is not None:
            on_defer(deferred)
        payload = run_trigger(deferred.trigger)
        if "task_instance_state" in payload:
            assert payload["task_instance_state"] == "success", payload
            return (payload["xcoms"] or {}).get("return_value")
        # The trigger is serialized and rebuilt in the triggerer; the task resumes in a fresh process.
        return getattr(op, deferred.method_name)(context, payload, **(deferred.kwargs or {}))
