"""BlobArrivalSensor: argument validation, window placeholders, poke / reschedule / defer paths.

The listing is faked at the module function ``list_blobs_sync``; no network.
(File name differs from tests/integration/test_blob_arrival_sensor.py: the test tree has no __init__.py,
so basenames must be unique.)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSensorTimeout, TaskDeferred
from azure.core.exceptions import ServiceRequestError

from azureml_retrain.exceptions import AzureMLRetrainError, ConfigurationError
from azureml_retrain.sensors import blob_arrival as module
from azureml_retrain.sensors.blob_arrival import STATE_KEY, BlobArrivalSensor, format_with_window
from azureml_retrain.triggers.blob_arrival import RESULT_KEYS, BlobArrivalTrigger, BlobInfo, Listing
from azureml_retrain.windows import Window

PREFIX = "incoming/2026-11-26/"


def make_context(**extra: Any) -> dict[str, Any]:
    """A manual run of a daily DAG without a logical date (Airflow 3: data interval None)."""
    dag = DAG(dag_id="sensor_probe", schedule="0 0 * * *", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    context: dict[str, Any] = {
        "dag": dag,
        "dag_run": SimpleNamespace(run_after=datetime(2026, 11, 27, 10, 30, tzinfo=UTC)),
        "logical_date": None,
        "data_interval_start": None,
        "data_interval_end": None,
        "params": {},
    }
    context.update(extra)
    return context


def sensor(**overrides: Any) -> BlobArrivalSensor:
    values: dict[str, Any] = {
        "task_id": "wait_for_data",
        "container_name": "training-data",
        "prefix": "incoming/{window_start:%Y-%m-%d}/",
        "pattern": "*.csv",
        "stable_for": 60,
        "poke_interval": 0.01,
        "timeout": 600,
    }
    values.update(overrides)
    return BlobArrivalSensor(**values)


def old(name: str, size: int = 10, etag: str = "0x1") -> BlobInfo:
    return BlobInfo(name, size, etag, datetime.now(UTC) - timedelta(hours=1))


def fresh(name: str, size: int = 10, etag: str = "0x1") -> BlobInfo:
    return BlobInfo(name, size, etag, datetime.now(UTC))


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Script what successive listings return; returns the list of prefixes that were listed."""

    def install(*steps: list[BlobInfo] | BaseException) -> list[str]:
        queue = list(steps)
        calls: list[str] = []

        def fake(hook: Any, container: str, prefix: str) -> Listing:
            assert container == "training-data"
            calls.append(prefix)
            step = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(step, BaseException):
                raise step
            return Listing(tuple(step))

        monkeypatch.setattr(module, "list_blobs_sync", fake)
        monkeypatch.setattr(BlobArrivalSensor, "hook", None)
        return calls

    return install


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"container_name": ""}, "container_name: must be a non-empty container name"),
        ({"container_name": "   "}, "container_name: must be a non-empty container name"),
        ({"container_name": None}, "container_name: must be a non-empty container name"),
        ({"container_name": "Training_Data"}, "container_name: 'Training_Data' is not a valid container name"),
        ({"pattern": "part-[0-9.csv"}, "pattern: unterminated"),
        ({"pattern": ""}, "pattern: expected a non-empty glob"),
        ({"marker": ""}, "marker: expected a blob name"),
        ({"stable_for": -1}, "stable_for: must be a non-negative number"),
        ({"stable_for": timedelta(seconds=-1)}, "stable_for: must be a non-negative number"),
        ({"min_files": 0}, "min_files: must be an integer >= 1"),
        ({"min_total_bytes": -10}, "min_total_bytes: must be an integer >= 0"),
        ({"wasb_conn_id": ""}, "wasb_conn_id: must be a non-empty connection id"),
        ({"fallback_schedule": timedelta(0)}, "fallback_schedule: a timedelta must be positive"),
        ({"mode": "reschedule"}, "mode='reschedule' needs deferrable=False"),
    ],
)
def test_bad_arguments_are_rejected_with_the_argument_named(overrides: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
        sensor(**overrides)


def test_negative_timeout_and_poke_interval_are_rejected_by_the_base_sensor():
    with pytest.raises(ValueError, match="timeout"):
        sensor(timeout=-1)
    with pytest.raises(ValueError, match="poke_interval"):
        sensor(poke_interval=-1)


def test_templated_values_are_validated_only_once_rendered():
    op = sensor(container_name="{{ params.container }}", pattern="{{ params.glob }}", deferrable=False)
    assert op.container_name == "{{ params.container }}"
    op.container_name, op.pattern = "Not A Container", "*.csv"
    with pytest.raises(ConfigurationError, match="container_name: 'Not A Container'"):
        op.criteria(make_context())


def test_template_fields():
    assert set(BlobArrivalSensor.template_fields) >= {"container_name", "prefix", "pattern", "marker", "wasb_conn_id"}


def test_container_is_a_deprecated_alias_of_container_name():
    values = {"task_id": "wait_for_data", "prefix": "incoming/", "deferrable": False}
    with pytest.warns(AirflowProviderDeprecationWarning, match="container= is deprecated, use container_name="):
        op = BlobArrivalSensor(container="training-data", **values)
    assert op.container_name == "training-data"
    assert not hasattr(op, "container")


def test_container_name_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op = sensor(deferrable=False)
    assert op.container_name == "training-data"


def test_both_names_at_once_are_refused():
    with pytest.raises(ConfigurationError, match="container is the deprecated name of container_name"):
        sensor(container="other-data")
    assert sensor().deferrable is True
    assert sensor(stable_for=timedelta(minutes=2)).stable_for == 120


# --------------------------------------------------------------------------------------------------
# Window placeholders
# --------------------------------------------------------------------------------------------------


def test_placeholders_are_filled_from_the_resolved_window_of_a_manual_run():
    criteria = sensor(marker="_SUCCESS_{window_end:%Y%m%d}").criteria(make_context())
    assert criteria.prefix == PREFIX  # run_after 2026-11-27 10:30, daily schedule -> [11-26, 11-27)
    assert criteria.marker == "_SUCCESS_20261127"
    assert (criteria.window_start, criteria.window_end) == (
        datetime(2026, 11, 26, tzinfo=UTC),
        datetime(2026, 11, 27, tzinfo=UTC),
    )


def test_the_window_param_drives_the_prefix():
    context = make_context(params={"window": "2026-10-01/2026-10-02"})
    assert sensor().criteria(context).prefix == "incoming/2026-10-01/"


def test_unknown_placeholder_is_an_error_naming_the_argument():
    window = Window(datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC), "params")
    assert format_with_window("x/{window_end}/", window, "prefix") == "x/2026-11-27T00:00:00+00:00/"
    with pytest.raises(ConfigurationError, match=r"prefix: unknown placeholder \{windows_start\}"):
        format_with_window("x/{windows_start:%Y}/", window, "prefix")


# --------------------------------------------------------------------------------------------------
# Deferrable (default)
# --------------------------------------------------------------------------------------------------


def test_execute_returns_without_deferring_when_data_is_there_and_stable(listings: Callable[..., list[str]]):
    calls = listings([old(PREFIX + "a.csv", 3), old(PREFIX + "b.csv", 4), old(PREFIX + "readme.txt")])
    result = sensor().execute(make_context())
    assert calls == [PREFIX]
    assert tuple(result) == RESULT_KEYS
    assert [b["name"] for b in result["blobs"]] == [PREFIX + "a.csv", PREFIX + "b.csv"]
    assert result["total_bytes"] == 7
    assert result["window"] == {"start": "2026-11-26T00:00:00+00:00", "end": "2026-11-27T00:00:00+00:00"}


def test_execute_defers_with_an_absolute_deadline_and_what_the_poke_saw(listings: Callable[..., list[str]]):
    listings([fresh(PREFIX + "a.csv")])  # there, but written just now: not stable yet
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor(timeout=600, poke_interval=30, marker="_SUCCESS").execute(make_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, BlobArrivalTrigger)
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert before + 600 <= kwargs["end_time"] <= time.time() + 600
    assert kwargs["poll_interval"] == 30
    assert kwargs["prefix"] == PREFIX
    assert kwargs["marker"] == "_SUCCESS"
    assert kwargs["window_start"] == "2026-11-26T00:00:00+00:00"
    assert kwargs["observation"]["fingerprint"]  # the poke's view carries over
    assert deferred.value.timeout is not None
    assert deferred.value.timeout >= timedelta(seconds=600)  # a backstop behind the trigger's own deadline


def test_execute_defers_when_nothing_is_there(listings: Callable[..., list[str]]):
    listings([])
    with pytest.raises(TaskDeferred):
        sensor().execute(make_context())


def test_a_transient_error_on_the_first_poke_still_defers(listings: Callable[..., list[str]]):
    listings(ServiceRequestError("connection reset"))
    with pytest.raises(TaskDeferred) as deferred:
        sensor().execute(make_context())
    assert deferred.value.trigger.serialize()[1]["observation"] is None


def test_a_config_error_fails_before_any_listing(listings: Callable[..., list[str]]):
    calls = listings([])
    with pytest.raises(ConfigurationError, match="params\\['window'\\]: '2026-11-01' is not a complete interval"):
        sensor().execute(make_context(params={"window": "2026-11-01"}))
    assert calls == []


def test_execute_complete():
    op = sensor()
    result = {key: f"v-{key}" for key in RESULT_KEYS} | {"blobs": []}
    assert op.execute_complete(make_context(), {"status": "success", **result}) == result
    with pytest.raises(AirflowSensorTimeout, match="Timed out waiting"):
        op.execute_complete(make_context(), {"status": "timeout", "message": "Timed out waiting for data"})
    with pytest.raises(AzureMLRetrainError, match="Listing failed"):
        op.execute_complete(make_context(), {"status": "error", "message": "Listing failed: ..."})
    with pytest.raises(AzureMLRetrainError, match="did not receive a valid event"):
        op.execute_complete(make_context(), None)


# --------------------------------------------------------------------------------------------------
# Poke and reschedule modes
# --------------------------------------------------------------------------------------------------


def test_poke_mode_remembers_between_pokes_and_waits_for_the_set_to_settle(listings: Callable[..., list[str]]):
    # Old timestamps on purpose: only the witnessed changes (size 1 -> 2 -> 3) hold it back.
    steps = [[old(PREFIX + "a.csv", n, f"0x{n}")] for n in (1, 2, 3)]
    calls = listings([], *steps)
    result = sensor(deferrable=False, stable_for=0.05, poke_interval=0.02).execute(make_context())
    assert result["blobs"][0]["size"] == 3
    assert len(calls) >= 5  # empty, 1, 2, 3 (change seen), 3 again after stable_for


def test_poke_mode_times_out(listings: Callable[..., list[str]]):
    listings([])
    with pytest.raises(AirflowSensorTimeout):
        sensor(deferrable=False, timeout=0.05, poke_interval=0.01).execute(make_context())


class FakeStateStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def test_reschedule_mode_carries_the_observation_in_the_task_state_store(listings: Callable[..., list[str]]):
    store = FakeStateStore()
    ti = SimpleNamespace(get_first_reschedule_date=lambda context: None)
    context = make_context(ti=ti, task_state_store=store)
    arguments = {"mode": "reschedule", "deferrable": False, "stable_for": 30}
    key = sensor(**arguments).criteria(context).key()
    # An earlier poke saw another state; the blobs' timestamps are old, so only memory can tell.
    store.values[STATE_KEY] = {"fingerprint": "an-earlier-state", "changed_at": None, "criteria": key}
    listings([old(PREFIX + "a.csv", 1, "0x1")], [old(PREFIX + "a.csv", 2, "0x2")])

    with pytest.raises(AirflowRescheduleException):
        sensor(**arguments).execute(context)  # a fresh operator each time, as after every reschedule
    first = dict(store.values[STATE_KEY])
    assert first["changed_at"] is not None
    with pytest.raises(AirflowRescheduleException):
        sensor(**arguments).execute(context)  # size 1 -> 2: the clock restarts
    second = dict(store.values[STATE_KEY])
    assert second["fingerprint"] != first["fingerprint"]
    assert second["changed_at"] >= first["changed_at"]
    with pytest.raises(AirflowRescheduleException):
        sensor(**arguments).execute(context)  # unchanged, but not for 30 s yet: the clock is kept
    assert store.values[STATE_KEY] == second


def test_reschedule_mode_ignores_memory_of_other_criteria(listings: Callable[..., list[str]]):
    store = FakeStateStore()
    store.values[STATE_KEY] = {"fingerprint": "x", "changed_at": datetime.now(UTC).isoformat(), "criteria": "other"}
    ti = SimpleNamespace(get_first_reschedule_date=lambda context: None)
    listings([old(PREFIX + "a.csv")])
    result = sensor(mode="reschedule", deferrable=False).execute(make_context(ti=ti, task_state_store=store))
    assert result["total_bytes"] == 10


def test_reschedule_mode_without_memory_decides_from_last_modified(listings: Callable[..., list[str]]):
    ti = SimpleNamespace(get_first_reschedule_date=lambda context: None)
    listings([old(PREFIX + "a.csv")])
    result = sensor(mode="reschedule", deferrable=False).execute(make_context(ti=ti))
    assert result["blobs"][0]["name"] == PREFIX + "a.csv"
    listings([fresh(PREFIX + "a.csv")])
    with pytest.raises(AirflowRescheduleException):
        sensor(mode="reschedule", deferrable=False).execute(make_context(ti=ti))
