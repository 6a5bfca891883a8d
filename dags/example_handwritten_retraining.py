"""
### A retraining DAG written by hand, from the package's building blocks

The same flow as a config's DAG, without the factory: wait for a window's data, train through BES,
judge the model, promote it to one classic endpoint. Copy it when a config cannot say what you
need. Created paused: unpause it to let it run on its schedule.

- **Windows are real data intervals** because the schedule is a `CronDataIntervalTimetable`
  (Airflow 3's default cron timetable gives zero-length intervals). A manual run has no logical
  date: give it a `window` (`<start>/<end>`, e.g. `2026-11-20/2026-11-21`) in its conf, or it takes
  the schedule's latest complete interval.
- **The sensor's result feeds `inputs`**: it returns the exact blobs it accepted and the window, and
  `training_input` turns them into the BES input (one file per window here; the config DAGs join
  several into one staged input) and the window the ledger records.
- **Outputs go to a path no other run uses** (the run id is in it), so nothing is overwritten; the
  operator creates the outputs' container if it is missing.
- **Promotion goes through the ledger** (`ledger_container`): a lock, a compare-and-set against what
  the target served, the no-demotion guard, and a record `rollback_model` style tools can read.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, task

from azureml_retrain.factory import window_param
from azureml_retrain.operators import EvaluateModelOperator, PatchEndpointOperator, SubmitBesJobOperator
from azureml_retrain.sensors import BlobArrivalSensor

# The local emulator's predictive churn service (change it, and the connections, for your workspace).
PREDICTIVE_SERVICE_ID = "3d2a6c9f1d4b4a8c0e3f5d7b9c1a2e4f"
OUTPUT_FOLDER = "models/handwritten/{{ run_id | replace(':', '') | replace('+', '') }}"

with DAG(
    dag_id="example_handwritten_retraining",
    description="Retrain the churn model and promote it to one endpoint, wired by hand.",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 4 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,
    max_active_runs=1,
    tags=["azureml", "retraining", "example"],
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    # The config DAGs' window param, which the sensor reads: an incomplete window is refused at trigger time.
    params={"window": window_param()},
) as dag:
    arrival = BlobArrivalSensor(
        task_id="wait_for_data",
        container_name="training-data",
        prefix="handwritten/{window_start:%Y-%m-%d}/",
        pattern="*.csv",
        marker="_SUCCESS",
        poke_interval=30,
        timeout=12 * 3600,
    )

    @task(multiple_outputs=True)
    def training_input(accepted: dict[str, Any]) -> dict[str, Any]:
        """The BES inputs (the one blob the sensor accepted, as ``container/name``) and the window,
        each its own XCom key."""
        if len(accepted["blobs"]) != 1:
            raise ValueError(f"expected one training file in {accepted['prefix']}, got {len(accepted['blobs'])}")
        blob = accepted["blobs"][0]["name"]
        return {"inputs": {"input1": f"{accepted['container']}/{blob}"}, "window": accepted["window"]}

    prepared = training_input(arrival.output)
    train = SubmitBesJobOperator(
        task_id="train",
        azureml_conn_id="azureml_churn_training",
        inputs=prepared["inputs"],
        outputs={
            "output1": f"{OUTPUT_FOLDER}/model.ilearner",
            "output2": f"{OUTPUT_FOLDER}/evaluation.csv",
        },
        global_parameters={"Number of trees": 60, "Learning rate": 0.2},
    )
    # Gate: a rejected model fails this task (without retries), so nothing downstream promotes.
    evaluate = EvaluateModelOperator(
        task_id="evaluate",
        evaluation_results=train.output,
        rules={"metric": "AUC", "threshold": 0.7, "guards": [{"metric": "Accuracy", "min": 0.6}]},
        fail_on_reject=True,
    )
    promote = PatchEndpointOperator(
        task_id="promote",
        web_service_id=PREDICTIVE_SERVICE_ID,
        endpoint_name="handwritten",
        create_endpoint=True,
        model=train.output,
        target_name="churn-handwritten",
        ledger_container="model-ledger",
        window=prepared["window"],
        metrics=evaluate.output,
        smoke_test_rows=[{"Tenure": 3, "MonthlyCharges": 95.5, "SupportCalls": 6, "ContractMonths": 1, "Age": 24}],
    )
    evaluate >> promote
