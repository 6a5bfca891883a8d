"""Airflow plugin: the model history view (``azureml_retrain.history``) in the Airflow UI.

Airflow's plugins manager imports this file from the plugins folder. The FastAPI app is mounted in
the API server under ``/model-history``; the external views put it in the UI's navigation and as a
tab on each DAG's page (the UI shows both in an iframe, with the user's session).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from azureml_retrain.history.app import create_app

URL_PREFIX = "/model-history"
# The UI loads the views by absolute path, so they must include the API server's base path.
PAGE = urlsplit(conf.get("api", "base_url", fallback="") or "/").path.rstrip("/") + URL_PREFIX


class ModelHistoryPlugin(AirflowPlugin):
    name = "model_history"
    fastapi_apps = [  # noqa: RUF012  (AirflowPlugin declares these as class attributes)
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Model history"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Models",
            "href": f"{PAGE}/",
            "url_route": "model-history",
            "destination": "nav",
            "icon": f"{PAGE}/icon.svg",
            "icon_dark_mode": f"{PAGE}/icon.svg?dark=true",
        },
        {
            "name": "Model history",
            "href": PAGE + "/dags/{DAG_ID}",
            "url_route": "model-history-dag",
            "destination": "dag",
        },
    ]
