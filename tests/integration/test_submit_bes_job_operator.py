"""SubmitBesJobOperator against the emulator and Azurite, over real HTTP, in both modes.

Deferral is driven as the triggerer would: ``execute`` raises ``TaskDeferred``; the trigger is
rebuilt from ``serialize()`` (as the triggerer does), its ``run()`` is iterated with asyncio, and
``execute_complete`` is called with the event. A "crash" is simulated by dropping the operator after
its first ``execute`` and running a new instance with the same task state store, as a retry does.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from azureml_retrain.exceptions import AzureMLServiceError, BesJobFailedError, BesJobInputError
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from azureml_retrain.operators.submit_bes_job import JOB_STATE_KEY, SubmitBesJobOperator
from azureml_retrain.triggers.bes_job import BesJobTrigger
from support.airflow_context import DictStateStore, make_context
from support.emulator import RunningEmulator
from support.retrain import add_fault, job_fault, jobs, requests_log, route_count, run_deferrable, run_trigger, status

pytestmark = pytest.mark.integration


@pytest.fixture
def churn_input(upload: Callable[..., str]) -> str:
    return upload("in/churn.csv", dataset="churn", rows=200, window=2, seed=1)


def churn_op(container: str, data: str, **kwargs: Any) -> SubmitBesJobOperator:
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("defer_after", 0)  # the deferral paths, unless a test is about defer_after
    return SubmitBesJobOperator(
        task_id=kwargs.pop("task_id", "train"),
        inputs={"input1": data},
        outputs={"output1": f"{container}/out/model.ilearner", "output2": f"{container}/out/evaluation.csv"},
        azureml_conn_id="azureml_churn_training",
        poll_interval=0.2,
        max_poll_interval=0.5,
        **kwargs,
    )


def rebuilt(trigger: BesJobTrigger) -> BesJobTrigger:
    """The trigger as the triggerer process builds it: from its serialized form."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON-safe, no secrets needed to rebuild it
    return cls(**kwargs)  # type: ignore[no-any-return]


def wait_for_job_status(emulator: RunningEmulator, wanted: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = jobs(emulator)
        if current and current[-1]["status"] == wanted:
            return current[-1]
        time.sleep(0.05)
    raise AssertionError(f"no job reached {wanted}: {jobs(emulator)}")


def assert_outputs_written(blob_service: Any, result: dict[str, Any]) -> None:
    model = result["outputs"]["output1"]
    data = blob_service.get_blob_client(model["container"], model["blob_name"]).download_blob().readall()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "ilearner.json" in archive.namelist()
    evaluation = result["outputs"]["output2"]
    text = blob_service.get_blob_client(evaluation["container"], evaluation["blob_name"]).download_blob().readall()
    assert text.decode("utf-8-sig").splitlines()[0].startswith("Accuracy,Precision,Recall,F-Score,AUC")


# --- happy paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference_mode", ["sas", "connection_string"])
def test_non_deferrable_trains_and_returns_locations_only(
    emulator, container, churn_input, blob_service, reference_mode
):
    context = make_context()
    result = churn_op(container, churn_input, reference_mode=reference_mode).execute(context)

    assert result["status"] == "Finished"
    assert set(result["outputs"]) == {"output1", "output2"}
    assert result["outputs"]["output1"]["relative_location"] == f"{container}/out/model.ilearner"
    assert "sig=" not in json.dumps(result) and "AccountKey" not in json.dumps(result)
    assert context["ti"].xcom["bes_job_id"] == result["job_id"]
    assert context["ti"].xcom["azureml_link"].endswith(f"/_emulator/state/jobs/{result['job_id']}")
    assert context["task_state_store"].get(JOB_STATE_KEY)["job_id"] == result["job_id"]
    assert_outputs_written(blob_service, result)
    assert route_count(emulator, "bes.submit") == 1
    assert route_count(emulator, "bes.start") == 1
    assert [j["status"] for j in jobs(emulator)] == ["Finished"]


def test_deferrable_defers_then_the_trigger_ends_the_task(emulator, container, churn_input, blob_service):
    emulator.admin("PATCH", "settings", json={"job_min_duration_seconds": 0.6})
    op = churn_op(container, churn_input, deferrable=True)
    context = make_context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "execute_complete"
    trigger = rebuilt(deferred.value.trigger)
    event = run_trigger(trigger)
    # Finished with every output: the task ends in the triggerer, its XCom is the operator's result.
    assert event["task_instance_state"] == "success"
    result = event["xcoms"]["return_value"]
    assert result["job_id"] == context["ti"].xcom["bes_job_id"] and result["status"] == "Finished"
    assert result["submitted_at"] == context["task_state_store"].get(JOB_STATE_KEY)["submitted_at"]
    assert result["duration_seconds"] >= 0.6
    assert_outputs_written(blob_service, result)
    assert route_count(emulator, "bes.submit") == 1


def test_a_short_job_ends_in_the_worker_within_defer_after_and_a_longer_one_defers(
    emulator, container, churn_input, blob_service
):
    # Running at the worker's first poll, then it trains: a job that ends while the worker follows
    # it (defer_after is far longer than training takes on any machine) is finished there.
    job_fault(emulator, "hang", status_reads=1, count=1)
    result = churn_op(container, churn_input, deferrable=True, defer_after=60).execute(make_context())
    assert result["status"] == "Finished"
    assert_outputs_written(blob_service, result)

    # Running through both of the worker's polls and the trigger's first, however fast it trains.
    job_fault(emulator, "hang", status_reads=3, count=1)
    polls_before = route_count(emulator, "bes.status")
    started = time.monotonic()
    with pytest.raises(TaskDeferred) as deferred:
        churn_op(container, churn_input, deferrable=True, defer_after=1).execute(make_context())
    # Polls at 0.2, 0.6 s (doubling, at most 0.5 s apart) then hands over: the trigger goes on at 0.5 s.
    assert time.monotonic() - started >= 0.6
    assert route_count(emulator, "bes.status") - polls_before == 2
    trigger = rebuilt(deferred.value.trigger)
    assert (trigger.poll_interval, trigger.last_status) == (0.5, "Running")
    assert run_trigger(trigger)["task_instance_state"] == "success"
    assert route_count(emulator, "bes.submit") == 2 and [j["status"] for j in jobs(emulator)] == ["Finished"] * 2


def test_a_terminal_event_resumes_the_operator(emulator, container, churn_input, blob_service):
    """Triggers serialized before ``finish_task`` existed (or a job that did not finish) resume the task."""
    context = make_context()
    with pytest.raises(TaskDeferred) as deferred:
        churn_op(container, churn_input, deferrable=True).execute(context)
    trigger = rebuilt(deferred.value.trigger)
    trigger.finish_task = False
    event = run_trigger(trigger)
    assert event["status"] == "terminal" and event["job_status"] == "Finished"

    result = churn_op(container, churn_input, deferrable=True).execute_complete(context, event)
    assert result["job_id"] == event["job_id"] == context["ti"].xcom["bes_job_id"]
    assert_outputs_written(blob_service, result)
    assert route_count(emulator, "bes.submit") == 1


def test_arm_training_service_with_required_global_parameter(emulator, upload, container):
    data = upload("in/energy.csv", dataset="energy", rows=200, window=1, seed=1)
    op = SubmitBesJobOperator(
        task_id="train_energy",
        inputs={"input1": data},
        outputs={"output1": f"{container}/energy/model.ilearner", "output2": f"{container}/energy/evaluation.csv"},
        global_parameters={"Training window": "2026-11"},
        azureml_conn_id="azureml_energy_training",
        deferrable=False,
        poll_interval=0.2,
    )
    assert op.execute(make_context())["status"] == "Finished"

    op.global_parameters = {}
    with pytest.raises(AzureMLServiceError, match="MissingRequiredGlobalParameters") as error:
        op.execute(make_context())
    assert error.value.status == 400
    assert "Training window" in str(error.value)


# --- reattach after a crash -------------------------------------------------------------------------


@pytest.mark.parametrize("retry_deferrable", [True, False])
def test_retry_after_crash_while_running_reattaches_to_the_same_job(emulator, container, churn_input, retry_deferrable):
    # Running until the retry has looked at it twice (its reattach, then its first follow-up).
    job_fault(emulator, "hang", status_reads=2)
    store = DictStateStore()
    with pytest.raises(TaskDeferred):  # first try: submitted, started, deferred ... then the worker dies
        churn_op(container, churn_input, deferrable=True).execute(make_context(store))
    first_job = store.get(JOB_STATE_KEY)["job_id"]
    assert jobs(emulator)[0]["status"] == "Running"

    retry = churn_op(container, churn_input, deferrable=retry_deferrable)
    result = run_deferrable(retry, make_context(store))

    assert result["job_id"] == first_job
    assert result["outputs"]["output1"]["relative_location"] == f"{container}/out/model.ilearner"
    assert route_count(emulator, "bes.submit") == 1
    assert route_count(emulator, "bes.start") == 1
    assert [j["id"] for j in jobs(emulator)] == [first_job]


def test_retry_after_the_job_finished_reuses_its_results(emulator, container, churn_input):
    store = DictStateStore()
    with pytest.raises(TaskDeferred):
        churn_op(container, churn_input, deferrable=True).execute(make_context(store))
    finished = wait_for_job_status(emulator, "Finished")

    result = churn_op(container, churn_input).execute(make_context(store))
    assert result["job_id"] == finished["id"]
    assert set(result["outputs"]) == {"output1", "output2"}
    assert route_count(emulator, "bes.submit") == 1


def test_retry_after_submit_without_start_starts_the_submitted_job(emulator, container, churn_input):
    # The start call fails (an injected 400: not retried), as if the worker died between submit and start.
    add_fault(emulator, "bes.start", status(400))
    store = DictStateStore()
    with pytest.raises(AzureMLServiceError, match="start BES job failed"):
        churn_op(container, churn_input).execute(make_context(store))
    job_id = store.get(JOB_STATE_KEY)["job_id"]
    assert jobs(emulator) == [
        {"id": job_id, "service_id": jobs(emulator)[0]["service_id"], "status": "NotStarted", "details": None}
    ]

    result = churn_op(container, churn_input).execute(make_context(store))
    assert result["job_id"] == job_id
    assert route_count(emulator, "bes.submit") == 1
    assert [r["status"] for r in requests_log(emulator, "bes.start")] == [400, 200]


def test_retry_whose_stored_job_no_longer_exists_submits_a_new_one(emulator, container, churn_input):
    store = DictStateStore({JOB_STATE_KEY: {"job_id": "0" * 32, "submitted_at": None, "deadline": time.time() + 60}})
    result = churn_op(container, churn_input).execute(make_context(store))
    assert result["job_id"] != "0" * 32
    assert next(r["status"] for r in requests_log(emulator, "bes.status")) == 404
    assert route_count(emulator, "bes.submit") == 1


def test_retry_after_a_failed_job_submits_a_new_one(emulator, container, churn_input):
    job_fault(emulator, "fail", details="Module execution failed: out of memory", count=1)
    store = DictStateStore()
    with pytest.raises(BesJobFailedError):
        churn_op(container, churn_input).execute(make_context(store))
    failed = store.get(JOB_STATE_KEY)["job_id"]

    result = churn_op(container, churn_input).execute(make_context(store))
    assert result["job_id"] != failed
    assert route_count(emulator, "bes.submit") == 2
    assert [j["status"] for j in jobs(emulator)] == ["Failed", "Finished"]


# --- cancel on kill ---------------------------------------------------------------------------------


def test_on_kill_cancels_the_running_job_non_deferrable(emulator, container, churn_input):
    job_fault(emulator, "hang")
    op = churn_op(container, churn_input)
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            op.execute(make_context())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    running = wait_for_job_status(emulator, "Running")
    deadline = time.monotonic() + 10
    while op._active_job_id is None and time.monotonic() < deadline:  # execute has reached its wait loop
        time.sleep(0.02)
    op.on_kill()
    worker.join(timeout=15)

    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), BesJobFailedError)
    assert "Cancelled" in str(outcome["error"])
    assert [r["method"] for r in requests_log(emulator, "bes.delete")] == ["DELETE"]
    assert jobs(emulator) == [{**running, "status": "Cancelled"}]


def test_trigger_on_kill_cancels_the_job_deferrable(emulator, container, churn_input):
    job_fault(emulator, "hang")
    with pytest.raises(TaskDeferred) as deferred:
        churn_op(container, churn_input, deferrable=True).execute(make_context())
    trigger = rebuilt(deferred.value.trigger)

    async def kill_while_polling() -> dict[str, Any]:
        runner = asyncio.ensure_future(trigger.run().__anext__())
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(route_count, emulator, "bes.status") < 2:  # a few polls: it hangs
            assert time.monotonic() < deadline and not runner.done(), "the trigger did not poll"
            await asyncio.sleep(0.05)
        assert not runner.done()
        # What the triggerer does when a user marks the task failed: cancel run(), then on_kill().
        runner.cancel()
        await trigger.on_kill()
        return dict((await rebuilt(trigger).run().__anext__()).payload)

    event = asyncio.run(kill_while_polling())
    assert event["job_status"] == "Cancelled"
    assert jobs(emulator)[0]["status"] == "Cancelled"
    assert route_count(emulator, "bes.delete") == 1
    with pytest.raises(BesJobFailedError, match="Cancelled"):
        churn_op(container, churn_input, deferrable=True).execute_complete(make_context(), event)


# --- transient errors, auth, failed jobs -------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True])
def test_throttling_and_unavailability_are_retried_with_one_job(
    emulator, container, churn_input, blob_service, deferrable
):
    add_fault(emulator, "bes.submit", status(429, retry_after=1))
    add_fault(emulator, "bes.start", status(503))
    add_fault(emulator, "bes.status", None, status(503), status(429, retry_after=0))
    # Running through the faulted polls (the first read, the two faulted, the next read), however
    # fast it trains: a job ended at the first poll would never meet them.
    job_fault(emulator, "hang", status_reads=2)

    started = time.monotonic()
    result = run_deferrable(churn_op(container, churn_input, deferrable=deferrable))
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    assert [r["status"] for r in requests_log(emulator, "bes.submit")] == [429, 200]
    assert [r["status"] for r in requests_log(emulator, "bes.start")] == [503, 200]
    assert [r["status"] for r in requests_log(emulator, "bes.status")][:3] == [200, 503, 429]
    assert len(jobs(emulator)) == 1
    assert_outputs_written(blob_service, result)


def test_wrong_endpoint_key_is_a_clear_401_without_retries(emulator, container, churn_input, monkeypatch):
    endpoint = emulator.classic_endpoint("training")
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_CHURN_TRAINING",
        json.dumps(
            {"conn_type": "azureml_web_service", "host": endpoint["api_location"], "password": "wrong-key-0123456789"}
        ),
    )
    with pytest.raises(AzureMLServiceError) as error:
        churn_op(container, churn_input).execute(make_context())
    assert error.value.status == 401
    assert error.value.code == "Unauthorized"
    assert "submit BES job failed" in str(error.value)
    assert "wrong-key-0123456789" not in str(error.value)
    assert route_count(emulator, "bes.submit") == 1
    assert jobs(emulator) == []


@pytest.mark.parametrize("deferrable", [False, True])
def test_failed_job_raises_with_the_job_details(emulator, container, churn_input, deferrable):
    job_fault(emulator, "fail", details="Error 0018: Dataset contains invalid data (column Tenure, line 7).")
    with pytest.raises(BesJobFailedError) as error:
        run_deferrable(churn_op(container, churn_input, deferrable=deferrable))
    message = str(error.value)
    assert "Failed" in message
    assert "Error 0018: Dataset contains invalid data (column Tenure, line 7)." in message
    assert route_count(emulator, "bes.submit") == 1


def test_bad_training_data_fails_the_job_with_the_service_details(emulator, upload, container):
    data = upload("in/bad.csv", b"Tenure,MonthlyCharges\n1,2\n")
    with pytest.raises(BesJobFailedError, match=r"Failed: .*(column|Churn|rows)"):
        churn_op(container, data).execute(make_context())


def context_of_try(store: DictStateStore, try_number: int) -> dict[str, Any]:
    context = make_context(store)
    context["ti"].try_number = try_number
    return context


def cancel_when_running(emulator: RunningEmulator, job_id: str) -> threading.Thread:
    """Cancel ``job_id`` from elsewhere (the earlier try's trigger honouring a clear) once the next
    try has looked at it twice: after it reattached, while it waits."""
    from support.emulator import DataPlane

    endpoint = emulator.classic_endpoint("training")
    seen = route_count(emulator, "bes.status")

    def cancel() -> None:
        deadline = time.monotonic() + 30
        while route_count(emulator, "bes.status") < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        DataPlane(endpoint["api_location"], endpoint["primary_key"]).delete(job_id)

    thread = threading.Thread(target=cancel)
    thread.start()
    return thread


def test_a_rerun_that_reattached_to_a_job_its_cleared_try_then_cancelled_starts_over_with_one_new_job(
    emulator, container, churn_input
):
    job_fault(emulator, "hang", count=1)
    store = DictStateStore()
    with pytest.raises(TaskDeferred):
        churn_op(container, churn_input, deferrable=True).execute(context_of_try(store, 1))
    cleared_job = store.get(JOB_STATE_KEY)["job_id"]
    # The rerun (try 2) reattaches to the still-running job; the cancellation lands right after.
    canceller = cancel_when_running(emulator, cleared_job)
    result = churn_op(container, churn_input).execute(context_of_try(store, 2))
    canceller.join(timeout=30)
    assert [r["status"] for r in requests_log(emulator, "bes.delete")] == [200]

    assert result["job_id"] != cleared_job and result["status"] == "Finished"
    assert {j["id"]: j["status"] for j in jobs(emulator)} == {cleared_job: "Cancelled", result["job_id"]: "Finished"}
    assert route_count(emulator, "bes.submit") == 2
    assert store.get(JOB_STATE_KEY)["try_number"] == 2


def test_a_job_cancelled_elsewhere_during_the_try_that_submitted_it_fails_that_try(emulator, container, churn_input):
    job_fault(emulator, "hang", count=1)
    store = DictStateStore()
    with pytest.raises(TaskDeferred):
        churn_op(container, churn_input, deferrable=True).execute(context_of_try(store, 1))
    job_id = store.get(JOB_STATE_KEY)["job_id"]
    canceller = cancel_when_running(emulator, job_id)
    with pytest.raises(BesJobFailedError, match=f"BES job {job_id} Cancelled"):
        churn_op(container, churn_input).execute(context_of_try(store, 1))
    canceller.join(timeout=30)
    assert route_count(emulator, "bes.submit") == 1


# --- failures a retry cannot help ------------------------------------------------------------------


def run_with_retries(make_op: Callable[[], SubmitBesJobOperator]) -> list[BaseException]:
    """Run the task as Airflow runs it with its ``retries``: the errors of the tries that ran.

    Each try is a new operator instance with the same state store (as a retry is); a fail exception
    ends the task at once, any other error is retried."""
    store = DictStateStore()
    errors: list[BaseException] = []
    for try_number in range(1, make_op().retries + 2):
        try:
            run_deferrable(make_op(), context_of_try(store, try_number))
        except AirflowFailException as error:
            errors.append(error)
            break
        except Exception as error:
            errors.append(error)
            continue
        break
    return errors


def bad_churn_csv(problem: str) -> bytes:
    from emulator.datasets import generate_csv

    lines = generate_csv("churn", rows=200, window=2, seed=1).splitlines()
    cells = lines[7].split(",")  # data line 7 of the file (the header is line 1)
    if problem == "non-numeric feature":
        cells[4] = "forty"  # Age
    else:
        cells[5] = "Maybe"  # Churn: not Churner / NonChurner
    lines[7] = ",".join(cells)
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def statuses_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every status the operator or its trigger read, in order (both run in this process)."""
    seen: list[str] = []
    real_get_job = AzureMLWebServiceHook.get_job

    def recording_get_job(hook: AzureMLWebServiceHook, job_id: str) -> Any:
        job = real_get_job(hook, job_id)
        seen.append(job.status)
        return job

    monkeypatch.setattr(AzureMLWebServiceHook, "get_job", recording_get_job)
    return seen


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-the-worker", "deferred"])
@pytest.mark.parametrize(
    ("problem", "column"), [("non-numeric feature", "Age"), ("wrong label value", "Churn")], ids=["feature", "label"]
)
def test_a_bad_training_csv_costs_one_job_and_ends_the_task_at_the_poll_that_sees_it_fail(
    emulator, upload, container, statuses_seen, problem, column, deferrable
):
    data = upload("in/bad.csv", bad_churn_csv(problem))
    # Running for its first 3 status reads, then it trains on the bad data and fails: the task has
    # followed a running job before the failure, however fast the machine trains.
    job_fault(emulator, "hang", status_reads=3)
    errors = run_with_retries(lambda: churn_op(container, data, deferrable=deferrable, retries=2))

    assert len(errors) == 1, errors  # one try: the retries were not used
    (error,) = errors
    assert isinstance(error, BesJobInputError) and isinstance(error, AirflowFailException)
    (job,) = jobs(emulator)  # one BES job
    assert job["status"] == "Failed" and route_count(emulator, "bes.submit") == 1
    message = str(error)
    assert f"BES job {job['id']} Failed: Train Model: Error 0018: " in message
    assert f"'{column}'" in message and "line 8" in message
    # The poll that first saw the job Failed was the last status read: the task ended right there.
    reads = [r["status"] for r in requests_log(emulator, "bes.status")]
    assert reads == [200] * len(statuses_seen)
    assert statuses_seen[:3] == ["Running"] * 3
    assert statuses_seen[-1] == "Failed" and statuses_seen.count("Failed") == 1


def test_a_library_error_is_retried_with_a_new_job(emulator, container, churn_input):
    library_error = json.dumps(
        {
            "error": {
                "code": "LibraryExecutionError",
                "message": "Module execution encountered an internal library error.",
                "details": [{"code": "LibraryException", "target": "Train Model", "message": "Error 1000: boom"}],
            }
        }
    )
    job_fault(emulator, "fail", details=library_error, count=1)
    errors = run_with_retries(lambda: churn_op(container, churn_input, retries=2))

    assert len(errors) == 1 and not isinstance(errors[0], AirflowFailException)
    assert "Train Model: Error 1000: boom (LibraryExecutionError/LibraryException)" in str(errors[0])
    assert [j["status"] for j in jobs(emulator)] == ["Failed", "Finished"]


def test_a_missing_output_container_is_created_before_the_job(emulator, container, churn_input, blob_service):
    """BES writes into existing containers only: on fresh storage the job would fail with "blob not
    found", hiding the cause. The operator creates the outputs' container first."""
    fresh = f"fresh-{uuid.uuid4().hex[:10]}"
    assert not blob_service.get_container_client(fresh).exists()
    result = churn_op(fresh, churn_input).execute(make_context())
    assert result["status"] == "Finished"
    assert blob_service.get_container_client(fresh).exists()
    assert_outputs_written(blob_service, result)
    blob_service.delete_container(fresh)
