from __future__ import annotations

import asyncio
import time

import pytest
from airflow.triggers.base import TaskSuccessEvent

from azureml_retrain.hooks.base import RetryPolicy
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from azureml_retrain.triggers.bes_job import BesJobTrigger, next_poll_interval
from support.fake_transport import FakeTransport, Reply

API = "https://ussouthcentral.services.azureml.net/workspaces/ws1/services/train1"
JOB = "0123456789abcdef0123456789abcdef"


def make_trigger(*script, end_time: float | None = None, **kwargs) -> tuple[BesJobTrigger, FakeTransport]:
    trigger = BesJobTrigger(
        azureml_conn_id="azureml_training",
        job_id=JOB,
        end_time=time.time() + 30 if end_time is None else end_time,
        poll_interval=0.01,
        max_poll_interval=0.02,
        **kwargs,
    )
    hook = AzureMLWebServiceHook.for_endpoint(API, "k" * 20, retry_policy=RetryPolicy(max_attempts=1))
    transport = FakeTransport(*script)
    hook.session.mount("https://", transport)
    trigger._hook = lambda: hook  # type: ignore[method-assign]
    return trigger, transport


def first_event(trigger: BesJobTrigger):
    async def run():
        return await trigger.run().__anext__()

    return asyncio.run(run()).payload


def job(code: str, details: str | None = None) -> Reply:
    return Reply(200, {"StatusCode": code, "Results": None, "Details": details})


def test_serialize_round_trip():
    trigger = BesJobTrigger(azureml_conn_id="c", job_id=JOB, end_time=123.5, poll_interval=2, last_status="Running")
    classpath, kwargs = trigger.serialize()
    assert classpath == "azureml_retrain.triggers.bes_job.BesJobTrigger"
    clone = BesJobTrigger(**kwargs)
    assert clone.serialize() == (classpath, kwargs)


def test_polls_until_terminal():
    trigger, transport = make_trigger(job("NotStarted"), job("Running"), job("Running"), job("Failed", "bad label"))
    event = first_event(trigger)
    assert event == {"status": "terminal", "job_id": JOB, "job_status": "Failed", "details": "bad label", "polls": 4}


def test_transient_errors_do_not_cancel_the_job():
    trigger, transport = make_trigger(Reply(503), Reply(500), job("Finished"))
    assert first_event(trigger)["job_status"] == "Finished"
    assert [r.method for r in transport.requests] == ["GET", "GET", "GET"]


def test_non_transient_error_is_reported_without_cancelling():
    trigger, transport = make_trigger(Reply(401, {"error": {"code": "Unauthorized", "message": "Invalid credentials"}}))
    event = first_event(trigger)
    assert event["status"] == "error" and "HTTP 401" in event["message"]
    assert event["retryable"] is False  # the same key is refused on every try
    assert [r.method for r in transport.requests] == ["GET"]


def test_a_job_gone_is_worth_a_retry_which_submits_a_new_one():
    trigger, _ = make_trigger(Reply(404, {"error": {"code": "NotFound", "message": "Job not found"}}))
    event = first_event(trigger)
    assert (event["status"], event["retryable"]) == ("error", True)


def test_deadline_cancels_the_job_and_reports_timeout():
    trigger, transport = make_trigger(job("Running"), Reply(200), end_time=time.time() - 1)
    event = first_event(trigger)
    assert event["status"] == "timeout"
    assert [r.method for r in transport.requests] == ["GET", "DELETE"]


@pytest.mark.parametrize(("cancel_on_kill", "methods"), [(True, ["DELETE"]), (False, [])])
def test_on_kill(cancel_on_kill, methods):
    trigger, transport = make_trigger(Reply(200), cancel_on_kill=cancel_on_kill)
    asyncio.run(trigger.on_kill())
    assert [r.method for r in transport.requests] == methods


def test_poll_interval_doubles_and_is_capped():
    intervals = [1.0]
    for _ in range(10):
        intervals.append(next_poll_interval(intervals[-1], 60.0))
    assert intervals[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(intervals) == 60.0


def finished(*outputs: str) -> Reply:
    results = {
        name: {
            "BaseLocation": "https://acct.blob.core.windows.net/",
            "RelativeLocation": f"/models/{name}.ilearner",
            "SasBlobToken": "?sv=2019&sig=secret%3D",
        }
        for name in outputs
    }
    return Reply(200, {"StatusCode": "Finished", "Results": results, "Details": None})


def test_finish_task_ends_the_task_in_the_triggerer_with_the_result():
    trigger, _ = make_trigger(
        job("Running"),
        finished("output1", "output2"),
        finish_task=True,
        expected_outputs=["output1", "output2"],
        submitted_at="2026-11-27T10:00:00+00:00",
    )

    async def run():
        return await trigger.run().__anext__()

    event = asyncio.run(run())
    assert isinstance(event, TaskSuccessEvent)
    result = event.xcoms["return_value"]
    assert result["job_id"] == JOB and result["status"] == "Finished"
    assert result["submitted_at"] == "2026-11-27T10:00:00+00:00" and result["duration_seconds"] > 0
    assert result["outputs"]["output1"] == {
        "base_location": "https://acct.blob.core.windows.net/",
        "relative_location": "models/output1.ilearner",
        "container": "models",
        "blob_name": "output1.ilearner",
    }
    assert "sig" not in repr(event.xcoms)  # locations only, never the SAS token


@pytest.mark.parametrize(
    ("reply", "kwargs"),
    [
        (finished("output1"), {"finish_task": True, "expected_outputs": ["output1", "output2"]}),  # output missing
        (job("Failed", "bad label"), {"finish_task": True, "expected_outputs": ["output1"]}),
        (job("Cancelled"), {"finish_task": True, "expected_outputs": ["output1"]}),
        (finished("output1"), {"expected_outputs": ["output1"]}),  # finish_task off (older serialized triggers)
    ],
)
def test_other_ends_resume_the_task_on_a_worker(reply, kwargs):
    trigger, _ = make_trigger(reply, **kwargs)
    event = first_event(trigger)
    assert event["status"] == "terminal" and event["job_id"] == JOB


class SimulatedTime:
    """A clock the trigger's sleeps advance: hours of polling run in milliseconds."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class RecordingLog:
    def __init__(self, time_source: SimulatedTime) -> None:
        self.time = time_source
        self.lines: list[tuple[float, str]] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append((self.time.now, message % args))

    warning = error = info


def test_a_long_running_job_logs_its_progress_at_a_bounded_rate():
    simulated = SimulatedTime()
    polls = 1 + 3 + 130  # NotStarted, Running until well past two hours at 60 s, then Finished
    script = [job("NotStarted")] + [job("Running")] * (polls - 2) + [job("Finished")]
    trigger, transport = make_trigger(*script, end_time=simulated.now + 6 * 3600)
    trigger.poll_interval, trigger.max_poll_interval = 1.0, 60.0
    trigger._clock, trigger._sleep = simulated.clock, simulated.sleep
    log = RecordingLog(simulated)
    trigger._log = log

    assert first_event(trigger)["job_status"] == "Finished"

    progress = [(at, line) for at, line in log.lines if line.startswith(f"BES job {JOB}: ")]
    assert len(transport.requests) == polls
    times = [at for at, _ in progress]
    gaps = [b - a for a, b in zip([1_000_000.0, *times], times, strict=False)]
    assert max(gaps) <= 300  # never silent for more than five minutes
    assert len(progress) <= polls // 4  # nowhere near one line per poll at the 60 s cap
    changes = [line.split(": ", 1)[1].split(",")[0] for _, line in progress if " -> " in line]
    assert changes == ["? -> NotStarted", "NotStarted -> Running", "Running -> Finished"]
    assert all(line.endswith("see https://services.azureml.net/") for _, line in progress)  # the Studio portal
    assert "next check in 1m 00s" in progress[-2][1] and "no further checks" in progress[-1][1]


class StubTaskInstance:
    dag_id, run_id, task_id, map_index = "retrain", "manual__1", "train", -1


@pytest.mark.parametrize(
    ("deferred_count", "methods"),
    [
        (0, ["DELETE"]),  # a user marked or cleared the task: stop its job
        (1, []),  # still deferred: the trigger moved to another triggerer, which follows the job
        (RuntimeError("supervisor unreachable"), ["DELETE"]),  # unknown: as a user kill
    ],
)
def test_on_kill_cancels_only_when_the_task_is_no_longer_deferred(monkeypatch, deferred_count, methods):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    asked = []

    def get_ti_count(**criteria):
        asked.append(criteria)
        if isinstance(deferred_count, Exception):
            raise deferred_count
        return deferred_count

    monkeypatch.setattr(RuntimeTaskInstance, "get_ti_count", staticmethod(get_ti_count))
    trigger, transport = make_trigger(Reply(200))
    trigger.task_instance = StubTaskInstance()  # type: ignore[assignment]
    asyncio.run(trigger.on_kill())
    assert [r.method for r in transport.requests] == methods
    assert asked == [
        {"dag_id": "retrain", "run_ids": ["manual__1"], "task_ids": ["train"], "map_index": -1, "states": ["deferred"]}
    ]


def test_on_kill_finishes_when_airflow_cancels_it_again(monkeypatch):
    """Airflow 3.3 cancels a trigger again at each sync with its supervisor until it has ended."""
    import threading

    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from azureml_retrain.triggers import bes_job

    answer = threading.Event()
    monkeypatch.setattr(RuntimeTaskInstance, "get_ti_count", staticmethod(lambda **_: answer.wait(5) and 0))
    trigger, transport = make_trigger(Reply(200))
    trigger.task_instance = StubTaskInstance()  # type: ignore[assignment]

    async def scenario() -> None:
        kill = asyncio.ensure_future(trigger.on_kill())
        while not bes_job._KILLS:
            await asyncio.sleep(0)
        kill.cancel()
        with pytest.raises(asyncio.CancelledError):
            await kill
        answer.set()
        await asyncio.gather(*bes_job._KILLS)

    asyncio.run(scenario())
    assert [r.method for r in transport.requests] == ["DELETE"]
