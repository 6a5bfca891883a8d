"""Process faults under a real Airflow: separate scheduler, triggerer, dag-processor and api-server
(LocalExecutor), driven through the REST API, against the emulator and Azurite.

* a worker running a non-deferrable SubmitBesJob is SIGKILLed mid-job: the retry reattaches (1 job);
* the triggerer is SIGKILLed and restarted while a BES job and the sensor are deferred: both resume,
  a third task's job deadline fires at its original time (not reset), one job per task; a task the
  triggerer started itself (``start_from_trigger``) reattaches to its job and never takes a worker;
* a deferred task marked failed, or cleared, through the API: the remote job is cancelled; a cleared
  task starts over with one new job, also when its rerun starts before the triggerer notices the clear;
* the scheduler (with its LocalExecutor workers) is SIGKILLed during a promotion and restarted: the
  run completes with one BES job, one PATCH per endpoint and one ledger record per target;
* afterwards every log the installation wrote (task logs with their trigger sections, component
  logs) and its metadata database are searched for every secret in play.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from devtools.cluster import AirflowCluster
from devtools.services import LocalPorts
from support.clusters import running_cluster, triggerer_of
from support.dags import install_retraining_config
from support.emulator import RunningEmulator
from support.held_jobs import (
    job_ids,
    job_status,
    new_jobs,
    release_once_read_since,
    requests_on_job_since,
    service_of,
    upload_training_inputs,
)
from support.retrain import job_fault, requests_log, route_count
from support.retraining import DATA_CONTAINER, endpoint_model, shipped_config_data
from support.secrets import assert_no_secret, emulator_secrets, result_sas_signatures
from support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

CONTAINER = "process-faults"
FAULT_DAG_IDS = ("pf_worker_kill", "pf_triggerer_restart", "pf_mark_failed", "pf_clear", "pf_start_in_triggerer")
HUNG_JOB_TIMEOUT = 45  # seconds; the triggerer restart lands well inside it

FAULT_DAGS = textwrap.dedent(
    """
    from __future__ import annotations

    from datetime import datetime, timedelta

    from airflow.sdk import DAG

    from azureml_retrain.operators import EvaluateModelOperator, SubmitBesJobOperator
    from azureml_retrain.sensors import BlobArrivalSensor

    CONTAINER = "{container}"
    TAG = "{{{{ dag_run.conf['tag'] }}}}"
    DEFAULTS = {{"owner": "tests", "retries": 2, "retry_delay": timedelta(seconds=1)}}


    def train(task_id, *, model="churn", **kwargs):
        conn = {{"churn": "azureml_churn_training", "energy": "azureml_energy_training"}}[model]
        folder = f"{{CONTAINER}}/{{TAG}}/{{task_id}}"
        return SubmitBesJobOperator(
            task_id=task_id,
            inputs={{"input1": f"{{CONTAINER}}/input/{{model}}.csv"}},
            outputs={{"output1": f"{{folder}}/model.ilearner", "output2": f"{{folder}}/evaluation.csv"}},
            global_parameters={{"Training window": 1}} if model == "energy" else None,
            azureml_conn_id=conn,
            poll_interval=1,
            max_poll_interval=2,
            **kwargs,
        )


    def dag(dag_id):
        return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, default_args=DEFAULTS,
                   tags=["tests"], doc_md="Process-fault test DAG.")


    with dag("pf_worker_kill"):
        train("train", deferrable=False)

    with dag("pf_triggerer_restart"):
        BlobArrivalSensor(
            task_id="wait_for_data", container_name=CONTAINER, prefix=TAG + "/landing/", pattern="*.csv",
            stable_for=0, poke_interval=1, timeout=600,
            window_start="2026-01-01T00:00:00+00:00", window_end="2026-01-02T00:00:00+00:00",
        )
        train("train", deferrable=True)
        train("train_hung", model="energy", deferrable=True, retries=0,
              job_timeout=timedelta(seconds={hung_job_timeout}))

    with dag("pf_mark_failed"):
        train("train", deferrable=True, retries=0)

    with dag("pf_clear"):
        train("train", deferrable=True, retries=0)

    with dag("pf_start_in_triggerer"):
        trained = train("train", start_from_trigger=True)
        EvaluateModelOperator(
            task_id="evaluate", evaluation_results=trained.output, rules={{"metric": "AUC", "threshold": 0.5}}
        )
    """
)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_id() -> str:
    return f"churn_pf{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def cluster(
    emulator_session: RunningEmulator,
    blob_service: Any,
    local_ports: LocalPorts,
    tmp_path_factory: pytest.TempPathFactory,
    model_id: str,
) -> Iterator[AirflowCluster]:
    upload_training_inputs(blob_service, CONTAINER, ("churn", "energy"))
    home = tmp_path_factory.mktemp("cluster")
    dags = home / "dags"
    (dags / "retraining").mkdir(parents=True)
    (dags / "process_fault_dags.py").write_text(
        FAULT_DAGS.format(container=CONTAINER, hung_job_timeout=HUNG_JOB_TIMEOUT)
    )
    install_retraining_config(dags, fast_churn_config(model_id))

    cluster = AirflowCluster(
        home=home / "airflow",
        ports=local_ports,
        dags_folder=dags,
        settings={
            # A triggerer that died is taken over within seconds, not the default 30.
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "20",
            # Tasks of a dead scheduler's workers are reset within a minute, not five. Not lower: a
            # live but busy scheduler taken for dead would have its running tasks reset.
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
        },
    )
    with running_cluster(cluster, (*FAULT_DAG_IDS, f"retrain_{model_id}"), "cluster-logs"):
        yield cluster


def fast_churn_config(model_id: str) -> dict[str, Any]:
    """The shipped churn config, with its own data folder, ledger and endpoints, and a fast sensor."""
    data = copy.deepcopy(shipped_config_data("churn"))
    data["model"] = model_id
    data["data"] |= {"prefix": f"{model_id}/{{window_start:%Y-%m-%d}}/", "stable_for_seconds": 0}
    data["data"]["poke_interval_seconds"] = 1
    data["outputs"]["prefix"] = model_id
    data["ledger_container"] = f"ledger-{model_id.replace('_', '-')}"
    data["training"]["poll_interval_seconds"] = 1
    for target in data["targets"]:
        target["name"] = f"{model_id}-{target['endpoint_name']}"
    return data


# --- helpers ------------------------------------------------------------------------------------


def trigger(cluster: AirflowCluster, dag_id: str, **conf: Any) -> str:
    return cluster.trigger(dag_id, conf={"tag": uuid.uuid4().hex[:10], **conf})


def wait_until_trigger_runs(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str) -> None:
    """Until a triggerer runs the task's trigger. Before that, Airflow drops the trigger of a task a
    user marks or clears without ever starting it, so no trigger code can cancel the job (a window
    of about a second; docs/known-limits.md names it)."""
    wait_until(lambda: triggerer_of(cluster.task_instance(dag_id, run_id, task_id)), "a triggerer to take the trigger")


def parent_pid(pid: int) -> int:
    return psutil.Process(pid).ppid()


def cmdline(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


# --- the process faults -------------------------------------------------------------------------


def test_sigkilled_worker_running_a_blocking_submit_is_retried_and_reattaches_to_the_same_job(
    cluster: AirflowCluster, fresh_emulator: RunningEmulator
):
    emulator = fresh_emulator
    # Running until the retry has looked at it (released below), however long the kill takes to be
    # noticed: the retry reattaches to a running job.
    job_fault(emulator, "hang", service_id=service_of(emulator, "churn"))
    known = job_ids(emulator)
    run_id = trigger(cluster, "pf_worker_kill")
    ti = cluster.wait_for_task_state("pf_worker_kill", run_id, "train", ["running"], timeout=120)
    job = wait_until(lambda: [j for j in new_jobs(emulator, known) if j["status"] == "Running"], "the job to run")[0]

    # The task process and its supervisor (the LocalExecutor worker) die at once, as in an OOM kill:
    # nothing reports the failure; the scheduler finds the task by its missing heartbeats.
    task_pid = int(ti["pid"])
    worker_pid = parent_pid(task_pid)
    assert "airflow" in cmdline(worker_pid), cmdline(worker_pid)
    for pid in (task_pid, worker_pid):
        os.kill(pid, signal.SIGKILL)
    release_once_read_since(emulator, job["id"], datetime.now(UTC), "the retry to look at the job")

    assert cluster.wait_for_run("pf_worker_kill", run_id, timeout=240) == "success"
    final = cluster.task_instance("pf_worker_kill", run_id, "train")
    assert final["try_number"] == 2, final
    assert [j["id"] for j in new_jobs(emulator, known)] == [job["id"]], "the retry submitted another job"
    assert route_count(emulator, "bes.submit") == 1
    assert job_status(emulator, job["id"]) == "Finished"
    assert f"Reattaching to BES job {job['id']}" in cluster.task_log("pf_worker_kill", run_id, "train", 2)


def test_triggerer_killed_and_restarted_while_deferred_resumes_every_wait_with_its_original_deadline(
    cluster: AirflowCluster, fresh_emulator: RunningEmulator, blob_service: Any
):
    """One SIGKILL of the triggerer, two DAGs waiting in it: ``pf_triggerer_restart`` (a sensor, a
    job, a hung job with a deadline) and ``pf_start_in_triggerer`` (a task the triggerer started
    itself, with no worker run at all)."""
    emulator = fresh_emulator
    # The churn jobs run until the restarted triggerer has looked at them (released below); the
    # energy job runs until its deadline cancels it.
    job_fault(emulator, "hang", service_id=service_of(emulator, "churn"))
    job_fault(emulator, "hang", service_id=service_of(emulator, "energy"))
    known = job_ids(emulator)
    tag, started_tag = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    run_id = cluster.trigger("pf_triggerer_restart", conf={"tag": tag})
    started_run = cluster.trigger("pf_start_in_triggerer", conf={"tag": started_tag})
    for task_id in ("wait_for_data", "train", "train_hung"):
        cluster.wait_for_task_state("pf_triggerer_restart", run_id, task_id, ["deferred"], timeout=120)
    submitted = wait_until(lambda: len(new_jobs(emulator, known)) == 3 and time.monotonic(), "three jobs")
    # The scheduler deferred the started task itself; the triggerer rendered its outputs from the
    # run's conf, submitted the job and recorded it beside the first output.
    claim = blob_service.get_blob_client(CONTAINER, f"{started_tag}/train/model.ilearner.bes-job.json")
    started_job = json.loads(claim.download_blob().readall())["job_id"]
    assert cluster.task_instance("pf_start_in_triggerer", started_run, "train")["state"] == "deferred"
    ids = {job["service_id"]: job["id"] for job in new_jobs(emulator, known) if job["id"] != started_job}
    train_job, hung_job = ids[service_of(emulator, "churn")], ids[service_of(emulator, "energy")]

    cluster.kill_component("triggerer")
    killed_at = datetime.now(UTC)
    time.sleep(15)
    cluster.start_component("triggerer")
    # A deadline reset by the restart would fire HUNG_JOB_TIMEOUT after this point.
    assert time.monotonic() - submitted >= 15
    for job_id in (train_job, started_job):
        release_once_read_since(emulator, job_id, killed_at, f"the restarted triggerer to poll job {job_id}")

    blob_service.get_blob_client(CONTAINER, f"{tag}/landing/part-0.csv").upload_blob(b"a,b\n1,2\n", overwrite=True)
    state = cluster.wait_for_run("pf_triggerer_restart", run_id, timeout=240)
    assert state == "failed"  # train_hung timed out, as configured
    tis = {ti["task_id"]: ti for ti in cluster.task_instances("pf_triggerer_restart", run_id)}
    assert tis["wait_for_data"]["state"] == "success", tis["wait_for_data"]
    assert tis["train"]["state"] == "success", tis["train"]
    assert tis["train_hung"]["state"] == "failed", tis["train_hung"]
    for task_id in ("wait_for_data", "train", "train_hung"):
        assert tis[task_id]["try_number"] == 1, f"{task_id} was retried: {tis[task_id]}"

    created = [job for job in new_jobs(emulator, known) if job["id"] != started_job]
    assert len(created) == 2, created  # one per training task, none resubmitted
    by_service = {job["service_id"]: job for job in created}
    assert by_service[service_of(emulator, "churn")]["status"] == "Finished"
    assert by_service[service_of(emulator, "energy")]["status"] == "Cancelled"
    assert route_count(emulator, "bes.submit") == 3

    # The trigger cancels the job at its deadline: measure it on the service's own clock. A restarted
    # triggerer that came up after the deadline cancels it at once; a deadline reset by the restart
    # would fire HUNG_JOB_TIMEOUT after the restart (at least 15 s after either).
    energy = service_of(emulator, "energy")
    submit = next(r for r in requests_log(emulator, "bes.submit") if energy in r["path"])
    cancel = next(r for r in requests_log(emulator, "bes.delete") if energy in r["path"])
    submitted_at = datetime.fromisoformat(submit["time"])
    waited = (datetime.fromisoformat(cancel["time"]) - submitted_at).total_seconds()
    resumed_at = min(
        requests_on_job_since(emulator, "bes.status", hung_job, killed_at)
        + requests_on_job_since(emulator, "bes.delete", hung_job, killed_at)
    )
    resumed = (resumed_at - submitted_at).total_seconds()
    assert HUNG_JOB_TIMEOUT - 1 <= waited <= max(HUNG_JOB_TIMEOUT, resumed) + 10, (
        f"job cancelled {waited:.1f}s after submission, its trigger resumed after {resumed:.1f}s"
    )
    log = cluster.task_log("pf_triggerer_restart", run_id, "train_hung", 1)
    assert "did not end within job_timeout" in log

    # The task the triggerer started: one job, one try, never on a worker; the restarted trigger
    # found its job in the claim, and the evaluation read the XCom the trigger set.
    assert cluster.wait_for_run("pf_start_in_triggerer", started_run, timeout=120) == "success"
    train = cluster.task_instance("pf_start_in_triggerer", started_run, "train")
    assert train["try_number"] == 1, train
    assert train["hostname"] in (None, ""), f"a worker ran the task: {train}"
    assert job_status(emulator, started_job) == "Finished"
    log = cluster.task_log("pf_start_in_triggerer", started_run, "train", 1)
    assert f"Reattaching to BES job {started_job} (" in log
    assert cluster.task_instance("pf_start_in_triggerer", started_run, "evaluate")["state"] == "success"


def test_marking_a_deferred_task_failed_through_the_api_cancels_its_job(
    cluster: AirflowCluster, fresh_emulator: RunningEmulator
):
    emulator = fresh_emulator
    job_fault(emulator, "hang", service_id=service_of(emulator, "churn"))
    known = job_ids(emulator)
    run_id = trigger(cluster, "pf_mark_failed")
    cluster.wait_for_task_state("pf_mark_failed", run_id, "train", ["deferred"], timeout=120)
    job = wait_until(lambda: [j for j in new_jobs(emulator, known) if j["status"] == "Running"], "the job")[0]
    wait_until_trigger_runs(cluster, "pf_mark_failed", run_id, "train")

    cluster.set_task_state("pf_mark_failed", run_id, "train", "failed")

    wait_until(lambda: job_status(emulator, job["id"]) == "Cancelled", "the job to be cancelled", timeout=60)
    assert route_count(emulator, "bes.delete") == 1
    assert cluster.wait_for_run("pf_mark_failed", run_id, timeout=60) == "failed"
    assert len(new_jobs(emulator, known)) == 1


def test_clearing_a_deferred_task_through_the_api_starts_it_over_with_one_new_job_even_if_the_triggerer_lags(
    cluster: AirflowCluster, fresh_emulator: RunningEmulator
):
    """Clearing a deferred task cancels its job through the trigger's ``on_kill``, but only once the
    triggerer notices the clear: a busy triggerer lets the rerun start first. The rerun sees the run's
    clear count moved past its job's record, so it cancels that job itself rather than follow it. The
    triggerer is held back here so that the rerun always comes first."""
    emulator = fresh_emulator
    job_fault(emulator, "hang", service_id=service_of(emulator, "churn"), count=1)
    known = job_ids(emulator)
    run_id = trigger(cluster, "pf_clear")
    cluster.wait_for_task_state("pf_clear", run_id, "train", ["deferred"], timeout=120)
    first = wait_until(lambda: [j for j in new_jobs(emulator, known) if j["status"] == "Running"], "the job")[0]
    wait_until_trigger_runs(cluster, "pf_clear", run_id, "train")

    with cluster.paused_component("triggerer"):
        cluster.clear_task("pf_clear", run_id, "train")  # what the UI's "Clear" does
        wait_until(lambda: job_status(emulator, first["id"]) == "Cancelled", "the rerun to cancel the job", timeout=60)
        # The new job is short: the rerun follows it to its end without the (held) triggerer.
        assert cluster.wait_for_run("pf_clear", run_id, timeout=120) == "success"

    created = new_jobs(emulator, known)
    assert [j["id"] for j in created if j["id"] != first["id"]] and len(created) == 2, created
    assert job_status(emulator, created[-1]["id"]) == "Finished"
    assert cluster.task_instance("pf_clear", run_id, "train")["try_number"] == 2
    log = cluster.task_log("pf_clear", run_id, "train", 2)
    assert f"The task was cleared since BES job {first['id']} was submitted (Running): cancelling it" in log


@pytest.mark.timeout(600)
def test_scheduler_killed_during_a_promotion_and_restarted_completes_without_double_promotion(
    cluster: AirflowCluster, fresh_emulator: RunningEmulator, blob_service: Any, model_id: str
):
    """The run the scheduler itself made for the latest interval (the DAG is unpaused with catchup
    off) waits for its data; the data lands, and the scheduler dies while a PATCH is in flight."""
    from azureml_retrain.ledger import PromotionLedger
    from emulator.datasets import generate_csv

    emulator = fresh_emulator
    dag_id = f"retrain_{model_id}"
    config = fast_churn_config(model_id)
    runs = wait_until(lambda: cluster.api("GET", f"dags/{dag_id}/dagRuns")["dag_runs"], "the scheduled run")
    (run,) = runs
    assert run["run_type"] == "scheduled", run
    run_id = run["dag_run_id"]
    window_start = datetime.fromisoformat(run["data_interval_start"])

    endpoints = [target["endpoint_name"] for target in config["targets"]]
    before = {name: endpoint_model(emulator, name) for name in endpoints}
    known = job_ids(emulator)
    # Each PATCH is held for a while after the service received it: the kill lands mid-promotion.
    held = emulator.admin(
        "POST",
        "faults",
        json={"route": "mgmt.endpoint.patch", "action": {"kind": "delay", "delay_seconds": 6}, "count": 2},
    ).json()
    data = blob_service.get_container_client(DATA_CONTAINER)
    if not data.exists():
        data.create_container()
    folder = f"{model_id}/{window_start:%Y-%m-%d}"
    data.upload_blob(f"{folder}/part-0.csv", generate_csv("churn", rows=400, window=1, seed=1).encode())
    data.upload_blob(f"{folder}/_SUCCESS", b"")

    cluster.wait_for_task_state(dag_id, run_id, "promote_classic_endpoints", ["running"], timeout=300, map_index=0)
    # A PATCH has reached the service and is held there (for 6 s, against the moment this takes).
    wait_until(lambda: patch_held(emulator, held["id"]), "a PATCH to reach the service", timeout=300, interval=0.1)
    cluster.kill_component("scheduler")  # with its LocalExecutor workers: the whole process group
    time.sleep(3)
    cluster.start_component("scheduler")

    assert cluster.wait_for_run(dag_id, run_id, timeout=420) == "success", cluster.task_instances(dag_id, run_id)
    created = new_jobs(emulator, known)
    assert len(created) == 1, created
    assert route_count(emulator, "bes.submit") == 1

    patches = [r for r in requests_log(emulator, "mgmt.endpoint.patch") if r["status"] == 200]
    per_endpoint = {name: sum(1 for r in patches if r["path"].endswith(f"/endpoints/{name}")) for name in endpoints}
    assert per_endpoint == dict.fromkeys(endpoints, 1), per_endpoint
    ledger = PromotionLedger("wasb_default", config["ledger_container"], lock_timeout=30)
    for target, name in zip(config["targets"], endpoints, strict=True):
        serving = endpoint_model(emulator, name)
        assert serving != before[name], f"{name} still serves its old model"
        records = ledger.records(target["name"])
        promotions = [r for r in records if r.kind == "promotion"]
        assert len(promotions) == 1, records
        assert serving is not None and promotions[0].model_uri.split("?")[0] == serving


def patch_held(emulator: RunningEmulator, rule_id: str) -> bool:
    rules = emulator.admin("GET", "faults").json()["rules"]
    return any(rule["id"] == rule_id and rule["matched"] > 0 for rule in rules)


# --- and what that left behind ------------------------------------------------------------------


def test_no_secret_in_any_log_or_table_of_the_installation_after_the_process_faults(
    cluster: AirflowCluster, emulator_session: RunningEmulator
):
    """Runs last in this module: task logs (each with its trigger's lines), the triggerer's and every
    component's output, the emulator's log and every table of the cluster's metadata DB."""
    secrets = emulator_secrets(emulator_session) | result_sas_signatures(emulator_session)
    places: dict[str, str] = {}
    trigger_sections = 0
    for path in sorted(cluster.log_dir.rglob("*")):
        if path.is_file():
            text = path.read_text(errors="replace")
            places[str(path.relative_to(cluster.log_dir))] = text
            trigger_sections += "BesJobTrigger" in text or "BlobArrivalTrigger" in text
    assert trigger_sections >= 3, "the scan saw no trigger log lines"
    places["metadata DB"] = sqlite_dump(cluster.home / "airflow.db")
    assert "bes_job_id" in places["metadata DB"]
    places["emulator log"] = emulator_session.log_path.read_text(errors="replace")
    assert_no_secret(secrets, **places)


def sqlite_dump(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return "\n".join(db.iterdump())
