"""Run the shipped ``retrain_churn`` DAG once with ``dag.test()``, in a process of its own.

The OpenLineage provider decides whether its listener exists when its plugin is first imported (from
the ``[openlineage]`` settings then in the environment), so a test that configures a transport runs
the DAG here, in a fresh interpreter: ``python -m support.lineage_run <logical date ISO 8601>``.
Prints ``{"state", "tasks"}`` as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime


def main(logical_date: str) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from support.dags import register_dag
    from support.retraining import CONFIG_FOLDER, task_states

    dag = DagBag(dag_folder=str(CONFIG_FOLDER.parent / "retraining_dags.py")).dags["retrain_churn"]
    register_dag(dag)
    run = dag.test(logical_date=datetime.fromisoformat(logical_date))
    # The DAG-run events go through the listener's process pool: let it finish before exiting.
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

    get_openlineage_listener().before_stopping(None)
    print(json.dumps({"state": str(run.state), "tasks": task_states(run)}))


if __name__ == "__main__":
    main(sys.argv[1])
