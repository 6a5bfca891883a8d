"""
### Retraining DAGs

One DAG per config file in `dags/retraining/` (`retrain_<model>`), built by
`azureml_retrain.factory`. To retrain another model, add a config there.

Parsing reads only those small config files; no service is contacted at import time.
"""

from __future__ import annotations

from pathlib import Path

# Named so that the DAG processor imports them once, in its long-lived manager, instead of in every
# re-parse of this file (parsing_pre_import_modules): what the factory's tasks and asset need.
import airflow.providers.common.io.assets.file
import airflow.providers.standard.decorators.branch_python
import airflow.providers.standard.decorators.python  # noqa: F401
from airflow.sdk import DAG

from azureml_retrain.factory import build_dags

retraining_dags: dict[str, DAG] = build_dags(Path(__file__).parent / "retraining")
globals().update(retraining_dags)
