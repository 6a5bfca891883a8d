"""The shipped hand-written DAG (``dags/example_handwritten_retraining.py``), end to end against the
emulator and Azurite: the public building blocks chained without the factory wait for a window's
data, train, judge and promote, and the ledger records the promotion."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from azureml_retrain.ledger import PromotionLedger
from devtools.services import ROOT
from support.dags import register_dag
from support.retrain import jobs
from support.retraining import DATA_CONTAINER, endpoint_model, task_states, xcom

pytestmark = pytest.mark.integration

DAG_FILE = ROOT / "dags" / "example_handwritten_retraining.py"
DAY = datetime(2026, 11, 24, tzinfo=UTC)


def test_the_handwritten_dag_trains_judges_and_promotes(emulator: Any, blob_service: Any, airflow_db: None) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from emulator.datasets import generate_csv

    dag = DagBag(dag_folder=str(DAG_FILE)).dags["example_handwritten_retraining"]
    register_dag(dag)
    ledger = PromotionLedger("wasb_default", "model-ledger")
    target = "churn-handwritten"
    if ledger._client.exists():  # a clean ledger for the target (the session's Azurite is shared)
        for blob in ledger._client.list_blobs(name_starts_with="records/"):
            if target in blob.name:
                ledger._client.delete_blob(blob.name)
    data = blob_service.get_container_client(DATA_CONTAINER)
    if not data.exists():
        data.create_container()
    folder = f"handwritten/{DAY:%Y-%m-%d}"
    data.upload_blob(f"{folder}/part-0.csv", generate_csv("churn", rows=300, window=1, seed=7).encode(), overwrite=True)
    data.upload_blob(f"{folder}/_SUCCESS", b"", overwrite=True)
    window = f"{DAY:%Y-%m-%d}/{DAY + timedelta(days=1):%Y-%m-%d}"

    run = dag.test(logical_date=None, run_conf={"window": window, "tag": uuid.uuid4().hex})

    assert run.state == DagRunState.SUCCESS, task_states(run)
    assert [j["status"] for j in jobs(emulator)] == ["Finished"]
    trained = xcom(run, "train")
    model = trained["outputs"]["output1"]["relative_location"]
    assert model.startswith("models/handwritten/manual__") and ":" not in model
    assert xcom(run, "evaluate")["promote"] is True
    serving = endpoint_model(emulator, "handwritten")
    assert serving is not None and serving.split("?")[0].endswith(model)
    (record,) = [r for r in ledger.records(target) if r.kind == "promotion"]
    assert record.run_id == run.run_id and record.window == {
        "start": "2026-11-24T00:00:00+00:00",
        "end": "2026-11-25T00:00:00+00:00",
    }

    # rollback_model rolls a hand-written DAG's target back too: its ledger records where it is served.
    from azureml_retrain.factory import build_rollback_dag

    assert record.served_by == {
        "operator": "PatchEndpointOperator",
        "trained_model_name": None,
        "web_service_id": dag.get_task("promote").web_service_id,
        "endpoint_name": "handwritten",
        "management_conn_id": "azureml_classic_management_default",
    }
    assert record.previous_model_uri
    rollback = build_rollback_dag([])  # no config names this target
    register_dag(rollback)
    back = rollback.test(logical_date=None, run_conf={"target": target})
    assert back.state == DagRunState.SUCCESS, task_states(back)
    assert endpoint_model(emulator, "handwritten") == record.previous_model_uri
    head = ledger.records(target)[-1]
    assert (head.kind, head.model_uri, head.previous_model_uri) == ("rollback", record.previous_model_uri, serving)
