"""The acceptance rules (pure function) and BlobArrivalTrigger, with the async listing faked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.triggers.blob_arrival import (
    RESULT_KEYS,
    ArrivalCriteria,
    BlobArrivalTrigger,
    BlobInfo,
    Listing,
    Observation,
    assess_arrival,
    describe_error,
    glob_to_regex,
    literal_prefix,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = (datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))


def criteria(**overrides: Any) -> ArrivalCriteria:
    values: dict[str, Any] = {
        "container": "training-data",
        "prefix": "incoming/2026-11-26/",
        "window_start": WINDOW[0],
        "window_end": WINDOW[1],
        "stable_for": 60.0,
    }
    values.update(overrides)
    return ArrivalCriteria(**values)


def blob(name: str, size: int = 10, etag: str = "0x1", age: float = 600.0) -> BlobInfo:
    return BlobInfo(name, size, etag, T0 - timedelta(seconds=age))


def listing(*blobs: BlobInfo) -> Listing:
    return Listing(tuple(blobs))


# --------------------------------------------------------------------------------------------------
# assess_arrival
# --------------------------------------------------------------------------------------------------


def test_nothing_listed_waits():
    verdict = assess_arrival(criteria(), listing(), now=T0)
    assert not verdict.ready
    assert "no blobs under 'training-data/incoming/2026-11-26/'" in verdict.reason
    assert verdict.result is None


def test_settled_blobs_are_accepted_with_the_exact_result_shape():
    verdict = assess_arrival(
        criteria(),
        listing(blob("incoming/2026-11-26/b.csv", 5, "0xB"), blob("incoming/2026-11-26/a.csv", 7, "0xA")),
        now=T0,
    )
    assert verdict.ready, verdict.reason
    assert verdict.result == {
        "container": "training-data",
        "prefix": "incoming/2026-11-26/",
        "window": {"start": "2026-11-26T00:00:00+00:00", "end": "2026-11-27T00:00:00+00:00"},
        "blobs": [
            {
                "name": "incoming/2026-11-26/a.csv",
                "etag": "0xA",
                "size": 7,
                "last_modified": "2026-11-27T11:50:00+00:00",
            },
            {
                "name": "incoming/2026-11-26/b.csv",
                "etag": "0xB",
                "size": 5,
                "last_modified": "2026-11-27T11:50:00+00:00",
            },
        ],
        "total_bytes": 12,
        "marker": None,
    }
    assert tuple(verdict.result) == RESULT_KEYS


def test_an_empty_blob_blocks_unless_empty_blobs_are_ignored():
    blobs = listing(blob("incoming/2026-11-26/a.csv"), blob("incoming/2026-11-26/b.csv", size=0))
    verdict = assess_arrival(criteria(), blobs, now=T0)
    assert not verdict.ready
    assert "'incoming/2026-11-26/b.csv' is empty" in verdict.reason
    verdict = assess_arrival(criteria(ignore_empty_blobs=True), blobs, now=T0)
    assert verdict.ready
    assert verdict.result is not None
    assert [b["name"] for b in verdict.result["blobs"]] == ["incoming/2026-11-26/a.csv"]


def test_min_files_and_min_total_bytes():
    blobs = listing(blob("incoming/2026-11-26/a.csv", 10), blob("incoming/2026-11-26/b.csv", 10))
    verdict = assess_arrival(criteria(min_files=3), blobs, now=T0)
    assert not verdict.ready
    assert "fewer than min_files=3" in verdict.reason
    verdict = assess_arrival(criteria(min_total_bytes=21), blobs, now=T0)
    assert "hold 20 bytes, fewer than min_total_bytes=21" in verdict.reason
    assert assess_arrival(criteria(min_files=2, min_total_bytes=20), blobs, now=T0).ready


def test_marker_missing_then_present():
    data = blob("incoming/2026-11-26/a.csv", age=600)
    verdict = assess_arrival(criteria(marker="_SUCCESS"), listing(data), now=T0)
    assert not verdict.ready
    assert "marker 'incoming/2026-11-26/_SUCCESS' is not there yet" in verdict.reason
    marker = blob("incoming/2026-11-26/_SUCCESS", size=0, etag="0xM", age=500)
    verdict = assess_arrival(criteria(marker="_SUCCESS"), listing(data, marker), now=T0)
    assert verdict.ready, verdict.reason
    assert verdict.result is not None
    assert verdict.result["marker"]["name"] == "incoming/2026-11-26/_SUCCESS"
    assert [b["name"] for b in verdict.result["blobs"]] == ["incoming/2026-11-26/a.csv"]  # marker is not data


def test_data_rewritten_after_the_marker_is_not_accepted():
    data = blob("incoming/2026-11-26/a.csv", age=100)
    marker = blob("incoming/2026-11-26/_SUCCESS", size=0, age=500)
    verdict = assess_arrival(criteria(marker="_SUCCESS"), listing(data, marker), now=T0)
    assert not verdict.ready
    assert "modified after the marker" in verdict.reason


def test_pattern_filters_relative_to_the_prefix_and_skips_folders():
    blobs = listing(
        blob("incoming/2026-11-26/part-0.csv"),
        blob("incoming/2026-11-26/part-1.json"),
        blob("incoming/2026-11-26/sub/part-2.csv"),
        blob("incoming/2026-11-26/sub/", size=0),
    )
    verdict = assess_arrival(criteria(pattern="part-*.csv"), blobs, now=T0)
    assert verdict.result is not None
    assert [b["name"] for b in verdict.result["blobs"]] == ["incoming/2026-11-26/part-0.csv"]
    verdict = assess_arrival(criteria(pattern="**/part-*.csv"), blobs, now=T0)
    assert verdict.result is not None
    assert len(verdict.result["blobs"]) == 2
    verdict = assess_arrival(criteria(), blobs, now=T0)  # no pattern: everything but the folder placeholder
    assert verdict.result is not None
    assert len(verdict.result["blobs"]) == 3


def test_recently_modified_blob_is_not_stable_yet_and_says_when_it_will_be():
    verdict = assess_arrival(criteria(stable_for=60), listing(blob("incoming/2026-11-26/a.csv", age=30)), now=T0)
    assert not verdict.ready
    # last_modified has 1 s resolution: 30 s ago + 1 s + 60 s
    assert verdict.ready_at == T0 + timedelta(seconds=31)
    assert "must stay unchanged for 60s" in verdict.reason
    assert assess_arrival(criteria(stable_for=0), listing(blob("incoming/2026-11-26/a.csv", age=30)), now=T0).ready


@pytest.mark.parametrize("change", ["size", "etag", "new blob", "deleted blob"])
def test_a_change_seen_between_checks_resets_the_stability_clock(change: str):
    before = [blob("incoming/2026-11-26/a.csv", 10, "0x1"), blob("incoming/2026-11-26/b.csv", 10, "0x2")]
    after = {
        "size": [replace(before[0], size=11), before[1]],
        "etag": [replace(before[0], etag="0x9"), before[1]],
        "new blob": [*before, blob("incoming/2026-11-26/c.csv")],
        "deleted blob": [before[0]],  # no last_modified reveals a deletion: only memory does
    }[change]
    first = assess_arrival(criteria(), listing(*before), now=T0)
    assert first.ready  # old timestamps alone would say "settled"...
    second = assess_arrival(criteria(), listing(*after), now=T0 + timedelta(seconds=5), previous=first.observation)
    assert not second.ready  # ...but the set changed since the previous check
    assert second.observation.changed_at == T0 + timedelta(seconds=5)
    assert second.ready_at == T0 + timedelta(seconds=65)
    still = assess_arrival(criteria(), listing(*after), now=T0 + timedelta(seconds=64), previous=second.observation)
    assert not still.ready
    assert still.observation.changed_at == T0 + timedelta(seconds=5)  # unchanged set keeps its clock
    done = assess_arrival(criteria(), listing(*after), now=T0 + timedelta(seconds=65), previous=still.observation)
    assert done.ready


def test_observation_round_trips_through_json():
    observation = Observation("abc", T0)
    assert Observation.from_json(observation.to_json()) == observation
    assert Observation.from_json(Observation("abc").to_json()) == Observation("abc")
    assert Observation.from_json(None) is None
    assert Observation.from_json({"something": "else"}) is None


def test_container_not_found_is_a_waiting_state():
    verdict = assess_arrival(criteria(), Listing((), container_exists=False), now=T0)
    assert not verdict.ready
    assert "does not exist (yet)" in verdict.reason


# --------------------------------------------------------------------------------------------------
# Criteria, globs and listing prefix
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "marker", "expected"),
    [
        (None, None, "incoming/2026-11-26/"),
        ("part-*.csv", None, "incoming/2026-11-26/part-"),
        ("part-[0-9].csv", "_SUCCESS", "incoming/2026-11-26/"),
        ("part-*.csv", "part-_SUCCESS", "incoming/2026-11-26/part-"),
        ("data/**/x.csv", None, "incoming/2026-11-26/data/"),
    ],
)
def test_list_prefix_is_the_narrowest_literal_prefix(pattern: str | None, marker: str | None, expected: str):
    assert criteria(pattern=pattern, marker=marker).list_prefix == expected


def test_globs():
    assert glob_to_regex("part-*.csv").match("part-001.csv")
    assert not glob_to_regex("part-*.csv").match("part-0/x.csv")
    assert glob_to_regex("**/*.csv").match("x.csv")
    assert glob_to_regex("**/*.csv").match("a/b/x.csv")
    assert glob_to_regex("p?.csv").match("p1.csv")
    assert glob_to_regex("[!a]*.csv").match("b.csv")
    assert not glob_to_regex("[!a]*.csv").match("a.csv")
    assert glob_to_regex("a+b(1).csv").match("a+b(1).csv")  # regex metacharacters are literal
    assert literal_prefix("day=*/part-?.csv") == "day="


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"container": ""}, "container: must be a non-empty"),
        ({"container": "Bad_Name"}, "container: 'Bad_Name' is not a valid container name"),
        ({"container": "ab"}, "container: 'ab' is not a valid"),
        ({"pattern": "part-[0-9.csv"}, "pattern: unterminated '\\[' at position 5"),
        ({"marker": "_SUCC*"}, "marker: expected a literal blob name"),
        ({"min_files": 0}, "min_files: must be an integer >= 1"),
        ({"min_total_bytes": -1}, "min_total_bytes: must be an integer >= 0"),
        ({"stable_for": -5}, "stable_for: must be a non-negative number"),
        ({"prefix": "", "pattern": "*.csv"}, "prefix: must not be empty"),
        ({"window_end": WINDOW[0]}, "window_end must be after window_start"),
    ],
)
def test_criteria_validation_names_the_argument(overrides: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message):
        criteria(**overrides)


def test_describe_error_removes_keys_and_signatures():
    text = describe_error(ValueError("GET https://a/c?sv=2025&sig=abc%3D&se=x failed; AccountKey=Zm9v=="))
    assert "abc" not in text
    assert "Zm9v" not in text
    assert "sig=***" in text
    assert "AccountKey=***" in text


# --------------------------------------------------------------------------------------------------
# BlobArrivalTrigger
# --------------------------------------------------------------------------------------------------


def trigger(**overrides: Any) -> BlobArrivalTrigger:
    values: dict[str, Any] = {
        "container": "training-data",
        "prefix": "incoming/2026-11-26/",
        "window_start": "2026-11-26T00:00:00+00:00",
        "window_end": "2026-11-27T00:00:00+00:00",
        "end_time": time.time() + 30,
        "pattern": "*.csv",
        "stable_for": 0.0,
        "poll_interval": 0.01,
    }
    values.update(overrides)
    return BlobArrivalTrigger(**values)


def test_serialize_round_trip():
    original = trigger(
        marker="_SUCCESS", min_files=2, observation=Observation("f", T0).to_json(), waiting_since=T0.timestamp()
    )
    classpath, kwargs = original.serialize()
    assert classpath == "azureml_retrain.triggers.blob_arrival.BlobArrivalTrigger"
    assert kwargs == {
        "container": "training-data",
        "prefix": "incoming/2026-11-26/",
        "window_start": "2026-11-26T00:00:00+00:00",
        "window_end": "2026-11-27T00:00:00+00:00",
        "pattern": "*.csv",
        "marker": "_SUCCESS",
        "min_files": 2,
        "min_total_bytes": 1,
        "stable_for": 0.0,
        "ignore_empty_blobs": False,
        "end_time": original.end_time,
        "wasb_conn_id": "wasb_default",
        "poll_interval": 0.01,
        "observation": {"fingerprint": "f", "changed_at": "2026-11-27T12:00:00+00:00"},
        "finish_task": False,
        "waiting_since": T0.timestamp(),
    }
    rebuilt = BlobArrivalTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.criteria == original.criteria


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"poll_interval": 0}, "poll_interval: must be a positive"),
        ({"end_time": "soon"}, "end_time: must be seconds"),
        ({"waiting_since": "an hour ago"}, "waiting_since: must be seconds"),
    ],
)
def test_trigger_validation(overrides: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message):
        trigger(**overrides)


class FakeAsyncClient:
    """Stands in for the aio BlobServiceClient: each list_blobs call plays the next scripted step."""

    def __init__(self, steps: Sequence[Sequence[BlobInfo] | BaseException]) -> None:
        self.steps = list(steps)
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    def get_container_client(self, container: str) -> Any:
        def list_blobs(name_starts_with: str, raw_response_hook: Callable[[Any], None]) -> AsyncIterator[Any]:
            self.calls.append((container, name_starts_with))
            step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

            async def items() -> AsyncIterator[Any]:
                if isinstance(step, BaseException):
                    raise step
                raw_response_hook(SimpleNamespace(http_response=SimpleNamespace(headers={})))
                for b in step:
                    yield SimpleNamespace(name=b.name, size=b.size, etag=b.etag, last_modified=b.last_modified)

            return items()

        return SimpleNamespace(list_blobs=list_blobs)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeAsyncClient]:
    def install(*steps: Sequence[BlobInfo] | BaseException) -> FakeAsyncClient:
        client = FakeAsyncClient(steps)

        async def get_async_conn(self: WasbAsyncHook) -> FakeAsyncClient:
            return client

        monkeypatch.setattr(WasbAsyncHook, "get_async_conn", get_async_conn)
        return client

    return install


def first_event(t: BlobArrivalTrigger, timeout: float = 5.0) -> TriggerEvent:
    async def run() -> TriggerEvent:
        events = []
        async for event in t.run():
            events.append(event)
        assert len(events) == 1  # exactly one event, then the generator ends
        return events[0]

    return asyncio.run(asyncio.wait_for(run(), timeout))


def recent(name: str, size: int = 10, etag: str = "0x1") -> BlobInfo:
    return BlobInfo(name, size, etag, datetime.now(UTC) - timedelta(seconds=5))


def test_run_succeeds_once_data_arrives(fake_client: Callable[..., FakeAsyncClient]):
    data = [recent("incoming/2026-11-26/a.csv"), recent("incoming/2026-11-26/notes.txt")]
    client = fake_client([], [], data)
    event = first_event(trigger())
    assert event.payload["status"] == "success"
    assert [b["name"] for b in event.payload["blobs"]] == ["incoming/2026-11-26/a.csv"]
    assert set(event.payload) == {"status", *RESULT_KEYS}
    assert client.calls == [("training-data", "incoming/2026-11-26/")] * 3  # narrow prefix on every check
    assert client.closed


def test_finish_task_ends_the_task_with_the_accepted_result(fake_client: Callable[..., FakeAsyncClient]):
    data = [recent("incoming/2026-11-26/a.csv"), recent("incoming/2026-11-26/notes.txt")]
    fake_client([], data)
    event = first_event(trigger(finish_task=True))
    assert isinstance(event, TaskSuccessEvent)
    result = event.xcoms["return_value"]
    assert set(result) == set(RESULT_KEYS)
    assert [b["name"] for b in result["blobs"]] == ["incoming/2026-11-26/a.csv"]
    assert result["window"] == {"start": "2026-11-26T00:00:00+00:00", "end": "2026-11-27T00:00:00+00:00"}


def test_finish_task_still_resumes_the_worker_on_timeout(fake_client: Callable[..., FakeAsyncClient]):
    fake_client([])
    event = first_event(trigger(finish_task=True, end_time=time.time() + 0.05))
    assert not isinstance(event, TaskSuccessEvent)
    assert event.payload["status"] == "timeout"


def test_run_waits_while_a_blob_keeps_changing(fake_client: Callable[..., FakeAsyncClient]):
    # Old timestamps (they alone would say "settled"), so only the witnessed changes hold the trigger
    # back; the sensor's poke saw yet another state before deferring.
    old = datetime.now(UTC) - timedelta(hours=1)
    steps = [[BlobInfo("incoming/2026-11-26/a.csv", n, f"0x{n}", old)] for n in (1, 2, 3)]
    client = fake_client(*steps)
    event = first_event(trigger(stable_for=0.05, observation={"fingerprint": "seen-by-the-poke"}))
    assert event.payload["status"] == "success"
    assert event.payload["blobs"][0]["size"] == 3  # only the final, unchanged version is accepted
    assert len(client.calls) >= 4


def test_observation_from_the_sensor_carries_the_clock_into_the_trigger(
    fake_client: Callable[..., FakeAsyncClient],
):
    old = datetime.now(UTC) - timedelta(hours=1)
    data = [BlobInfo("incoming/2026-11-26/a.csv", 5, "0x5", old)]
    seen = assess_arrival(trigger().criteria, Listing(tuple(data)), now=datetime.now(UTC)).observation
    fake_client(data)
    # Same fingerprint, no change witnessed: the trigger accepts on its first check.
    event = first_event(trigger(stable_for=30, observation=seen.to_json()))
    assert event.payload["status"] == "success"
    # A change witnessed just now by the sensor's poke is not forgotten by the trigger.
    just_changed = Observation(seen.fingerprint, datetime.now(UTC)).to_json()
    event = first_event(trigger(stable_for=30, observation=just_changed, end_time=time.time() + 0.2))
    assert event.payload["status"] == "timeout"


def test_deadline_in_the_past_times_out_without_listing(fake_client: Callable[..., FakeAsyncClient]):
    client = fake_client([])
    event = first_event(trigger(end_time=time.time() - 1))
    assert event.payload["status"] == "timeout"
    assert "Timed out waiting for data in training-data/incoming/2026-11-26/" in event.payload["message"]
    assert client.calls == []


def test_timeout_message_carries_the_last_reason(fake_client: Callable[..., FakeAsyncClient]):
    fake_client([recent("incoming/2026-11-26/a.csv")])
    # Long enough for a first check on any machine: the message carries that check's reason.
    event = first_event(trigger(marker="_SUCCESS", end_time=time.time() + 1.0))
    assert event.payload["status"] == "timeout"
    assert "marker 'incoming/2026-11-26/_SUCCESS' is not there yet" in event.payload["message"]


def test_transient_errors_are_retried(fake_client: Callable[..., FakeAsyncClient]):
    throttled = HttpResponseError(message="Server busy")
    throttled.status_code = 503
    client = fake_client(ServiceRequestError("connection reset"), throttled, [recent("incoming/2026-11-26/a.csv")])
    event = first_event(trigger())
    assert event.payload["status"] == "success"
    assert len(client.calls) == 3


def test_a_non_retryable_error_is_one_error_event(fake_client: Callable[..., FakeAsyncClient]):
    client = fake_client(ClientAuthenticationError("Server failed to authenticate the request. sig=s3cr3t"))
    event = first_event(trigger())
    assert event.payload["status"] == "error"
    assert "ClientAuthenticationError" in event.payload["message"]
    assert "s3cr3t" not in event.payload["message"]
    assert client.closed
