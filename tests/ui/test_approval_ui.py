"""Approval of a borderline model, end to end: a ``retrain_churn`` run whose config says promoting
to ``churn-retrain01`` always needs a person waits in the approval task (Airflow's required actions);
a rejection through the REST API keeps the serving model, and the decision log says who rejected
and why; a time-out keeps it too; a user who approves in the UI gets the new model served.

The rule fires for certain (``targets``), not by the emulator's luck; the run's rules override makes
the evaluation promote whatever the emulator trains. Time-outs: only the outcome is asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from azureml_retrain.approval import APPROVAL_TASK, APPROVE_OPTION, REJECT_OPTION
from devtools.cluster import AirflowCluster
from support.browser import Browser, run_url, starting
from support.dags import install_retraining_config
from support.retraining import Retraining, build_retraining, endpoint_model, land_window
from support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(1500)]

DAY = datetime(2026, 11, 5, tzinfo=UTC)
TARGET = "churn-retrain01"
ENDPOINT = "retrain01"
# Whatever the emulator trains is promoted by the evaluation, so the approval rule decides.
PROMOTING_RULES = {"metric": "AUC", "threshold": 0.0}


def approval(timeout_minutes: float) -> dict[str, Any]:
    return {"when": {"targets": [TARGET]}, "timeout_minutes": timeout_minutes, "on_timeout": "keep"}


@dataclass
class ApprovalAirflow:
    cluster: AirflowCluster
    churn: Retraining  # waits an hour for a person
    hasty: Retraining  # times out after 15 s


@pytest.fixture(scope="module")
def approval_airflow(
    azurite: str, emulator_session: Any, blob_service: Any, airflow_db: None, local_ports: Any, tmp_path_factory: Any
) -> Iterator[ApprovalAirflow]:
    emulator_session.admin("POST", "reset")
    churn = build_retraining("churn", model="churn", max_active_runs=3, approval=approval(60))
    # Times out after 15 s. Airflow 3.3's scheduler sweeps time-outs itself; one that fires before the
    # scheduler has taken in the task's pause fails the resumed task (see wait_for_the_pause), and
    # nothing holds the sweep: 15 s is many scheduler loops, and asserted on nothing but the outcome.
    hasty = build_retraining("churn", max_active_runs=3, approval=approval(0.25))
    root = tmp_path_factory.mktemp("approval-airflow")
    dags = root / "dags"
    dags.mkdir()
    for retraining in (churn, hasty):
        install_retraining_config(dags, retraining.config.model_dump(mode="json"))
        land_window(blob_service, retraining, DAY, dataset="churn", window=1, seed=1)
    cluster = AirflowCluster(home=root / "home", ports=local_ports, dags_folder=dags)
    with starting(cluster) as started:
        started()
        for retraining in (churn, hasty):
            cluster.wait_for_dag(retraining.dag_id)
        yield ApprovalAirflow(cluster, churn, hasty)


def trigger(cluster: AirflowCluster, retraining: Retraining) -> str:
    window = f"{DAY:%Y-%m-%d}/{DAY + timedelta(days=1):%Y-%m-%d}"
    return cluster.trigger(retraining.dag_id, conf={"window": window, "rules": PROMOTING_RULES})


def wait_for_the_pause(cluster: AirflowCluster, retraining: Retraining, run_id: str) -> None:
    """Until the approval task waits for a person and the scheduler has taken in its worker's exit.
    (An answer or a time-out before that races the worker's "success" event: Airflow 3.3's scheduler
    then finds the resumed task queued, and fails it. No person answers within a second.)"""
    cluster.wait_for_task_state(retraining.dag_id, run_id, APPROVAL_TASK, ["awaiting_input"], timeout=600)
    paused = f"task_id={APPROVAL_TASK}, run_id={run_id}, "
    wait_until(
        lambda: any(
            "TaskInstance Finished:" in line and paused in line and "state=awaiting_input" in line
            for line in (cluster.log_dir / "scheduler.out").read_text(errors="replace").splitlines()
        ),
        "the scheduler to take in the approval task's pause",
        timeout=120,
    )


def wait_for_approval(cluster: AirflowCluster, retraining: Retraining, run_id: str) -> dict[str, Any]:
    """The approval task's request, once it waits for a person (see :func:`wait_for_the_pause`)."""
    wait_for_the_pause(cluster, retraining, run_id)
    details = cluster.api("GET", f"dags/{retraining.dag_id}/dagRuns/{run_id}/hitlDetails")["hitl_details"]
    (detail,) = details
    return dict(detail)


def decision_of(retraining: Retraining, run_id: str) -> dict[str, Any]:
    (decision,) = [d for d in retraining.ledger.decisions(retraining.dag_id) if d["run_id"] == run_id]
    return dict(decision)


def test_a_rejection_through_the_rest_api_keeps_the_serving_model(
    approval_airflow: ApprovalAirflow, emulator_session: Any
) -> None:
    cluster, churn = approval_airflow.cluster, approval_airflow.churn
    before = endpoint_model(emulator_session, ENDPOINT)
    run_id = trigger(cluster, churn)
    detail = wait_for_approval(cluster, churn, run_id)
    # What the person reads: challenger vs champion, the evaluation's blob (never a SAS), the history.
    body = detail["body"]
    assert "| **AUC** |" in body and "Evaluation CSV: `models/" in body and "sig=" not in body, body
    assert f"/model-history/dags/{churn.dag_id}" in body, body
    assert detail["options"] == [APPROVE_OPTION, REJECT_OPTION]

    cluster.api(
        "PATCH",
        f"dags/{churn.dag_id}/dagRuns/{run_id}/taskInstances/{APPROVAL_TASK}/-1/hitlDetails",
        json={"chosen_options": [REJECT_OPTION], "params_input": {"comment": "too close to call"}},
    )
    ended = cluster.wait_for_run(churn.dag_id, run_id, timeout=300)
    states = {t["task_id"]: t["state"] for t in cluster.task_instances(churn.dag_id, run_id)}
    assert ended == "success", states
    assert states["skip_promotion"] == "success" and states["promote_classic_endpoints"] == "skipped", states
    assert endpoint_model(emulator_session, ENDPOINT) == before
    decision = decision_of(churn, run_id)
    assert decision["promote"] is False
    assert decision["approval"]["outcome"] == "rejected" and decision["approval"]["by"] == "admin", decision
    assert decision["approval"]["comment"] == "too close to call" and decision["approval"]["at"]
    assert "always needs approval" in decision["approval"]["why_needed"]
    assert decision["reason"] == "not promoted: admin rejected the promotion: too close to call"


def test_a_time_out_keeps_the_serving_model(approval_airflow: ApprovalAirflow, emulator_session: Any) -> None:
    cluster, hasty = approval_airflow.cluster, approval_airflow.hasty
    before = endpoint_model(emulator_session, ENDPOINT)
    run_id = trigger(cluster, hasty)
    ended = cluster.wait_for_run(hasty.dag_id, run_id, timeout=600)
    assert ended == "success", cluster.task_instances(hasty.dag_id, run_id)
    states = {t["task_id"]: t["state"] for t in cluster.task_instances(hasty.dag_id, run_id)}
    assert states[APPROVAL_TASK] == "success" and states["promote_classic_endpoints"] == "skipped", states
    assert endpoint_model(emulator_session, ENDPOINT) == before
    approval_field = decision_of(hasty, run_id)["approval"]
    assert approval_field["outcome"] == "timed_out" and approval_field["by"] is None, approval_field


def test_a_user_approves_in_the_ui_and_the_endpoint_serves_the_new_model(
    approval_airflow: ApprovalAirflow, browser: Browser, emulator_session: Any
) -> None:
    from ui.test_retraining_ui import log_in

    cluster, churn = approval_airflow.cluster, approval_airflow.churn
    run_id = trigger(cluster, churn)
    wait_for_approval(cluster, churn, run_id)

    browser.base_url = cluster.url
    log_in(browser, *cluster.credentials)
    browser.open(f"{run_url(churn.dag_id, run_id)}/tasks/{APPROVAL_TASK}/required_actions")
    browser.wait(lambda _: "Promote the new churn model?" in browser.text(), message="the request is not shown")
    browser.shot("approval-request")
    browser.click(xpath=f"//button[normalize-space(.)='{APPROVE_OPTION}']")

    ended = cluster.wait_for_run(churn.dag_id, run_id, timeout=600)
    assert ended == "success", cluster.task_instances(churn.dag_id, run_id)
    browser.shot("approval-done")
    head = churn.ledger.head(TARGET)
    assert head is not None and head.run_id == run_id
    assert endpoint_model(emulator_session, ENDPOINT) == head.model_uri
    approval_field = decision_of(churn, run_id)["approval"]
    assert approval_field["outcome"] == "approved" and approval_field["by"] == "admin", approval_field
