"""One model's broken config stays with that model, under the real DAG processor and scheduler.

Two models, A and B, each a config in the DAGs folder's ``retraining/`` beside the project's two
retraining DAG files. A run of A is in flight (its BES job held Running by the emulator) when B's
config gets a misspelt field: the config-errors file becomes an import error naming B's config, the
field and the fix, and B's DAG goes stale; A's DAG keeps being parsed without an error, A's run
completes, and nothing else is reported broken. Fixing B's config brings B back.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster import AirflowCluster
from support.dags import install_retraining_config
from support.emulator import RunningEmulator
from support.retrain import job_fault, jobs
from support.retraining import DATA_CONTAINER, shipped_config_data
from support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(900)]

WINDOW = datetime(2026, 11, 20, tzinfo=UTC)


def model_config(model: str) -> dict[str, Any]:
    """The shipped churn config under another name, with its own data folder and ledger."""
    data = copy.deepcopy(shipped_config_data("churn"))
    data["model"] = model
    data["data"] |= {"prefix": f"{model}/{{window_start:%Y-%m-%d}}/", "poke_interval_seconds": 1}
    data["outputs"]["prefix"] = model
    data["ledger_container"] = f"ledger-{model.replace('_', '-')}"
    data["training"]["poll_interval_seconds"] = 1
    data["retries"] = 0
    # The scheduler's own run of the latest interval waits for data that never lands: it must not
    # hold the manual run back.
    data["max_active_runs"] = 3
    for target in data["targets"]:
        target["name"] = f"{model.replace('_', '-')}-{target['endpoint_name']}"
    return data


class Models:
    def __init__(self, cluster: AirflowCluster, dags: Path, a: str, b: str) -> None:
        self.cluster, self.dags, self.a, self.b = cluster, dags, a, b

    def dag(self, model: str) -> dict[str, Any]:
        return dict(self.cluster.api("GET", f"dags/retrain_{model}"))

    def import_errors(self) -> dict[str, str]:
        errors = self.cluster.api("GET", "importErrors")["import_errors"]
        return {str(e["filename"]): str(e["stack_trace"]) for e in errors}


@pytest.fixture(scope="module")
def models(
    azurite: str, emulator_session: RunningEmulator, blob_service: Any, local_ports: Any, tmp_path_factory: Any
) -> Iterator[Models]:
    suffix = uuid.uuid4().hex[:6]
    a, b = f"iso_a_{suffix}", f"iso_b_{suffix}"
    home = tmp_path_factory.mktemp("isolation")
    dags = home / "dags"
    dags.mkdir()
    for model in (a, b):
        install_retraining_config(dags, model_config(model))
    cluster = AirflowCluster(home=home / "airflow", ports=local_ports, dags_folder=dags)
    try:
        cluster.start()
        for model in (a, b):
            cluster.wait_for_dag(f"retrain_{model}")
        yield Models(cluster, dags, a, b)
    finally:
        cluster.stop()


def test_a_broken_config_stops_only_its_own_model_and_fixing_it_brings_it_back(
    models: Models, emulator_session: RunningEmulator, blob_service: Any
) -> None:
    from emulator.datasets import generate_csv

    cluster, a, b = models.cluster, models.a, models.b
    emulator = emulator_session
    training_service = emulator.classic_endpoint("training")["service_id"]
    emulator.admin("DELETE", "faults")
    # A's job runs until released below, however long breaking B takes to be noticed.
    job_fault(emulator, "hang", service_id=training_service)
    known = {job["id"] for job in jobs(emulator)}

    data = blob_service.get_container_client(DATA_CONTAINER)
    if not data.exists():
        data.create_container()
    folder = f"{a}/{WINDOW:%Y-%m-%d}"
    data.upload_blob(f"{folder}/part-0.csv", generate_csv("churn", rows=300, window=1, seed=3).encode())
    data.upload_blob(f"{folder}/_SUCCESS", b"")
    end = WINDOW + timedelta(days=1)
    run_id = cluster.trigger(f"retrain_{a}", conf={"window": f"{WINDOW:%Y-%m-%d}/{end:%Y-%m-%d}", "promote": "never"})
    cluster.wait_for_task_state(f"retrain_{a}", run_id, "train", ["deferred", "running"], timeout=240)
    (job,) = wait_until(lambda: [j for j in jobs(emulator) if j["id"] not in known], "A's BES job")

    # B's config gets a misspelt field while A's run is in flight.
    config_b = models.dags / "retraining" / f"{b}.yaml"
    good_b = config_b.read_text()
    broken = yaml.safe_load(good_b)
    broken["trainnig"] = broken.pop("training")
    config_b.write_text(yaml.safe_dump(broken, sort_keys=False))
    broken_at = datetime.now(UTC)

    errors = wait_until(models.import_errors, "B's import error", timeout=180)
    assert set(errors) == {"retraining_config_errors.py"}, errors
    message = errors["retraining_config_errors.py"]
    assert f"{b}.yaml: trainnig: not a field of a retraining config; did you mean 'training'?" in message, message
    assert f"{b}.yaml: training: Field required" in message, message
    assert a not in message, message
    wait_until(lambda: models.dag(b)["is_stale"], "B's DAG to go stale")
    # A's DAG is parsed again after B broke (the same file as B's), and stays active, without an error.
    wait_until(
        lambda: datetime.fromisoformat(models.dag(a)["last_parsed_time"]) > broken_at + timedelta(seconds=1),
        "A's DAG to be parsed again",
    )
    dag_a = models.dag(a)
    assert not dag_a["is_stale"] and not dag_a["has_import_errors"], dag_a

    emulator.admin("POST", f"jobs/{job['id']}/release")
    assert cluster.wait_for_run(f"retrain_{a}", run_id, timeout=300) == "success", cluster.task_instances(
        f"retrain_{a}", run_id
    )
    states = {t["task_id"]: t["state"] for t in cluster.task_instances(f"retrain_{a}", run_id)}
    assert states["train"] == states["evaluate"] == "success", states

    config_b.write_text(good_b)
    wait_until(lambda: not models.import_errors(), "B's import error to clear")
    wait_until(lambda: not models.dag(b)["is_stale"], "B's DAG to come back")
    assert not models.dag(a)["is_stale"]
