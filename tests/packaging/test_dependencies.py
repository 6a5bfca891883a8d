"""Every third-party module the code imports is declared, where the code is installed from:

* plugins/ (the azureml-retrain distribution) in plugins/pyproject.toml, and in requirements.in,
  which the project's lock is resolved from;
* dags/ and devtools/ in requirements.in (devtools may also use the dev and emulator sets);
* emulator/ in emulator/requirements.in (its own image);
* tests/ in any of the sets.

Imports inside functions and under ``if TYPE_CHECKING`` count: the module is parsed, never imported.
A module is mapped to its distribution by the installed distributions' file lists (namespace
packages such as ``azure`` and ``airflow.providers`` are shared by several).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

from devtools.services import ROOT

FIRST_PARTY = {"azureml_retrain", "emulator", "devtools", "support", "dags", "model_history_plugin", "ui"}
# apache-airflow is a meta-distribution: the modules are in these, which it requires exactly.
PROVIDED_BY = {"apache-airflow-core": "apache-airflow", "apache-airflow-task-sdk": "apache-airflow"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(line: str) -> str | None:
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return _canonical(match.group(0)) if match else None


def _requirements_in(*names: str) -> set[str]:
    declared = set()
    for name in names:
        for line in (ROOT / name).read_text().splitlines():
            if requirement := _requirement_name(line):
                declared.add(requirement)
    return declared


def _distribution_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "plugins" / "pyproject.toml").read_text())["project"]
    return {name for dep in project["dependencies"] if (name := _requirement_name(dep))}


RUNTIME = _requirements_in("requirements.in")
EMULATOR = _requirements_in("emulator/requirements.in")
DEV = _requirements_in("requirements-dev.in")
DISTRIBUTION = _distribution_dependencies()


def _imports(path: Path) -> Iterable[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@cache
def _files_by_distribution() -> dict[str, set[str]]:
    """Distribution → the module paths it installs (``a/b/c.py``, ``a/b/__init__.py``)."""
    files: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        names = {str(f) for f in dist.files or () if str(f).endswith(".py")}
        files.setdefault(_canonical(dist.metadata["Name"]), set()).update(names)
    return files


@cache
def _packages_distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@cache
def distribution_of(module: str) -> str | None:
    """The distribution that installs ``module`` (or its nearest installed parent); None if first-party
    or standard library."""
    top = module.partition(".")[0]
    if top in FIRST_PARTY or top in sys.stdlib_module_names or top == "__future__":
        return None
    candidates = _packages_distributions().get(top)
    if not candidates:
        raise AssertionError(f"{module}: no installed distribution provides it")
    candidates = sorted({_canonical(c) for c in candidates})
    if len(candidates) > 1:
        parts = module.split(".")
        files = _files_by_distribution()
        for depth in range(len(parts), 0, -1):
            stem = "/".join(parts[:depth])
            owners = [c for c in candidates if {f"{stem}.py", f"{stem}/__init__.py"} & files.get(c, set())]
            if len(owners) == 1:
                return PROVIDED_BY.get(owners[0], owners[0])
        raise AssertionError(f"{module}: provided by several distributions {candidates}")
    return PROVIDED_BY.get(candidates[0], candidates[0])


def _undeclared(sources: str, declared: set[str]) -> list[str]:
    missing = set()
    for path in sorted((ROOT / sources).rglob("*.py")):
        for module in _imports(path):
            distribution = distribution_of(module)
            if distribution is not None and distribution not in declared:
                missing.add(f"{path.relative_to(ROOT)}: {module} ({distribution})")
    return sorted(missing)


@pytest.mark.parametrize(
    ("sources", "declared"),
    [
        ("plugins", DISTRIBUTION),
        ("plugins", RUNTIME),
        ("dags", RUNTIME),
        ("devtools", RUNTIME | DEV | EMULATOR),
        ("emulator", EMULATOR),
        ("tests", RUNTIME | DEV | EMULATOR | DISTRIBUTION),
    ],
    ids=["plugins-distribution", "plugins-lock", "dags", "devtools", "emulator", "tests"],
)
def test_third_party_imports_are_declared(sources, declared):
    assert _undeclared(sources, declared) == []


def test_distribution_dependencies_are_in_the_lock():
    """The project's venv installs the package with --no-deps: its lock must carry them all."""
    assert sorted(DISTRIBUTION - RUNTIME) == []


def test_mapping_resolves_namespace_packages():
    assert distribution_of("azure.storage.blob.aio") == "azure-storage-blob"
    assert distribution_of("azure.mgmt.core.polling.arm_polling") == "azure-mgmt-core"
    assert distribution_of("airflow.providers.microsoft.azure.hooks.wasb") == "apache-airflow-providers-microsoft-azure"
    assert distribution_of("airflow.sdk") == "apache-airflow"
    assert distribution_of("yaml") == "pyyaml"
    assert distribution_of("json") is None
