"""
### Bench: N concurrent BES jobs

`bench_slots_deferrable_<n>_<part>`: N of the project's `SubmitBesJobOperator` tasks, started in the
triggerer (`start_from_trigger=True`, its default poll schedule), outputs templated per run, in DAGs
of a few tasks each (the triggerer receives and builds a task's whole DAG for each
trigger, so one DAG of N such tasks would cost it N copies of an N-task DAG).
`bench_slots_held_<n>`: N of the same tasks as the retraining DAGs run them: each submits and
starts its job on a worker, then defers (the triggerer follows the job); the bench holds the jobs
running with the emulator's controls while it reads the triggerer's memory.
`bench_slots_polling_<n>`: what users ran before, the Studio-generated BES sample (submit, start,
GET the status every second) in a `PythonOperator`, mapped over N jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, get_parsing_context

from azureml_retrain.operators import SubmitBesJobOperator

PARAMS: dict[str, Any] = json.loads((Path(__file__).parent / "bench_params.json").read_text()).get("worker_slots", {})
START = pendulum.datetime(2026, 1, 1, tz="UTC")
# As the project's factory does: a task's start-up builds only its own DAG.
WANTED = get_parsing_context().dag_id
RUN_FOLDER = "/{{ run_id | replace(':', '_') | replace('+', '_') }}/"


def outputs_of(mode: str, n: int) -> list[dict[str, str]]:
    folder = f"{PARAMS['container']}/{mode}-{n}"
    return [{"output1": f"{folder}/{i}/model.ilearner", "output2": f"{folder}/{i}/evaluation.csv"} for i in range(n)]


def studio_sample(outputs: dict[str, str], input_blob: str, global_parameters: dict[str, str]) -> dict[str, Any]:
    """The Studio sample's loop with the service and storage of the Airflow connections."""
    from airflow.sdk import BaseHook

    from devtools.bench.studio_sample import run_studio_sample

    service = BaseHook.get_connection(PARAMS["azureml_conn_id"])
    return run_studio_sample(
        api_location=str(service.host),
        api_key=str(service.password),
        storage_connection_string=BaseHook.get_connection("wasb_default").extra_dejson["connection_string"],
        input_blob=input_blob,
        outputs=outputs,
        global_parameters=global_parameters,
    )


def train(i: int, outputs: dict[str, str], *, start_from_trigger: bool) -> SubmitBesJobOperator:
    """Job ``i``, deferrable whatever ``[operators] default_deferrable`` says (that is what is measured)."""
    return SubmitBesJobOperator(
        task_id=f"train_{i}",
        azureml_conn_id=PARAMS["azureml_conn_id"],
        inputs={"input1": PARAMS["input"]},
        # Rendered per run (by the triggerer for start_from_trigger): each run writes (and claims) its own blobs.
        outputs={
            name: path.replace("/model", RUN_FOLDER + "model").replace("/evaluation", RUN_FOLDER + "evaluation")
            for name, path in outputs.items()
        },
        global_parameters=PARAMS["global_parameters"],
        start_from_trigger=start_from_trigger,
        deferrable=True,
        retries=0,
    )


# dag_id -> [n, first job, end]: the bench's split of N jobs into DAGs (devtools/bench/worker_slots.py).
for dag_id, (n, first, end) in PARAMS.get("deferrable_dags", {}).items():
    if WANTED not in (None, dag_id):
        continue
    with DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False, tags=["bench"]):
        for i, outputs in enumerate(outputs_of("deferrable", n)[first:end], first):
            train(i, outputs, start_from_trigger=True)

for n in PARAMS.get("held_sizes", []):
    if WANTED not in (None, f"bench_slots_held_{n}"):
        continue
    with DAG(
        dag_id=f"bench_slots_held_{n}",
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["bench"],
        max_active_tasks=n,  # every job deferred at once (the default caps a DAG's active tasks at 16)
    ):
        for i, outputs in enumerate(outputs_of("held", n)):
            train(i, outputs, start_from_trigger=False)

for n in PARAMS.get("polling_sizes", []):
    if WANTED not in (None, f"bench_slots_polling_{n}"):
        continue
    with DAG(dag_id=f"bench_slots_polling_{n}", schedule=None, start_date=START, catchup=False, tags=["bench"]):
        PythonOperator.partial(
            task_id="train",
            python_callable=studio_sample,
            op_kwargs={"input_blob": PARAMS["input"], "global_parameters": PARAMS["global_parameters"]},
            retries=0,
        ).expand(op_args=[[o] for o in outputs_of("polling", n)])
