"""
### Bench: retraining DAGs from copies of the shipped configs

One Airflow DAG per config in `bench_retraining/` (written by the benchmarks), built by the project's
factory exactly as the shipped DAG file (`dags/retraining_dags.py`) builds its own.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import get_parsing_context

from azureml_retrain.config import load_configs
from azureml_retrain.factory import build_dag

CONFIGS = Path(__file__).parent / "bench_retraining"
# A task's start-up builds only its own DAG.
WANTED = get_parsing_context().dag_id

for _config in load_configs(CONFIGS) if CONFIGS.is_dir() else []:
    if WANTED in (None, _config.dag_id):
        globals()[_config.dag_id] = build_dag(_config)
