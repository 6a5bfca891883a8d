"""EvaluateModelOperator against a real Azurite blob service, through the Azure provider's WasbHook."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pendulum
import pytest

from azureml_retrain.exceptions import EvaluationError
from azureml_retrain.operators.evaluate import DECISION_XCOM_KEY, EvaluateModelOperator
from support.dags import register_dag

pytestmark = pytest.mark.integration

BINARY_CSV = (
    "\ufeffAccuracy,Precision,Recall,F-Score,AUC,Average Log Loss,Training Log Loss\r\n"
    "0.83,0.79,0.71,0.748,0.88,0.41,37.5\r\n"
    "0.80,0.75,0.70,0.72,0.85,0.45,30.1\r\n"
)
REGRESSION_CSV = (
    "Negative Log Likelihood,Mean Absolute Error,Root Mean Squared Error,Relative Absolute Error,"
    "Relative Squared Error,Coefficient of Determination\n"
    "Infinity,2.5,3.25,0.41,0.22,0.78\n"
)


class RecordingTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.fixture(scope="module")
def container(azurite: str) -> str:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    name = f"evaluate-{uuid.uuid4().hex[:12]}"
    WasbHook(wasb_conn_id="wasb_default").create_container(name)
    return name


def upload(container: str, blob_name: str, text: str) -> None:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    WasbHook(wasb_conn_id="wasb_default").upload(container, blob_name, text.encode(), overwrite=True)


def test_binary_from_a_bes_result(container: str):
    upload(container, "job-1/evaluation.csv", BINARY_CSV)
    bes_result = {
        "job_id": "job-1",
        "outputs": {
            "output1": {"container": container, "blob_name": "job-1/model.ilearner"},
            "output2": {
                "base_location": "http://127.0.0.1/devstoreaccount1/",
                "relative_location": f"{container}/job-1/evaluation.csv",
                "container": container,
                "blob_name": "job-1/evaluation.csv",
            },
        },
    }
    op = EvaluateModelOperator(
        task_id="evaluate",
        evaluation_results=bes_result,
        rules={"metric": "auc", "min_absolute_improvement": 0.01, "guards": [{"metric": "log loss", "max": 0.6}]},
        champion_metrics={"AUC": 0.86, "Average Log Loss": 0.44},
    )
    ti = RecordingTI()
    decision = op.execute(context={"ti": ti})  # type: ignore[typeddict-item]
    assert decision["promote"] is True
    assert decision["task"] == "binary"
    assert decision["evaluation_blob"] == f"{container}/job-1/evaluation.csv"
    assert decision["challenger"]["AUC"] == 0.88  # row 0, not the "compare" row
    assert [c["rule"] for c in decision["checks"]] == ["min_absolute_improvement", "guard_max"]
    assert ti.pushed[DECISION_XCOM_KEY] == decision


def test_regression_with_infinite_nll(container: str):
    upload(container, "job-2/evaluation.csv", REGRESSION_CSV)
    op = EvaluateModelOperator(
        task_id="evaluate",
        evaluation_results={"container": container, "blob_name": "job-2/evaluation.csv"},
        rules={"metric": "rmse", "threshold": 3.0},
    )
    decision = op.execute(context={"ti": RecordingTI()})  # type: ignore[typeddict-item]
    assert decision["promote"] is False
    assert decision["task"] == "regression"
    assert decision["challenger"]["Negative Log Likelihood"] == "Infinity"
    assert decision["reason"].startswith("reject: Root Mean Squared Error 3.25 fails threshold <= 3")
    json.dumps(decision, allow_nan=False)


def test_missing_blob_names_it(container: str):
    op = EvaluateModelOperator(
        task_id="evaluate", evaluation_results=f"{container}/nope/evaluation.csv", rules={"metric": "auc"}
    )
    with pytest.raises(EvaluationError, match=f"{container}/nope/evaluation.csv: blob not found"):
        op.execute(context={"ti": RecordingTI()})  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("threshold", "ran", "skipped"), [(0.8, "promote", "keep_champion"), (0.95, "keep_champion", "promote")]
)
def test_branching_dag(container: str, airflow_db: None, threshold: float, ran: str, skipped: str):
    from airflow.models.xcom import XComModel
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Param
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    upload(container, "job-3/evaluation.csv", BINARY_CSV)
    dag_id = f"evaluate_branch_{str(threshold).replace('.', '_')}"
    with DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"rules": Param({"metric": "AUC", "threshold": threshold}, type="object")},
    ) as dag:
        evaluate = EvaluateModelOperator(
            task_id="evaluate",
            evaluation_results=f"{container}/job-3/evaluation.csv",
            rules="{{ params.rules }}",  # rendered to text: the operator reads it back
            promote_task_ids="promote",
            reject_task_ids="keep_champion",
        )
        evaluate >> [EmptyOperator(task_id="promote"), EmptyOperator(task_id="keep_champion")]

    register_dag(dag)
    run = dag.test()
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}
        decision = session.scalars(
            select(XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == "evaluate",
                XComModel.key == DECISION_XCOM_KEY,
            )
        ).one()
    assert states == {
        "evaluate": TaskInstanceState.SUCCESS,
        ran: TaskInstanceState.SUCCESS,
        skipped: TaskInstanceState.SKIPPED,
    }
    decision = json.loads(decision) if isinstance(decision, str) else decision
    assert decision["promote"] is (ran == "promote")
    assert decision["checks"][0]["threshold"] == threshold
