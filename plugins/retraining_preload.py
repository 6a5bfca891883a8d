"""Loads the retraining DAG factory, and what it builds DAGs from, wherever Airflow loads plugins.

Every Airflow component that runs as a job (the DAG processor, the scheduler, the triggerer) loads
the plugins folder once as it starts. In the DAG processor that process is the manager, which forks
a child for every parse of a DAG file: a module the manager has imported, no child imports again.
So a parse of ``retraining_dags.py`` does not pay the package's import each time, as Airflow spares
the ``airflow.*`` modules a DAG file names (``parsing_pre_import_modules``), which this package is
not; and it inherits what the factory builds once per parse whatever the configs. As for any
plugin, a change to the package's code takes effect when the component restarts.

No plugin class: the module is all there is (the plugins manager imports every file here).
"""

from __future__ import annotations

import azureml_retrain.sensors  # noqa: F401  (the factory imports it when it builds a DAG)
from azureml_retrain.factory import warm_parse_caches

warm_parse_caches()
