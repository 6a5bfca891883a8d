"""
### Check connections

Proves that Airflow reaches the services the retraining DAGs use: writes, reads back and deletes a
marker blob in Azure Blob Storage (Azurite locally) through the `wasb_default` connection.

Trigger it by hand after changing a connection. It changes nothing it did not create.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# Named so that the DAG processor imports it once, in its long-lived manager, instead of in every
# re-parse of this file (parsing_pre_import_modules): the @task decorator's implementation.
import airflow.providers.standard.decorators.python  # noqa: F401
import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="check_connections",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["azureml", "operations"],
    doc_md=__doc__,
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(seconds=5)},
)
def check_connections() -> None:
    @task
    def blob_storage() -> dict[str, Any]:
        from azureml_retrain.checks import check_blob_storage

        return check_blob_storage(wasb_conn_id="wasb_default")

    blob_storage()


check_connections()
