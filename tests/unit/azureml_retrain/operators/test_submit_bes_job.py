from __future__ import annotations

import json
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from azureml_retrain.exceptions import BesJobFailedError, BesJobInputError, BesJobRejectedError, ConfigurationError
from azureml_retrain.hooks.base import RetryPolicy
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from azureml_retrain.operators.submit_bes_job import JOB_STATE_KEY, SubmitBesJobOperator
from azureml_retrain.triggers.bes_job import BesJobTrigger
from support.airflow_context import DictStateStore, make_context
from support.fake_transport import FakeTransport, Reply

API = "https://ussouthcentral.services.azureml.net/workspaces/ws1/services/train1"
KEY = "training-endpoint-api-key-0001"
JOB = "0123456789abcdef0123456789abcdef"
SAS = "?sv=2020-10-02&sr=b&sig=SECRETSIGNATURE123&sp=r"


def status(code: str, details: str | None = None) -> Reply:
    results = None
    if code == "Finished":
        results = {
            "model": {
                "ConnectionString": None,
                "BaseLocation": "http://127.0.0.1:10000/devstoreaccount1/",
                "RelativeLocation": "models/run1/model.ilearner",
                "SasBlobToken": SAS,
            },
            "evaluation": {
                "ConnectionString": None,
                "BaseLocation": "http://127.0.0.1:10000/devstoreaccount1/",
                "RelativeLocation": "models/run1/evaluation.csv",
                "SasBlobToken": SAS,
            },
        }
    return Reply(200, {"StatusCode": code, "Results": results, "Details": details})


def make_operator(*script, **kwargs) -> tuple[SubmitBesJobOperator, FakeTransport]:
    kwargs.setdefault("defer_after", 0)  # most tests here are about the deferral itself
    kwargs.setdefault("create_output_containers", False)  # no storage service in unit tests
    op = SubmitBesJobOperator(
        task_id="train",
        inputs={"input1": "training-data/2026-11-26/data.csv"},
        outputs={"model": "models/run1/model.ilearner", "evaluation": "models/run1/evaluation.csv"},
        global_parameters={"Learning rate": 0.1},
        **kwargs,
    )
    hook = AzureMLWebServiceHook.for_endpoint(API, KEY, retry_policy=RetryPolicy(max_attempts=2), sleep=lambda _: None)
    transport = FakeTransport(*script)
    hook.session.mount("https://", transport)
    op.hook = hook  # cached_property: the operator uses this instance
    return op, transport


def calls(transport: FakeTransport) -> list[str]:
    return [
        f"{r.method} {r.path_url.split('?')[0].removeprefix('/workspaces/ws1/services/train1')}"
        for r in transport.requests
    ]


def test_build_request_sas_form_reads_inputs_by_blob_and_writes_outputs_with_their_containers_token():
    op, _ = make_operator()
    body = op.build_request()
    model, evaluation = body["Outputs"]["model"], body["Outputs"]["evaluation"]
    assert model["BaseLocation"].startswith("http://127.0.0.1:")
    assert model["RelativeLocation"] == "models/run1/model.ilearner"
    assert model["SasBlobToken"].startswith("?") and "sig=" in model["SasBlobToken"]
    assert "sp=cw&" in model["SasBlobToken"] and "sr=c&" in model["SasBlobToken"]
    assert evaluation["SasBlobToken"] == model["SasBlobToken"]  # one token for the container
    assert "sp=r&" in body["Inputs"]["input1"]["SasBlobToken"] and "sr=b&" in body["Inputs"]["input1"]["SasBlobToken"]
    assert body["GlobalParameters"] == {"Learning rate": "0.1"}


def test_build_request_connection_string_form():
    op, _ = make_operator(reference_mode="connection_string")
    ref = op.build_request()["Inputs"]["input1"]
    assert set(ref) == {"ConnectionString", "RelativeLocation"}
    assert "AccountKey=" in ref["ConnectionString"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("outputs", {"model": "models/run1/model.pkl"}, "outputs['model']: models/run1/model.pkl must end with"),
        ("inputs", {"input1": "data/train.parquet"}, "inputs['input1']: data/train.parquet must end with"),
        ("inputs", {"input1": "nocontainer"}, "inputs['input1']: expected 'container/path/to/blob'"),
        ("reference_mode", "key", "reference_mode: expected one of"),
    ],
)
def test_bad_arguments_name_the_field(field, value, message):
    op, _ = make_operator()
    setattr(op, field, value)
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        op.build_request()


def test_new_job_is_persisted_before_start_then_deferred():
    store = DictStateStore()
    op, transport = make_operator(Reply(200, JOB), Reply(200))
    ctx = make_context(store)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    # No status call before deferring a job just started: the trigger's first poll is that call.
    assert calls(transport) == ["POST /jobs", f"POST /jobs/{JOB}/start"]
    assert store.data[JOB_STATE_KEY]["job_id"] == JOB
    trigger = deferred.value.trigger
    assert isinstance(trigger, BesJobTrigger)
    assert trigger.job_id == JOB and trigger.last_status is None
    assert trigger.end_time == pytest.approx(time.time() + 6 * 3600, abs=60)
    assert ctx["ti"].xcom == {"bes_job_id": JOB, "azureml_link": "https://services.azureml.net/"}
    # The request carried credentials; nothing the operator kept does.
    submitted = json.loads(transport.requests[0].body)
    assert "sig=" in submitted["Inputs"]["input1"]["SasBlobToken"]


@pytest.mark.parametrize(
    ("previous", "expected_calls"),
    [
        ("Running", [f"GET /jobs/{JOB}", f"GET /jobs/{JOB}"]),
        ("NotStarted", [f"GET /jobs/{JOB}", f"POST /jobs/{JOB}/start", f"GET /jobs/{JOB}"]),
    ],
)
def test_retry_reattaches_instead_of_submitting(previous, expected_calls):
    store = DictStateStore(
        {JOB_STATE_KEY: {"job_id": JOB, "submitted_at": "2026-11-27T10:00:00+00:00", "deadline": time.time() + 60}}
    )
    script = [status(previous)] + ([Reply(200)] if previous == "NotStarted" else []) + [status("Running")]
    op, transport = make_operator(*script)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(store))
    assert calls(transport) == expected_calls
    # The deadline is the original one, not reset by the retry.
    assert deferred.value.trigger.end_time == store.data[JOB_STATE_KEY]["deadline"]


def test_retry_reuses_results_of_a_finished_job():
    store = DictStateStore(
        {JOB_STATE_KEY: {"job_id": JOB, "submitted_at": "2026-11-27T10:00:00+00:00", "deadline": time.time() + 60}}
    )
    op, transport = make_operator(status("Finished"), status("Finished"))
    result = op.execute(make_context(store))
    assert [c.split()[0] for c in calls(transport)] == ["GET", "GET"]
    assert result["job_id"] == JOB
    assert result["outputs"]["model"] == {
        "base_location": "http://127.0.0.1:10000/devstoreaccount1/",
        "relative_location": "models/run1/model.ilearner",
        "container": "models",
        "blob_name": "run1/model.ilearner",
    }
    assert "SECRETSIGNATURE" not in json.dumps(result)


@pytest.mark.parametrize("previous", ["Failed", "Cancelled"])
def test_retry_after_a_failed_job_submits_a_new_one(previous):
    store = DictStateStore({JOB_STATE_KEY: {"job_id": "old", "deadline": time.time() + 60}})
    op, transport = make_operator(status(previous), Reply(200, JOB), Reply(200), status("Running"))
    with pytest.raises(TaskDeferred):
        op.execute(make_context(store))
    assert calls(transport)[1] == "POST /jobs"
    assert store.data[JOB_STATE_KEY]["job_id"] == JOB


def test_a_job_that_ends_within_defer_after_ends_in_the_worker_without_deferring(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    op, transport = make_operator(Reply(200, JOB), Reply(200), status("Running"), status("Finished"), defer_after=3)
    result = op.execute(make_context(DictStateStore()))
    assert result["job_id"] == JOB and result["status"] == "Finished"
    # The same schedule as the trigger's: 1 s, then 2 s; no status call right after the start.
    assert sleeps == [1.0, 2.0]
    assert calls(transport) == ["POST /jobs", f"POST /jobs/{JOB}/start", f"GET /jobs/{JOB}", f"GET /jobs/{JOB}"]


def test_a_job_still_running_at_defer_after_is_deferred_where_the_schedule_stands(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    op, transport = make_operator(Reply(200, JOB), Reply(200), status("Running"), status("Running"), defer_after=3)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(DictStateStore()))
    assert sleeps == [1.0, 2.0]
    trigger = deferred.value.trigger
    # The trigger waits the next interval (4 s) before its first poll: one schedule, no extra call.
    assert (trigger.poll_interval, trigger.last_status) == (4.0, "Running")
    assert len(calls(transport)) == 4


def test_defer_after_must_not_be_negative():
    with pytest.raises(ConfigurationError, match="defer_after must be >= 0"):
        make_operator(defer_after=-1)


@pytest.mark.parametrize(("cancel_on_kill", "cancels"), [(True, True), (False, False)])
def test_a_task_cleared_since_its_job_was_submitted_starts_over(cancel_on_kill, cancels):
    store = DictStateStore({JOB_STATE_KEY: {"job_id": "old", "deadline": time.time() + 60, "clear_number": 0}})
    script = [status("Running"), *([Reply(200)] if cancels else []), Reply(200, JOB), Reply(200)]
    op, transport = make_operator(*script, cancel_on_kill=cancel_on_kill)
    with pytest.raises(TaskDeferred):
        op.execute(make_context(store, dag_run=SimpleNamespace(clear_number=1)))
    expected = ["GET /jobs/old", *(["DELETE /jobs/old"] if cancels else []), "POST /jobs", f"POST /jobs/{JOB}/start"]
    assert calls(transport) == expected
    # The new job is recorded with the run's clear count: a retry of this try reattaches to it.
    assert store.data[JOB_STATE_KEY]["job_id"] == JOB and store.data[JOB_STATE_KEY]["clear_number"] == 1


def test_a_retry_within_the_same_clear_reattaches():
    store = DictStateStore({JOB_STATE_KEY: {"job_id": JOB, "deadline": time.time() + 60, "clear_number": 1}})
    op, transport = make_operator(status("Running"), status("Running"))
    with pytest.raises(TaskDeferred):
        op.execute(make_context(store, dag_run=SimpleNamespace(clear_number=1)))
    assert calls(transport) == [f"GET /jobs/{JOB}", f"GET /jobs/{JOB}"]  # no new job


def test_non_deferrable_waits_in_the_worker(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda _: None)
    op, transport = make_operator(
        Reply(200, JOB),
        Reply(200),
        status("NotStarted"),
        status("Running"),
        Reply(503),
        status("Finished"),
        deferrable=False,
    )
    result = op.execute(make_context())
    assert result["status"] == "Finished"
    assert set(result["outputs"]) == {"model", "evaluation"}


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    warning = error = info


def test_waiting_in_the_worker_logs_each_state_change_with_the_next_check_and_the_link(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda _: None)
    op, _ = make_operator(
        Reply(200, JOB), Reply(200), status("Running"), status("Running"), status("Finished"), deferrable=False
    )
    log = RecordingLog()
    monkeypatch.setattr(SubmitBesJobOperator, "log", property(lambda _: log))
    op.execute(make_context())
    progress = [line for line in log.lines if line.startswith(f"BES job {JOB}: ")]
    assert [line.split(", ")[0] for line in progress] == [
        f"BES job {JOB}: ? -> Running",
        f"BES job {JOB}: Running -> Finished",
    ]
    assert "next check in" in progress[0] and "no further checks" in progress[1]
    assert all(line.endswith("see https://services.azureml.net/") for line in progress)


def test_failed_job_fails_the_task_with_its_details(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda _: None)
    op, _ = make_operator(
        Reply(200, JOB),
        Reply(200),
        status("Running"),
        status("Failed", "Column 'age' not found in input1"),
        deferrable=False,
    )
    with pytest.raises(BesJobFailedError, match="Failed: Column 'age' not found in input1"):
        op.execute(make_context())


def test_timeout_in_the_worker_cancels_the_job():
    # Real sleeps (of at most the 1 ms left): the poll comes after the deadline on any machine, so
    # the next turn of the loop cancels (a no-op sleep let a quick machine poll twice).
    op, transport = make_operator(
        Reply(200, JOB),
        Reply(200),
        status("Running"),
        Reply(200),
        deferrable=False,
        job_timeout=timedelta(seconds=0.001),
    )
    with pytest.raises(BesJobFailedError, match="cancelled"):
        op.execute(make_context())
    assert calls(transport)[-1] == f"DELETE /jobs/{JOB}"


def test_execute_complete_paths():
    op, _ = make_operator(status("Finished"))
    ctx = make_context(DictStateStore({JOB_STATE_KEY: {"job_id": JOB, "submitted_at": "2026-11-27T10:00:00+00:00"}}))
    assert op.execute_complete(ctx, {"status": "terminal", "job_id": JOB})["status"] == "Finished"
    with pytest.raises(BesJobFailedError, match="did not end within job_timeout"):
        op.execute_complete(ctx, {"status": "timeout", "job_id": JOB})
    with pytest.raises(BesJobFailedError, match="valid event"):
        op.execute_complete(ctx, None)


INPUT_ERROR = json.dumps(
    {
        "error": {
            "code": "ModuleExecutionError",
            "message": "Module execution encountered an error.",
            "details": [{"code": "InvalidDataset", "target": "Train Model", "message": "Error 0018: bad label"}],
        }
    }
)


def test_a_job_failed_by_its_input_fails_the_task_without_retries_and_without_another_read():
    op, transport = make_operator()  # no request may be made: the event says it all
    ctx = make_context(DictStateStore({JOB_STATE_KEY: {"job_id": JOB, "try_number": 1}}))
    event = {"status": "terminal", "job_id": JOB, "job_status": "Failed", "details": INPUT_ERROR, "polls": 3}
    with pytest.raises(BesJobInputError, match=r"Failed: Train Model: Error 0018: bad label") as error:
        op.execute_complete(ctx, event)
    assert isinstance(error.value, AirflowFailException)
    assert transport.requests == []


@pytest.mark.parametrize(("retryable", "error"), [(True, BesJobFailedError), (False, BesJobRejectedError)])
def test_an_error_event_is_retried_unless_the_trigger_says_a_retry_cannot_help(retryable, error):
    op, _ = make_operator()
    event = {"status": "error", "job_id": JOB, "message": "HTTP 401 Unauthorized", "retryable": retryable}
    with pytest.raises(error, match="HTTP 401 Unauthorized") as raised:
        op.execute_complete(make_context(), event)
    assert isinstance(raised.value, AirflowFailException) is not retryable


def test_on_kill_cancels_the_running_job():
    op, transport = make_operator(Reply(200))
    op._active_job_id = JOB
    op.on_kill()
    assert calls(transport) == [f"DELETE /jobs/{JOB}"]


def test_missing_output_in_results_is_an_error():
    op, _ = make_operator(status("Finished"))
    op.outputs = {**op.outputs, "extra": "models/run1/extra.csv"}
    ctx = make_context(DictStateStore({JOB_STATE_KEY: {"job_id": JOB}}))
    with pytest.raises(BesJobFailedError, match=r"without the outputs \['extra'\]"):
        op.execute_complete(ctx, {"status": "terminal", "job_id": JOB})


def test_a_finished_job_reporting_an_output_without_a_blob_path_fails_with_a_clear_error():
    """Found by the response fuzzer: ``{"Results": {"model": {"RelativeLocation": ""}}}``."""
    op, _ = make_operator(
        Reply(200, {"StatusCode": "Finished", "Results": {"model": {}, "evaluation": {"RelativeLocation": "models"}}})
    )
    ctx = make_context(DictStateStore({JOB_STATE_KEY: {"job_id": JOB}}))
    with pytest.raises(BesJobFailedError, match="reported an output at '', not 'container/path/to/blob'"):
        op.execute_complete(ctx, {"status": "terminal", "job_id": JOB})
