"""
### Retraining DAGs

One DAG per config file in `retraining/` (`retrain_<model>`), built by `azureml_retrain.factory`,
and `rollback_model`, which puts any of their serving targets back on an earlier model. To retrain
another model, add a config there.

Each config is loaded and built on its own: a broken one is left out (and reported as the import
error of `retraining_config_errors.py`), never a reason to stop the others. Parsing reads only the
small config files; no service is contacted at import time.
"""

from __future__ import annotations

from pathlib import Path

# Named so that the DAG processor imports them once, in its long-lived manager, instead of in every
# re-parse of this file (parsing_pre_import_modules): what the factory's tasks and asset need.
import airflow.providers.common.io.assets.file
import airflow.providers.standard.decorators.branch_python
import airflow.providers.standard.decorators.python
import airflow.providers.standard.operators.empty
import airflow.sdk.bases.sensor
import airflow.triggers.base  # noqa: F401

from azureml_retrain.factory import retraining_dags

globals().update(retraining_dags(Path(__file__).parent / "retraining"))
