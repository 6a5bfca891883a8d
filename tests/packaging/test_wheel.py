"""The azureml-retrain wheel is a working Airflow provider on its own: built from plugins/, installed
with the dependencies it declares (resolved within the lock, requirements.txt) into a fresh
virtualenv, it is listed by ``airflow providers`` with its hooks, and every module its provider info
names imports there. Nothing of the repository is on that environment's path.

uv's cache makes the second run quick (the packages are linked from it, not downloaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from azureml_retrain import __version__
from devtools.services import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

UV = str(Path(sys.executable).parent / "uv")


def _run(*argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(UV, "build", "--wheel", "--quiet", "--out-dir", str(out), str(ROOT / "plugins"), cwd=ROOT)
    (built,) = out.glob("azureml_retrain-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh virtualenv with the wheel and what it requires; the environment to run its programs."""
    root = tmp_path_factory.mktemp("provider")
    venv = root / "venv"
    _run(UV, "venv", "--quiet", "--python", sys.executable, str(venv), cwd=root)
    python = str(venv / "bin" / "python")
    # Only the wheel's declared dependencies (the lock merely fixes their versions).
    lock = str(ROOT / "requirements.txt")
    _run(UV, "pip", "install", "--quiet", "--python", python, "-c", lock, str(wheel), cwd=root)
    home = root / "airflow-home"
    home.mkdir()
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "VIRTUAL_ENV": str(venv),
    }


def test_wheel_ships_type_information_and_provider_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "azureml_retrain/py.typed" in names
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = azureml_retrain.provider_info:get_provider_info" in entry_points
    assert f"Version: {__version__}" in metadata.splitlines()
    assert "Requires-Dist: apache-airflow>=3.3" in metadata.splitlines()


def test_airflow_lists_the_provider(installed, tmp_path):
    out = _run("airflow", "providers", "get", "azureml-retrain", "--output", "json", cwd=tmp_path, env=installed)
    (provider,) = json.loads(out[out.index("[") :])
    assert provider == {"Provider": "azureml-retrain", "Version": __version__}


def test_airflow_lists_the_hooks(installed, tmp_path):
    out = _run("airflow", "providers", "hooks", "--output", "json", cwd=tmp_path, env=installed)
    hooks = {h["connection_type"]: h for h in json.loads(out[out.index("[") :])}
    for conn_type in ("azureml_web_service", "azureml_classic_management", "azureml_resource_manager"):
        assert hooks[conn_type]["package_name"] == "azureml-retrain"
        assert hooks[conn_type]["class"].startswith("azureml_retrain.hooks.")


def test_every_module_of_the_provider_info_imports_from_the_wheel(installed, tmp_path):
    """The declared dependencies are enough: hooks, operators, sensors, triggers and links import."""
    script = """
import importlib, azureml_retrain
from azureml_retrain.provider_info import get_provider_info
assert "site-packages" in azureml_retrain.__file__, azureml_retrain.__file__
info = get_provider_info()
modules = {m for key in ("hooks", "operators", "sensors", "triggers") for e in info[key] for m in e["python-modules"]}
classes = info["extra-links"] + [c["hook-class-name"] for c in info["connection-types"]]
for name in sorted(modules):
    importlib.import_module(name)
for path in classes:
    module, _, attr = path.rpartition(".")
    getattr(importlib.import_module(module), attr)
print(len(modules) + len(classes))
"""
    out = _run("python", "-c", script, cwd=tmp_path, env=installed)
    assert int(out.split()[-1]) >= 10
