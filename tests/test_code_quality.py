"""Lint, type and configuration checks, run as part of the test suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.services import ROOT

BIN = Path(sys.executable).parent
PYTHON_SOURCES = [d for d in ("dags", "plugins", "config", "emulator", "devtools", "tests") if (ROOT / d).is_dir()]
TYPED_PACKAGES = [
    p
    for p in ("plugins/azureml_retrain", "plugins/model_history_plugin.py", "config", "emulator", "devtools")
    if (ROOT / p).exists()
]


def _run(*argv: str, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def test_ruff_lint_clean():
    result = _run(str(BIN / "ruff"), "check", *PYTHON_SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_airflow_rules_clean():
    result = _run(str(BIN / "ruff"), "check", "--select", "AIR", *PYTHON_SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean():
    result = _run(str(BIN / "ruff"), "format", "--check", *PYTHON_SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean():
    # mypy's incremental cache lives with the user's other caches, so that a fresh checkout (as in CI)
    # re-checks only what changed instead of all of Airflow (about 45 s -> 5 s). mypy validates every
    # cached module against its source, so a stale cache cannot hide an error.
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "azureml-retrain" / "mypy"
    result = _run(str(BIN / "mypy"), *TYPED_PACKAGES, env={**os.environ, "MYPY_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_matches_compose_spec():
    result = _run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_are_fully_pinned():
    for name in ("requirements.txt", "emulator/requirements.txt", "requirements-dev.txt"):
        pins = [
            line.split("#")[0].strip()
            for line in (ROOT / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-"))
        ]
        loose = [p for p in pins if "==" not in p]
        assert pins and loose == [], f"{name}: not pinned exactly: {loose}"
