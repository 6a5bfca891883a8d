"""The admin API under ``/_emulator/`` (no auth; loopback clients only)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from emulator.control import FaultRuleSpec, JobFaultSpec, OperationFaultSpec
from emulator.errors import api_error
from emulator.routes.common import call, emulator, json_body

router = APIRouter(prefix="/_emulator")


def _loopback_only(request: Request) -> None:
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise api_error("ResourceNotFound", "Admin routes answer loopback clients only.")


def _parse(model: Any, body: Any) -> Any:
    try:
        return model.model_validate(body if body is not None else {})
    except ValidationError as exc:
        raise api_error("RequestBodyInvalid", exc.json(include_url=False, include_input=False)) from None


@router.get("/health", name="admin.health")
async def health(request: Request) -> JSONResponse:
    _loopback_only(request)
    return JSONResponse({"status": "ok"})


@router.get("/state", name="admin.state")
async def state(request: Request) -> JSONResponse:
    _loopback_only(request)
    return JSONResponse(await call(emulator(request).state_dump))


# Deep links: what a task's extra link in the Airflow UI opens (paths mirror the resource's own).
@router.get("/state/jobs/{job_id}", name="admin.state.job")
async def job_state(request: Request, job_id: str) -> Response:
    _loopback_only(request)
    return _found(await call(emulator(request).job_view, job_id), f"No job '{job_id}'.")


@router.get("/state/workspaces/{workspace_id}/webservices/{service_id}/endpoints/{name}", name="admin.state.endpoint")
async def endpoint_state(request: Request, workspace_id: str, service_id: str, name: str) -> Response:
    _loopback_only(request)
    view = await call(emulator(request).endpoint_view, workspace_id, service_id, name)
    return _found(view, f"No endpoint '{name}' of web service '{service_id}' in workspace '{workspace_id}'.")


@router.get("/state/subscriptions/{rest:path}", name="admin.state.arm")
async def arm_service_state(request: Request, rest: str) -> Response:
    _loopback_only(request)
    resource_id = f"/subscriptions/{rest}"
    return _found(await call(emulator(request).arm_service_view, resource_id), f"No web service '{resource_id}'.")


def _found(view: dict[str, Any] | None, message: str) -> Response:
    if view is None:
        raise api_error("ResourceNotFound", message)
    # Indented: these are opened in a browser, from a task's extra link.
    return Response(json.dumps(view, indent=2), media_type="application/json")


@router.post("/reset", name="admin.reset")
async def reset(request: Request) -> JSONResponse:
    _loopback_only(request)
    await call(emulator(request).reset)
    return JSONResponse({"status": "reset"})


@router.get("/requests", name="admin.requests")
async def requests_log(request: Request) -> JSONResponse:
    _loopback_only(request)
    return JSONResponse({"requests": emulator(request).control.requests(request.query_params.get("route"))})


@router.delete("/requests", name="admin.requests.clear")
async def clear_requests(request: Request) -> Response:
    _loopback_only(request)
    emulator(request).control.clear_requests()
    return Response(status_code=204)


@router.get("/settings", name="admin.settings")
async def get_settings(request: Request) -> JSONResponse:
    _loopback_only(request)
    return JSONResponse(emulator(request).control.knobs.model_dump())


@router.patch("/settings", name="admin.settings.update")
async def update_settings(request: Request) -> JSONResponse:
    _loopback_only(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise api_error("RequestBodyInvalid", "Send an object of setting name to value.")
    try:
        knobs = emulator(request).control.set_knobs(body)
    except ValidationError as exc:
        raise api_error("RequestBodyInvalid", exc.json(include_url=False, include_input=False)) from None
    return JSONResponse(knobs.model_dump())


@router.get("/faults", name="admin.faults")
async def list_faults(request: Request) -> JSONResponse:
    _loopback_only(request)
    control = emulator(request).control
    return JSONResponse(
        {"rules": control.rules(), "jobs": control.job_faults(), "operations": control.operation_faults()}
    )


@router.post("/faults", name="admin.faults.add")
async def add_fault(request: Request) -> JSONResponse:
    _loopback_only(request)
    spec = _parse(FaultRuleSpec, await json_body(request))
    return JSONResponse(emulator(request).control.add_rule(spec), status_code=201)


@router.post("/faults/jobs", name="admin.faults.jobs.add")
async def add_job_fault(request: Request) -> JSONResponse:
    _loopback_only(request)
    spec = _parse(JobFaultSpec, await json_body(request))
    emulator(request).control.add_job_fault(spec)
    return JSONResponse(spec.model_dump(), status_code=201)


@router.post("/faults/operations", name="admin.faults.operations.add")
async def add_operation_fault(request: Request) -> JSONResponse:
    _loopback_only(request)
    spec = _parse(OperationFaultSpec, await json_body(request))
    emulator(request).control.add_operation_fault(spec)
    return JSONResponse(spec.model_dump(), status_code=201)


@router.post("/operations/{operation_id}/release", name="admin.operations.release")
async def release_operation(request: Request, operation_id: str) -> JSONResponse:
    """A Resource Manager operation a "hang" fault holds goes on: it loads the model and ends as usual."""
    _loopback_only(request)
    status = await call(emulator(request).arm.release, operation_id)
    if status is None:
        raise api_error("ResourceNotFound", f"No operation '{operation_id}'.")
    return JSONResponse({"id": operation_id, "status": status})


@router.post("/jobs/{job_id}/release", name="admin.jobs.release")
async def release_job(request: Request, job_id: str) -> JSONResponse:
    """A job a "hang" fault holds goes on: it trains and ends as usual."""
    _loopback_only(request)
    status = await call(emulator(request).batch.release, job_id)
    if status is None:
        raise api_error("JobNotFound", f"No job '{job_id}'.")
    return JSONResponse({"id": job_id, "status": status.value})


@router.delete("/faults", name="admin.faults.clear")
async def clear_faults(request: Request) -> Response:
    _loopback_only(request)
    emulator(request).control.clear_faults()
    return Response(status_code=204)


@router.delete("/faults/{rule_id}", name="admin.faults.remove")
async def remove_fault(request: Request, rule_id: str) -> Response:
    _loopback_only(request)
    if not emulator(request).control.remove_rule(rule_id):
        raise api_error("ResourceNotFound", f"No fault rule '{rule_id}'.")
    return Response(status_code=204)
