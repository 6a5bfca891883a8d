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
