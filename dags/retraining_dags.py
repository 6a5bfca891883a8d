"""
### Retraining DAGs

One DAG per config file in `dags/retraining/` (`retrain_<model>`), built by
`azureml_retrain.factory`. To retrain another model, add a config there.

Parsing reads only those small config files; no service is contacted at import time.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from azureml_retrain.factory import build_dags

retraining_dags: dict[str, DAG] = build_dags(Path(__file__).parent / "retraining")
globals().update(retraining_dags)
