"""Lint, type and configuration checks, run as part of the test suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devtools.services import ROOT

BIN = Path(sys.executable).parent
PYTHON_SOURCES = [d for d in ("dags", "plugins", "emulator", "devtools", "tests") if (ROOT / d).is_dir()]
TYPED_PACKAGES = [
    p
    for p in ("plugins/azureml_retrain", "plugins/model_history_plugin.py", "emulator", "devtools")
    if (ROOT / p).exists()
]


def _run(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


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
    result = _run(str(BIN / "mypy"), *TYPED_PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_matches_compose_spec():
    result = _run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_are_fully_pinned():
    for name in ("requirements.txt", "requirements-dev.txt"):
        pins = [
            line.split("#")[0].strip()
            for line in (ROOT / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-"))
        ]
        loose = [p for p in pins if "==" not in p]
        assert pins and loose == [], f"{name}: not pinned exactly: {loose}"
