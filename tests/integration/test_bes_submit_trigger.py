"""SubmitBesJob with ``start_from_trigger``: BesSubmitTrigger against the emulator and Azurite.

The trigger is rebuilt from the operator's ``start_trigger_args`` (what the scheduler stores) and run
as the triggerer runs it. A triggerer restart is a second run of the same trigger; a failover is two
runs at once. Each must leave exactly one job, recorded in the claim blob beside the first output.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import task

from azureml_retrain.bes import CLAIM_SUFFIX
from azureml_retrain.exceptions import BesJobFailedError, ConfigurationError
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator
from azureml_retrain.triggers.bes_job import BesSubmitTrigger
from support.airflow_context import make_context
from support.retrain import job_fault, jobs, route_count, run_trigger
from support.secrets import assert_no_secret, emulator_secrets

pytestmark = pytest.mark.integration


@pytest.fixture
def churn_input(upload: Callable[..., str]) -> str:
    return upload("in/churn.csv", dataset="churn", rows=200, window=2, seed=1)


def triggered_op(container: str, data: str, **kwargs: Any) -> SubmitBesJobOperator:
    return SubmitBesJobOperator(
        task_id="train",
        inputs={"input1": data},
        outputs={"output1": f"{container}/out/model.ilearner", "output2": f"{container}/out/evaluation.csv"},
        azureml_conn_id="azureml_churn_training",
        poll_interval=0.2,
        max_poll_interval=0.5,
        start_from_trigger=True,
        **kwargs,
    )


def trigger_of(op: SubmitBesJobOperator, try_number: int = 1) -> BesSubmitTrigger:
    """The trigger as the triggerer builds it from the stored start_trigger_args, for one try."""
    args = op.start_trigger_args
    assert args is not None and op.start_from_trigger
    assert args.trigger_cls == "azureml_retrain.triggers.bes_job.BesSubmitTrigger"
    kwargs = json.loads(json.dumps(args.trigger_kwargs))  # JSON-safe: no secret needed to rebuild it
    trigger = BesSubmitTrigger(**kwargs)
    trigger.task_instance = SimpleNamespace(task_id="train", try_number=try_number)  # type: ignore[assignment]
    return trigger


def claim(blob_service: Any, container: str) -> dict[str, Any]:
    blob = blob_service.get_blob_client(container, "out/model.ilearner" + CLAIM_SUFFIX)
    return dict(json.loads(blob.download_blob().readall()))


def test_the_trigger_submits_starts_and_ends_the_task(emulator, container, churn_input, blob_service):
    event = run_trigger(trigger_of(triggered_op(container, churn_input)))

    assert event["task_instance_state"] == "success"
    xcoms = event["xcoms"]
    result = xcoms["return_value"]
    assert result["status"] == "Finished" and set(result["outputs"]) == {"output1", "output2"}
    assert xcoms["bes_job_id"] == result["job_id"]
    assert xcoms["azureml_link"].endswith(f"/_emulator/state/jobs/{result['job_id']}")
    recorded = claim(blob_service, container)
    assert recorded["job_id"] == result["job_id"] and recorded["try_number"] == 1
    assert recorded["submitted_at"] == result["submitted_at"]
    assert (route_count(emulator, "bes.submit"), route_count(emulator, "bes.start")) == (1, 1)
    assert_no_secret(emulator_secrets(emulator), xcoms=json.dumps(xcoms), claim=json.dumps(recorded))


def test_a_second_run_of_the_trigger_reattaches(emulator, container, churn_input):
    op = triggered_op(container, churn_input)
    first = run_trigger(trigger_of(op))
    # The triggerer restarted (or the task was cleared after success): the same trigger runs again.
    second = run_trigger(trigger_of(op))
    assert second["xcoms"]["bes_job_id"] == first["xcoms"]["bes_job_id"]
    assert route_count(emulator, "bes.submit") == 1


def test_a_job_recorded_but_not_started_is_started(emulator, container, churn_input, blob_service):
    """The trigger died between recording the job and starting it: the next run starts that job."""
    op = triggered_op(container, churn_input)
    trigger = trigger_of(op)
    hook = AzureMLWebServiceHook("azureml_churn_training")
    body = op.build_request()
    job_id = hook.submit_job(body)
    blob_service.get_blob_client(container, "out/model.ilearner" + CLAIM_SUFFIX).upload_blob(
        json.dumps({"job_id": job_id, "submitted_at": "2026-11-27T00:00:00+00:00", "deadline": 4e9, "try_number": 1})
    )
    event = run_trigger(trigger)
    assert event["xcoms"]["bes_job_id"] == job_id
    assert (route_count(emulator, "bes.submit"), route_count(emulator, "bes.start")) == (1, 1)


def test_two_runs_at_once_make_one_job(emulator, container, churn_input):
    """A triggerer failover can run the same trigger twice at once: the claim lets one submit."""
    emulator.admin("PATCH", "settings", json={"job_min_duration_seconds": 1.0})
    op = triggered_op(container, churn_input)

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(anext(trigger_of(op).run()) for _ in range(2))))

    events = asyncio.run(asyncio.wait_for(both(), 60))
    assert {e.xcoms["bes_job_id"] for e in events} == {jobs(emulator)[0]["id"]}
    assert route_count(emulator, "bes.submit") == 1


def test_a_failed_job_fails_its_try_and_the_retry_submits_a_new_one(emulator, container, churn_input):
    job_fault(emulator, "fail", details="Error 0018: invalid data", count=1)
    op = triggered_op(container, churn_input)
    event = run_trigger(trigger_of(op, try_number=1))
    assert event["status"] == "terminal" and event["job_status"] == "Failed"
    # The task resumes on a worker only to fail with the job's reason (then Airflow retries it).
    with pytest.raises(BesJobFailedError, match="Failed: Error 0018: invalid data"):
        op.execute_complete(make_context(), event)
    # The same try's trigger running again reports the same job; the retry submits a new one.
    assert run_trigger(trigger_of(op, try_number=1))["job_id"] == event["job_id"]
    retry = run_trigger(trigger_of(op, try_number=2))
    assert retry["task_instance_state"] == "success" and retry["xcoms"]["bes_job_id"] != event["job_id"]
    assert route_count(emulator, "bes.submit") == 2


def test_bad_outputs_fail_before_any_job_naming_the_field(emulator, container, churn_input):
    op = triggered_op(container, churn_input)
    op.start_trigger_args.trigger_kwargs["outputs"] = {"output1": f"{container}/out/model.zip"}  # type: ignore[union-attr]
    event = run_trigger(trigger_of(op))
    assert event["status"] == "error" and event["job_id"] is None
    assert "outputs['output1']" in event["message"] and ".ilearner" in event["message"]
    with pytest.raises(BesJobFailedError, match=r"not submitted.*outputs\['output1'\]"):
        op.execute_complete(make_context(), event)
    assert route_count(emulator, "bes.submit") == 0


def test_another_tasks_output_is_refused_at_parse_time(container, churn_input):
    @task
    def plan() -> dict[str, str]:
        return {}

    from airflow.sdk import DAG

    with DAG("start_from_trigger_refuses_xcomarg", schedule=None), pytest.raises(ConfigurationError) as error:
        SubmitBesJobOperator(
            task_id="train",
            inputs={"input1": plan()["input"]},
            outputs={"output1": f"{container}/out/model.ilearner"},
            azureml_conn_id="azureml_churn_training",
            start_from_trigger=True,
        )
    assert str(error.value).startswith("inputs: start_from_trigger=True needs values or Jinja templates")


def test_the_trigger_creates_a_missing_output_container_before_its_claim(emulator, churn_input, blob_service):
    fresh = f"fresh-{uuid.uuid4().hex[:10]}"
    event = run_trigger(trigger_of(triggered_op(fresh, churn_input)))
    assert event["task_instance_state"] == "success", event
    assert claim(blob_service, fresh)["job_id"] == event["xcoms"]["return_value"]["job_id"]
    blob_service.delete_container(fresh)
