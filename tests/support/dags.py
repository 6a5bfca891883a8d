"""Run DAGs defined inside tests with ``dag.test()``."""

from __future__ import annotations

from typing import Any


def register_dag(dag: Any) -> None:
    """Write a DAG defined in a test to the metadata DB.

    Airflow 3.3's ``dag.test()`` runs serialized DAGs only, and looks them up in the configured
    bundles, which do not include test modules.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
        session.commit()
        bundle = next(iter(manager.get_all_dag_bundles()))
        update_dag_parsing_results_in_db(
            bundle.name, None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


RETRAINING_DAG_FILES = ("retraining_dags.py", "retraining_config_errors.py")


def install_retraining_config(dags_folder: Any, data: Any) -> Any:
    """Add a retraining config to a DAGs folder the way a user does, as ``retraining/<model>.yaml``
    (from a mapping), with the project's retraining DAG files beside that folder if they are not
    there yet. Returns the config's path."""
    import shutil
    from pathlib import Path

    import yaml

    from devtools.services import ROOT

    folder = Path(dags_folder) / "retraining"
    folder.mkdir(parents=True, exist_ok=True)
    for name in RETRAINING_DAG_FILES:
        if not (Path(dags_folder) / name).exists():
            shutil.copy(ROOT / "dags" / name, Path(dags_folder) / name)
    model = data["model"] if isinstance(data, dict) else None
    if model is None:
        raise ValueError("install_retraining_config needs a mapping with 'model'")
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
