"""The DAG processor's manager loads the plugins folder as it starts, and with it the DAG factory
(``plugins/retraining_preload.py``): a parse, forked from the manager, then imports none of the
package again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devtools.services import ROOT

# Like the DAG processor's manager: optionally what its job does as it starts (the plugins load),
# then a forked child parses the retraining DAG file and reports the package modules it imported.
_MANAGER = r"""
import json, os, sys
if sys.argv[1] == "plugins":
    from airflow.listeners.listener import get_listener_manager
    get_listener_manager()
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
dags = Path(sys.argv[2])
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    before = set(sys.modules)
    bag = BundleDagBag(dag_folder=dags / "retraining_dags.py", bundle_path=dags, bundle_name="dags-folder")
    imported = sorted(m for m in set(sys.modules) - before if m.startswith("azureml_retrain"))
    report = {"imported": imported, "dags": sorted(bag.dags), "errors": bag.import_errors}
    os.write(write_end, json.dumps(report).encode())
    os._exit(0)
os.close(write_end)
with os.fdopen(read_end) as pipe:
    print(pipe.read())
os.waitpid(pid, 0)
"""


def parse_after(start: str, tmp_path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [sys.executable, "-c", _MANAGER, start, str(ROOT / "dags")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert "retrain_churn" in report["dags"]
    return report


@pytest.mark.parametrize("start", ["plugins", "bare"])
def test_a_parse_imports_the_package_only_when_the_manager_has_not(start: str, tmp_path):
    imported = parse_after(start, tmp_path)["imported"]
    if start == "plugins":
        assert imported == []
    else:  # the control: without the plugins, each parse imports the factory and what it builds from
        assert {"azureml_retrain.factory", "azureml_retrain.operators", "azureml_retrain.sensors"} <= set(imported)
