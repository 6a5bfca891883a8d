"""Two triggerers sharing the load under a real Airflow (separate scheduler, dag-processor, api-server
and two triggerers; LocalExecutor), against the emulator and Azurite: one is SIGKILLed (its whole
process tree) while both hold BES jobs, deferred from a worker and started in the triggerer
(``start_from_trigger``). The survivor takes its triggers over once the dead one's heartbeat is older
than ``[triggerer] triggerer_health_check_threshold``; every job was submitted once, no task took a
second try, and every run succeeds. And a triggerer only taken for dead (SIGSTOPped past the
threshold) that goes on again drops the triggers it lost without cancelling their jobs.

Which triggerer holds which trigger is forced, not left to timing: the first triggerer's capacity is
one run's triggers, and the second starts once the first holds a whole run, so it gets the next run.
The emulator holds every job Running until the test releases it, so the kill lands mid-job however
slow the machine is.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.cluster import AirflowCluster
from devtools.services import LocalPorts
from support.clusters import running_cluster, triggerer_of
from support.emulator import RunningEmulator
from support.held_jobs import (
    job_ids,
    job_output,
    jobs_per_output,
    new_jobs,
    release_once_read_since,
    requests_on_job_since,
    service_of,
    upload_training_inputs,
)
from support.retrain import job_fault, requests_log, route_count
from support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

CONTAINER = "triggerer-failover"
DAG_ID = "tf_two_triggerers"
# One run defers this many tasks: "started" (in the triggerer) and two mapped "deferred" (from a worker).
TRIGGERS_PER_RUN = 3
# A triggerer whose heartbeat is older than this is dead to the other (Airflow's default: 30 s). Not
# lower: a live triggerer that a loaded machine holds back that long would lose its triggers too.
HEALTH_CHECK_THRESHOLD = 15
# From the kill to the survivor holding every trigger: the threshold, one heartbeat interval, and
# room for the survivor's loop on a busy machine.
TAKEOVER_BOUND = HEALTH_CHECK_THRESHOLD + 45
# What BesJobTrigger.on_kill logs when it leaves the job of a still-deferred task running.
KEPT_RUNNING = "not cancelling it: the task is still deferred"

FAILOVER_DAG = textwrap.dedent(
    """
    from __future__ import annotations

    from datetime import datetime, timedelta

    from airflow.sdk import DAG

    from azureml_retrain.operators import SubmitBesJobOperator

    FOLDER = "{container}/{{{{ dag_run.conf['tag'] }}}}"
    TRAINING = {{
        "inputs": {{"input1": "{container}/input/churn.csv"}},
        "azureml_conn_id": "azureml_churn_training",
        "poll_interval": 1,
        "max_poll_interval": 2,
    }}


    def outputs(name):
        return {{"output1": f"{{FOLDER}}/{{name}}/model.ilearner", "output2": f"{{FOLDER}}/{{name}}/evaluation.csv"}}


    with DAG(
        "{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["tests"],
        # A task that failed over badly would show as a second try, not as a failed run.
        default_args={{"owner": "tests", "retries": 1, "retry_delay": timedelta(seconds=1)}},
        doc_md="Triggerer failover test DAG.",
    ):
        SubmitBesJobOperator(task_id="started", outputs=outputs("started"), start_from_trigger=True, **TRAINING)
        SubmitBesJobOperator.partial(task_id="deferred", deferrable=True, defer_after=0, **TRAINING).expand(
            outputs=[outputs(f"deferred-{{index}}") for index in range(2)]
        )
    """
)


@pytest.fixture(scope="module")
def cluster(
    emulator_session: RunningEmulator,
    blob_service: Any,
    local_ports: LocalPorts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowCluster]:
    upload_training_inputs(blob_service, CONTAINER)
    home = tmp_path_factory.mktemp("failover")
    dags = home / "dags"
    dags.mkdir()
    (dags / "failover_dag.py").write_text(FAILOVER_DAG.format(container=CONTAINER, dag_id=DAG_ID))
    cluster = AirflowCluster(
        home=home / "airflow",
        ports=local_ports,
        dags_folder=dags,
        settings={"AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD)},
        # The first triggerer holds one run's triggers and no more (the second one gets the default).
        component_env={"triggerer": {"AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERS_PER_RUN)}},
    )
    with running_cluster(cluster, [DAG_ID], "triggerer-failover-logs"):
        yield cluster


def holders(cluster: AirflowCluster, run_id: str) -> dict[str, int | None]:
    """Task (``task_id[map_index]``) → job id of the triggerer holding its trigger (None: none)."""
    return {f"{ti['task_id']}[{ti['map_index']}]": triggerer_of(ti) for ti in cluster.task_instances(DAG_ID, run_id)}


def held_by_one(cluster: AirflowCluster, run_id: str) -> int | None:
    """The triggerer holding every trigger of the run, once one does."""
    held = holders(cluster, run_id)
    owners = set(held.values())
    if len(held) == TRIGGERS_PER_RUN and len(owners) == 1 and None not in owners:
        return owners.pop()
    return None


def last_heartbeat(cluster: AirflowCluster, job_id: int) -> datetime:
    triggerers = cluster.api("GET", "jobs", params={"job_type": "TriggererJob", "limit": 100})["jobs"]
    return datetime.fromisoformat(next(job for job in triggerers if job["id"] == job_id)["latest_heartbeat"])


def test_killed_triggerer_hands_its_triggers_to_the_other_and_every_job_runs_once(
    cluster: AirflowCluster, fresh_emulator: RunningEmulator
):
    emulator = fresh_emulator
    job_fault(emulator, "hang", service_id=service_of(emulator, "churn"))  # every job: until released
    known = job_ids(emulator)

    first_tag = uuid.uuid4().hex[:10]
    first_run = cluster.trigger(DAG_ID, conf={"tag": first_tag})
    first = wait_until(lambda: held_by_one(cluster, first_run), "the first triggerer to hold the first run")
    # Full now: the next run's triggers can only go to the second triggerer.
    cluster.start_triggerer("triggerer-2", env={"AIRFLOW__TRIGGERER__CAPACITY": "1000"})
    second_run = cluster.trigger(DAG_ID, conf={"tag": uuid.uuid4().hex[:10]})
    second = wait_until(lambda: held_by_one(cluster, second_run), "the second triggerer to hold the second run")
    assert second != first
    assert set(holders(cluster, first_run).values()) == {first}, "the first run moved before the kill"
    running = wait_until(
        lambda: (
            (created := new_jobs(emulator, known))
            and len(created) == 2 * TRIGGERS_PER_RUN
            and all(job["status"] == "Running" for job in created)
            and created
        ),
        "every job to run",
    )

    cluster.kill_component("triggerer", tree=True)
    killed_at = datetime.now(UTC)
    wait_until(
        lambda: set(holders(cluster, first_run).values()) == {second},
        "the surviving triggerer to take over the dead one's triggers",
        timeout=TAKEOVER_BOUND,
    )
    # Not before the dead one's last heartbeat was older than the threshold: the health check moved them.
    moved_after = datetime.now(UTC) - last_heartbeat(cluster, first)
    assert moved_after >= timedelta(seconds=HEALTH_CHECK_THRESHOLD), moved_after
    assert set(holders(cluster, second_run).values()) == {second}

    # The dead triggerer's jobs go on once the survivor has polled them: their triggers run there now.
    for job in running:
        if f"/{CONTAINER}/{first_tag}/" in job_output(emulator, job["id"]):
            release_once_read_since(emulator, job["id"], killed_at, f"the survivor to poll job {job['id']}")
        else:
            emulator.admin("POST", f"jobs/{job['id']}/release")

    for run_id in (first_run, second_run):
        assert cluster.wait_for_run(DAG_ID, run_id, timeout=180) == "success", cluster.task_instances(DAG_ID, run_id)
        for ti in cluster.task_instances(DAG_ID, run_id):
            assert (ti["state"], ti["try_number"]) == ("success", 1), ti
    created = new_jobs(emulator, known)
    assert {job["id"] for job in created} == {job["id"] for job in running}, "a job was submitted after the kill"
    per_task = jobs_per_output(emulator, [job["id"] for job in created])
    assert len(per_task) == 2 * TRIGGERS_PER_RUN and set(per_task.values()) == {1}, per_task
    assert route_count(emulator, "bes.submit") == 2 * TRIGGERS_PER_RUN
    assert all(job["status"] == "Finished" for job in created), created
    # The task the dead triggerer had started found its job in its claim instead of submitting again.
    started = cluster.task_log(DAG_ID, first_run, "started", 1)
    assert started.count("Submitting BES job") == 1 and "Reattaching to BES job" in started, started


def test_a_triggerer_taken_for_dead_that_comes_back_leaves_the_jobs_it_lost_running(
    cluster: AirflowCluster, fresh_emulator: RunningEmulator
):
    """A live triggerer held back past the threshold (SIGSTOP: a stopped container, a long pause)
    loses its triggers to the other; when it goes on, Airflow 3.3 cancels them there and calls their
    ``on_kill`` as if a user had killed the tasks (apache/airflow#73454). The tasks are still
    deferred, so their jobs must go on under the new owner, not be cancelled and submitted again."""
    emulator = fresh_emulator
    job_fault(emulator, "hang", service_id=service_of(emulator, "churn"))
    known = job_ids(emulator)
    # Only the second triggerer runs, as the first test leaves it (and whatever that test's end was).
    if "triggerer" in cluster.processes:
        cluster.stop_component("triggerer")
    if "triggerer-2" not in cluster.processes:
        cluster.start_triggerer("triggerer-2", env={"AIRFLOW__TRIGGERER__CAPACITY": "1000"})

    run_id = cluster.trigger(DAG_ID, conf={"tag": uuid.uuid4().hex[:10]})
    held_back = wait_until(lambda: held_by_one(cluster, run_id), "a triggerer to hold the run")
    running = wait_until(
        lambda: (
            (created := new_jobs(emulator, known))
            and len(created) == TRIGGERS_PER_RUN
            and all(job["status"] == "Running" for job in created)
            and created
        ),
        "every job to run",
    )
    cluster.start_component("triggerer")  # capacity for exactly this run

    with cluster.paused_component("triggerer-2"):
        taker = wait_until(
            lambda: (owner := held_by_one(cluster, run_id)) != held_back and owner,
            "the other triggerer to take the held-back one's triggers",
            timeout=TAKEOVER_BOUND,
        )
        moved_at = datetime.now(UTC)
        for job in running:
            wait_until(
                lambda job_id=job["id"]: requests_on_job_since(emulator, "bes.status", job_id, moved_at),
                f"the new owner to poll job {job['id']}",
            )

    # Back, the held-back triggerer drops the triggers it lost and calls their on_kill: each says so.
    def cancelled() -> str | None:
        deletes = requests_log(emulator, "bes.delete")
        return f"jobs cancelled: {deletes}" if deletes else None

    for ti in cluster.task_instances(DAG_ID, run_id):
        wait_until(
            lambda ti=ti: KEPT_RUNNING in cluster.task_log(DAG_ID, run_id, ti["task_id"], 1, ti["map_index"]),
            f"{ti['task_id']}[{ti['map_index']}]'s trigger to be dropped by the held-back triggerer",
            abort=cancelled,
        )
    assert held_by_one(cluster, run_id) == taker
    for job in running:
        emulator.admin("POST", f"jobs/{job['id']}/release")

    assert cluster.wait_for_run(DAG_ID, run_id, timeout=180) == "success", cluster.task_instances(DAG_ID, run_id)
    for ti in cluster.task_instances(DAG_ID, run_id):
        assert (ti["state"], ti["try_number"]) == ("success", 1), ti
    created = new_jobs(emulator, known)
    assert {job["id"] for job in created} == {job["id"] for job in running}, "a job was submitted again"
    assert route_count(emulator, "bes.delete") == 0
