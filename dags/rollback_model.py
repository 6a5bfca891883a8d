"""
### Roll back a model

`rollback_model`: puts a serving target of any retraining config in `retraining/` back on an earlier
model from its promotion ledger. (Each config's own DAG, `retrain_<model>`, is built by the DAG file
beside it.) Parsing reads only the small config files; no service is contacted at import time.
"""

from __future__ import annotations

from pathlib import Path

# Named so that the DAG processor imports them once, in its long-lived manager, instead of in every
# parse of every DAG file (parsing_pre_import_modules): what the factory's tasks and asset need.
import airflow.providers.common.io.assets.file
import airflow.providers.standard.decorators.branch_python
import airflow.providers.standard.decorators.python  # noqa: F401

from azureml_retrain.factory import rollback_dag

dag = rollback_dag(Path(__file__).parent / "retraining")
