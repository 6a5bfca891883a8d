"""Process settings for every Airflow component of the deployment (Airflow's ``airflow_local_settings``).

Airflow imports this module as each of its processes starts, from ``$AIRFLOW_HOME/config`` (the
image's ``/opt/airflow/config``; the local tools put this folder on ``PYTHONPATH``).

What it sets: the garbage collector's objects are frozen (``gc.freeze``) just before every fork, and
unfrozen in the parent right after. Airflow's components fork: the triggerer its log server and its
trigger runner, the DAG processor a child for every parse of a file, a task's supervisor the task
process. A child shares its parent's memory pages until it writes to them, and the collector writes
to every object it examines: without the freeze, a child's first full collection copies nearly all
of what it inherited (the triggerer's log server then held 86 MB of its own), and every parse's
collections examine the whole of the DAG processor's heap again. Frozen objects stay out of the
child's collections (they are still freed by reference counting); the parent's collections are as
before. This is the pattern Python documents for ``gc.freeze`` and Airflow's LocalExecutor uses
when it starts its workers; the cost is that what was cyclic garbage in the parent at the fork is
never collected in the child. Measured in docs/performance.md (rows 2 and 7).
"""

from __future__ import annotations

import gc
import os

# Airflow copies every public name of this module into ``airflow.settings``: none here.
__all__: list[str] = []

os.register_at_fork(before=gc.freeze, after_in_parent=gc.unfreeze)
