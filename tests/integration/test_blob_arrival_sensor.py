"""BlobArrivalSensor and BlobArrivalTrigger against a real Azurite, through the Azure provider's hooks.

Covers poke mode, reschedule mode, the deferrable path with the trigger's ``run()`` driven for real
(WasbAsyncHook against Azurite), and one ``dag.test()`` of a manual run without a logical date.
Azurite reports ``Last-Modified``/``Date`` with 1-second resolution, so "stable for 1 s" takes 2-3 s.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred

from azureml_retrain.sensors.blob_arrival import BlobArrivalSensor, list_blobs_sync
from azureml_retrain.triggers import blob_arrival as trigger_module
from azureml_retrain.triggers.blob_arrival import RESULT_KEYS, BlobArrivalTrigger, Listing
from devtools.services import AZURITE_KEY
from support.dags import register_dag
from support.retrain import run_trigger

pytestmark = pytest.mark.integration

PREFIX = "incoming/2026-11-26/"
WINDOW = {"window_start": "2026-11-26T00:00:00+00:00", "window_end": "2026-11-27T00:00:00+00:00"}


@pytest.fixture
def hook(azurite: str) -> WasbHook:
    return WasbHook(wasb_conn_id="wasb_default")


@pytest.fixture
def container(hook: WasbHook) -> Iterator[str]:
    name = f"arrival-{uuid.uuid4().hex[:12]}"
    hook.create_container(name)
    yield name
    hook.delete_container(name)


def upload(hook: WasbHook, container: str, name: str, data: str | bytes) -> None:
    hook.blob_service_client.get_blob_client(container, name).upload_blob(data, overwrite=True)


def etag_of(hook: WasbHook, container: str, name: str) -> str:
    return str(hook.blob_service_client.get_blob_client(container, name).get_blob_properties().etag).strip('"')


def later(delay: float, action: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def sensor(container: str, **overrides: Any) -> BlobArrivalSensor:
    values: dict[str, Any] = {
        "task_id": "wait_for_data",
        "container_name": container,
        "prefix": "incoming/{window_start:%Y-%m-%d}/",
        "pattern": "*.csv",
        "stable_for": 1,
        "poke_interval": 0.2,
        "timeout": 20,
        **WINDOW,
    }
    values.update(overrides)
    return BlobArrivalSensor(**values)


def context(**extra: Any) -> dict[str, Any]:
    return {"params": {}, "dag_run": None, "logical_date": None, **extra}


def assert_no_secrets(value: Any) -> None:
    text = json.dumps(value)
    for secret in (AZURITE_KEY, "AccountKey", "DefaultEndpointsProtocol", "sig="):
        assert secret not in text


def test_poke_mode_accepts_data_uploaded_late(hook: WasbHook, container: str, monkeypatch: pytest.MonkeyPatch):
    from azureml_retrain.sensors import blob_arrival as sensor_module

    real_list = sensor_module.list_blobs_sync
    polls: list[int] = []
    delivered: list[float] = []

    def deliver_after_the_first_poke(*args: Any) -> Listing:
        """The data lands once the sensor has seen the window empty, however long it took to start."""
        listing = real_list(*args)
        polls.append(len(listing.blobs))
        if len(polls) == 1:
            delivered.append(time.monotonic())
            upload(hook, container, PREFIX + "part-0.csv", "a,b\n1,2\n")
            upload(hook, container, PREFIX + "part-1.csv", "a,b\n3,4\n")
            upload(hook, container, PREFIX + "notes.txt", "not data")
        return listing

    monkeypatch.setattr(sensor_module, "list_blobs_sync", deliver_after_the_first_poke)
    result = sensor(container, deferrable=False, min_files=2).execute(context())
    assert polls[0] == 0  # waited for the upload ...
    assert time.monotonic() - delivered[0] >= 0.9  # ... then for it to settle (stable_for 1 s)
    assert result["container"] == container
    assert result["prefix"] == PREFIX
    assert result["window"] == {"start": WINDOW["window_start"], "end": WINDOW["window_end"]}
    assert [b["name"] for b in result["blobs"]] == [PREFIX + "part-0.csv", PREFIX + "part-1.csv"]
    assert [b["etag"].strip('"') for b in result["blobs"]] == [
        etag_of(hook, container, b["name"]) for b in result["blobs"]
    ]
    assert result["total_bytes"] == 16
    assert result["marker"] is None
    assert_no_secrets(result)


def test_deferrable_trigger_does_not_accept_a_blob_that_is_still_growing(
    hook: WasbHook, container: str, monkeypatch: pytest.MonkeyPatch
):
    name = PREFIX + "growing.csv"
    upload(hook, container, name, "v0")
    rewrites: list[float] = []
    real_list = trigger_module.list_blobs_async

    async def rewritten_after_each_listing(*args: Any) -> Listing:
        """A writer still at work: each of the trigger's first 8 checks is followed by new content, so
        every check sees another change, however far apart the checks are."""
        listing = await real_list(*args)
        if len(rewrites) < 8:
            upload(hook, container, name, "x" * (len(rewrites) + 11))
            rewrites.append(time.time())
        return listing

    with pytest.raises(TaskDeferred) as deferred:
        sensor(container, poke_interval=0.2).execute(context())
    monkeypatch.setattr(trigger_module, "list_blobs_async", rewritten_after_each_listing)
    trigger = deferred.value.trigger
    assert isinstance(trigger, BlobArrivalTrigger)
    assert trigger.finish_task  # accepted data ends the task in the triggerer
    event = run_trigger(BlobArrivalTrigger(**trigger.serialize()[1]))  # as the triggerer rebuilds it
    accepted_at = time.time()
    assert event["task_instance_state"] == "success", event
    result = event["xcoms"]["return_value"]
    assert len(rewrites) == 8
    assert accepted_at >= rewrites[-1] + 0.9  # only after the writer stopped, plus stable_for (1 s)
    assert result["blobs"][0]["size"] == 18  # the final content
    assert result["blobs"][0]["etag"].strip('"') == etag_of(hook, container, name)
    assert set(result) == set(RESULT_KEYS)
    assert_no_secrets(result)
    # `airflow dags test` resumes the task with the event's bare payload: the sensor checks once more.
    assert sensor(container).execute_complete(context(), "success") == result


def test_reschedule_mode_requires_the_marker(hook: WasbHook, container: str):
    upload(hook, container, PREFIX + "part-0.csv", "a,b\n1,2\n")
    ti_context = context(ti=type("TI", (), {"get_first_reschedule_date": lambda self, ctx: None})())

    def poke_until_done(deadline: float) -> tuple[dict[str, Any] | None, int]:
        reschedules = 0
        while time.monotonic() < deadline:
            try:  # a fresh operator each time, as after every reschedule
                return sensor(container, mode="reschedule", deferrable=False, marker="_SUCCESS").execute(
                    ti_context
                ), reschedules
            except AirflowRescheduleException:
                reschedules += 1
                time.sleep(0.2)
        return None, reschedules

    result, _ = poke_until_done(time.monotonic() + 2.5)
    assert result is None  # data settled, but no marker: never accepted
    upload(hook, container, PREFIX + "_SUCCESS", b"")
    result, reschedules = poke_until_done(time.monotonic() + 60)
    assert result is not None
    assert reschedules >= 1  # the fresh marker had to settle too
    assert result["marker"]["name"] == PREFIX + "_SUCCESS"
    assert [b["name"] for b in result["blobs"]] == [PREFIX + "part-0.csv"]


def test_only_the_window_prefix_is_listed(hook: WasbHook, container: str, monkeypatch: pytest.MonkeyPatch):
    unrelated = [f"incoming/2026-11-{day:02d}/part-{i}.csv" for day in (24, 25, 27) for i in range(100)]
    unrelated += [f"archive/{i}.csv" for i in range(50)]
    client = hook.blob_service_client.get_container_client(container)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: client.upload_blob(n, b"x", overwrite=True), unrelated))
    for i in range(3):
        upload(hook, container, f"{PREFIX}part-{i}.csv", "a,b\n1,2\n")
    upload(hook, container, PREFIX + "other.txt", "z")

    op = sensor(container, pattern="part-*.csv", stable_for=0)
    criteria = op.criteria(context())
    assert criteria.list_prefix == PREFIX + "part-"
    listing = list_blobs_sync(hook, container, criteria.list_prefix)
    assert (len(listing.blobs), listing.requests) == (3, 1)  # 350 blobs elsewhere: not enumerated

    listed: list[int] = []
    real = trigger_module.list_blobs_async

    async def spy(*args: Any) -> Listing:
        result = await real(*args)
        listed.append(len(result.blobs))
        return result

    monkeypatch.setattr(trigger_module, "list_blobs_async", spy)
    trigger = BlobArrivalTrigger.from_criteria(
        criteria, end_time=time.time() + 60, wasb_conn_id="wasb_default", poll_interval=0.2, observation=None
    )
    event = run_trigger(trigger)
    assert event["status"] == "success"
    assert len(event["blobs"]) == 3
    assert listed
    assert set(listed) == {3}  # every check enumerated only the 3 in-window blobs


def test_trigger_times_out_at_its_absolute_deadline(container: str):
    # Long enough for a first check on any machine (its reason is in the message).
    end_time = time.time() + 1.5
    trigger = BlobArrivalTrigger(container=container, prefix=PREFIX, end_time=end_time, poll_interval=0.1, **WINDOW)
    event = run_trigger(trigger)
    assert event["status"] == "timeout"
    # At the deadline, give or take a poll (generous: a deadline taken as relative would be later
    # still, one that never fires ends in run_trigger's own 60 s timeout).
    assert end_time <= time.time() < end_time + 10
    assert "no blobs under" in event["message"]


def test_missing_container_is_waited_for_not_fatal(azurite: str):
    trigger = BlobArrivalTrigger(
        container=f"missing-{uuid.uuid4().hex[:8]}",
        prefix=PREFIX,
        end_time=time.time() + 1.5,  # long enough for a first check on any machine
        poll_interval=0.1,
        **WINDOW,
    )
    event = run_trigger(trigger)
    assert event["status"] == "timeout"
    assert "does not exist (yet)" in event["message"]


def test_dag_test_manual_run_without_logical_date(
    hook: WasbHook, container: str, airflow_db: None, monkeypatch: pytest.MonkeyPatch
):
    """A manual run (logical_date None) of a daily DAG: the window falls back to the latest cron interval."""
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    run_after = datetime.now(UTC).replace(microsecond=0)
    day = (run_after - timedelta(days=1)).strftime("%Y-%m-%d")  # window [yesterday 00:00, today 00:00)
    dag_id = f"blob_arrival_it_{uuid.uuid4().hex[:8]}"
    with DAG(
        dag_id=dag_id, schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False
    ) as dag:
        BlobArrivalSensor(
            task_id="wait_for_data",
            container_name=container,
            prefix="incoming/{window_start:%Y-%m-%d}/",
            pattern="*.csv",
            stable_for=1,
            poke_interval=0.3,
            timeout=30,
        )
    register_dag(dag)
    # Upload only once the sensor's first poke has found nothing (task start-up time varies), so the
    # run has to defer and dag.test() runs the trigger inline.
    from azureml_retrain.sensors import blob_arrival as sensor_module

    real_list = sensor_module.list_blobs_sync
    polls: list[int] = []

    def first_poke_then_deliver(*args: Any) -> Listing:
        listing = real_list(*args)
        polls.append(len(listing.blobs))
        if len(polls) == 1:
            later(0.5, lambda: upload(hook, container, f"incoming/{day}/part-0.csv", "a,b\n1,2\n"))
        return listing

    monkeypatch.setattr(sensor_module, "list_blobs_sync", first_poke_then_deliver)
    dag_run = dag.test(run_after=run_after, logical_date=None)
    # One synchronous poke found nothing and the trigger did the waiting. The trigger ended the task,
    # which dag.test() cannot pass on: it resumes the task, whose one more check returns the data.
    assert polls == [0, 1]
    assert dag_run.state == DagRunState.SUCCESS
    assert dag_run.logical_date is None
    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.task_id == "wait_for_data", XComModel.key == "return_value"
            )
        ).one()
        value = XComModel.deserialize_value(row)
    assert [b["name"] for b in value["blobs"]] == [f"incoming/{day}/part-0.csv"]
    assert value["window"]["end"].startswith(run_after.strftime("%Y-%m-%d"))
    assert_no_secrets(value)
