"""
### Retraining config errors (builds no DAG)

Reports every broken config in `retraining/` as this file's import error, naming the config file,
the field and the fix: Airflow stops scheduling every DAG of a file that fails to import, so the
errors are raised here, where no DAG lives, and `retraining_dags.py` builds every valid model.
"""

from __future__ import annotations

from pathlib import Path

from azureml_retrain.config import raise_config_errors

raise_config_errors(Path(__file__).parent / "retraining")
