"""A test's own Airflow installation (:class:`devtools.cluster.AirflowCluster`) for a module."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from devtools.cluster import AirflowCluster
from devtools.services import ROOT


@contextlib.contextmanager
def running_cluster(cluster: AirflowCluster, dag_ids: Iterable[str], artifacts: str) -> Iterator[AirflowCluster]:
    """Start ``cluster``, wait until it has parsed ``dag_ids``; stop it afterwards and keep its logs
    in ``test-artifacts/<artifacts>`` (replacing an earlier session's)."""
    try:
        cluster.start()
        for dag_id in dag_ids:
            cluster.wait_for_dag(dag_id)
        yield cluster
    finally:
        cluster.stop()
        target = ROOT / "test-artifacts" / artifacts
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(cluster.log_dir, target, dirs_exist_ok=True)


def triggerer_of(task_instance: Mapping[str, Any]) -> int | None:
    """The job id of the triggerer holding the task's trigger (None: none yet), from a task instance
    of the REST API. Not its ``triggerer_job``: Airflow 3.3 fills that with the scheduler job that
    queued the task (``queued_by_job``)."""
    holder = (task_instance.get("trigger") or {}).get("triggerer_id")
    return int(holder) if holder is not None else None
