"""How much a waiting BlobArrivalSensor writes to its log, per hour of waiting, against a real Azurite.

Hours pass on a simulated clock (the code's sleeps advance it), at the default 30 s poke interval, so
each check is a real listing and the verdict does not depend on how fast the machine is. Everything
that reaches the log is counted, as the triggerer or a worker writes it: the task's own lines and
azure-core's at their loggers' effective levels under Airflow's INFO root.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from azureml_retrain.http_logging import HTTP_LOGGER
from azureml_retrain.sensors.blob_arrival import BlobArrivalSensor
from azureml_retrain.triggers.blob_arrival import HEARTBEAT_SECONDS, BlobArrivalTrigger
from support.log_volume import CapturedLog, SimulatedClock, captured_log

pytestmark = pytest.mark.integration

PREFIX = "incoming/2026-11-26/"
WINDOW = {"window_start": "2026-11-26T00:00:00+00:00", "window_end": "2026-11-27T00:00:00+00:00"}
POKE_INTERVAL = 30.0  # the config's default poke_interval_seconds
MAX_BYTES_PER_HOUR = 20_000
HOURS = 2.0
# The fourth blob lands this far into the wait: its check must get a line of its own.
DELIVERY_AT = 40 * 60.0
TRIGGER_LOGGER = "azureml_retrain.triggers.blob_arrival.BlobArrivalTrigger"
SENSOR_LOGGER = "azureml_retrain.sensors.blob_arrival.BlobArrivalSensor"


@pytest.fixture
def container(blob_service: BlobServiceClient) -> Iterator[str]:
    """Three of the window's blobs, and no ``_SUCCESS`` marker: the sensor waits for it."""
    name = f"volume-{uuid.uuid4().hex[:12]}"
    blob_service.create_container(name)
    for i in range(3):
        blob_service.get_blob_client(name, f"{PREFIX}part-{i}.csv").upload_blob(b"a,b\n1,2\n")
    yield name
    blob_service.delete_container(name)


def deliver_fourth_blob(blob_service: BlobServiceClient, container: str) -> None:
    blob_service.get_blob_client(container, f"{PREFIX}part-3.csv").upload_blob(b"a,b\n3,4\n")


def assert_readable_wait(log: CapturedLog, own_logger: str, hours: float, checks: int, http_level: int) -> None:
    """The verdicts shared by both paths: volume, quiet azure-core, the change's line, the heartbeats."""
    per_hour = log.bytes / hours
    assert checks >= hours * 3600 / POKE_INTERVAL - 1  # every simulated check really listed
    assert per_hour <= MAX_BYTES_PER_HOUR, (per_hour, log.records[:3])
    assert not [r for r in log.records if r["logger"].startswith("azure.") and r["level"] in ("debug", "info")]
    assert http_level >= logging.WARNING
    own = log.events(own_logger)
    # The change (a fourth blob) got its line, and so did the state before it.
    assert [e for e in own if "3 data blob(s) seen" in e and "still waiting" not in e]
    assert [e for e in own if "4 data blob(s) seen" in e and "still waiting" not in e]
    heartbeats = [e for e in own if "still waiting: " in e]
    assert any("still waiting: 3 blob(s), 24 bytes, marker absent, " in e for e in heartbeats), heartbeats
    assert any("still waiting: 4 blob(s), 32 bytes, marker absent, " in e for e in heartbeats), heartbeats
    assert any(" of 12 h" in e for e in heartbeats), heartbeats
    # A heartbeat at most every HEARTBEAT_SECONDS, never one per check.
    assert len(heartbeats) <= hours * 3600 / HEARTBEAT_SECONDS + 1
    assert len(own) < checks / 5


def test_deferred_wait_logs_changes_and_a_heartbeat_not_every_check(
    container: str, blob_service: BlobServiceClient, monkeypatch: pytest.MonkeyPatch
):
    clock = SimulatedClock(time.time())
    clock.at(DELIVERY_AT, lambda: deliver_fourth_blob(blob_service, container))
    trigger = BlobArrivalTrigger(
        container=container,
        prefix=PREFIX,
        pattern="*.csv",
        marker="_SUCCESS",
        end_time=clock.now + HOURS * 3600,
        waiting_since=clock.now + HOURS * 3600 - 12 * 3600,  # the last 2 h of a 12 h wait
        poll_interval=POKE_INTERVAL,
        **WINDOW,
    )
    trigger.clock = clock

    async def first_event() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    with captured_log(TRIGGER_LOGGER, monkeypatch) as log:
        event = asyncio.run(first_event())
        http_level = logging.getLogger(HTTP_LOGGER).getEffectiveLevel()
    assert event.payload["status"] == "timeout"
    checks = int(event.payload["message"].split(" after ", 1)[1].split(" ", 1)[0])
    assert_readable_wait(log, TRIGGER_LOGGER, clock.hours, checks, http_level)


def test_poke_wait_logs_changes_and_a_heartbeat_not_every_check(
    container: str, blob_service: BlobServiceClient, monkeypatch: pytest.MonkeyPatch
):
    op = BlobArrivalSensor(
        task_id="wait_for_data",
        container_name=container,
        prefix="incoming/{window_start:%Y-%m-%d}/",
        pattern="*.csv",
        marker="_SUCCESS",
        deferrable=False,
        poke_interval=POKE_INTERVAL,
        timeout=12 * 3600,
        **WINDOW,
    )
    clock = SimulatedClock(time.time())
    clock.at(DELIVERY_AT, lambda: deliver_fourth_blob(blob_service, container))
    op.clock = clock
    context: dict[str, Any] = {"params": {}, "dag_run": None, "logical_date": None}
    checks = 0
    with captured_log(SENSOR_LOGGER, monkeypatch) as log:
        # The poke loop as BaseSensorOperator runs it (its time.sleep is what the clock stands in for).
        while clock.now - clock.start < HOURS * 3600:
            assert not op.poke(context).is_done
            checks += 1
            clock.advance(POKE_INTERVAL)
        http_level = logging.getLogger(HTTP_LOGGER).getEffectiveLevel()
    assert_readable_wait(log, SENSOR_LOGGER, clock.hours, checks, http_level)
