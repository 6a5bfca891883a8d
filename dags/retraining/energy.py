"""The Airflow DAG of the retraining config with this file's name (`churn.py` builds `churn.yaml`).

Every config has a copy of this file: Airflow keeps parse errors per file, so a broken config stops
only its own model's DAG. To add a model, copy a config and this file under the model's name.
"""

from __future__ import annotations

from azureml_retrain.factory import retraining_dag

dag = retraining_dag(__file__)
