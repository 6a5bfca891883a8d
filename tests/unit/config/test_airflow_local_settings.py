"""config/airflow_local_settings.py: every Airflow process imports it, and its forks share the heap.

Each case runs in a fresh interpreter with a local Airflow process's environment, as Airflow's
components start: the fork hook it registers cannot be taken back in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.services import CONFIG_DIR, airflow_environment

# In the child of a fork: objects frozen, and the pages its full collection writes to (smaps).
PROBE = """
import gc, json, os, sys
import airflow.settings

def private_dirty_kb():
    with open("/proc/self/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Private_Dirty:"))

reader, writer = os.pipe()
pid = os.fork()
if pid == 0:
    frozen = gc.get_freeze_count()
    before = private_dirty_kb()
    gc.collect()
    os.write(writer, json.dumps({"frozen": frozen, "copied_kb": private_dirty_kb() - before}).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(reader, 65536))
module = sys.modules.get("airflow_local_settings")
print(json.dumps({
    "child": child,
    "parent_frozen": gc.get_freeze_count(),
    "module": getattr(module, "__file__", None),
}))
"""


def probe(tmp_path: Path, *, python_path: str | None = None) -> dict[str, Any]:
    env = {**os.environ, **airflow_environment(tmp_path / "home")}
    if python_path is not None:
        env["PYTHONPATH"] = python_path
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_airflow_imports_it_and_a_forked_child_leaves_the_inherited_heap_alone(tmp_path: Path) -> None:
    shared = probe(tmp_path)
    assert shared["module"] == str(CONFIG_DIR / "airflow_local_settings.py")
    # Everything Airflow's import made is frozen in the child, nothing in the parent after the fork.
    assert shared["child"]["frozen"] > 50_000
    assert shared["parent_frozen"] == 0

    # The same process without it: the child's full collection writes to the whole inherited heap.
    copied = probe(tmp_path, python_path="")
    assert copied["module"] is None
    assert copied["child"]["frozen"] == 0
    assert copied["child"]["copied_kb"] > 4 * max(shared["child"]["copied_kb"], 1_000), (shared, copied)
