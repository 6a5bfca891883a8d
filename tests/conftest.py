"""Test-wide setup: a throw-away AIRFLOW_HOME, and real local services started on free ports.

The environment is set before anything imports Airflow, so no test ever touches a developer's
`.airflow/` database.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from devtools.services import ROOT, airflow_environment, azurite_connection_string, azurite_service, free_port

_home = Path(tempfile.mkdtemp(prefix="airflow-test-home-"))
atexit.register(shutil.rmtree, _home, ignore_errors=True)
_AZURITE_PORT = free_port()
os.environ.update(airflow_environment(home=_home, azurite_port=_AZURITE_PORT))

import pytest  # noqa: E402  (after the environment is set)

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A real Azurite blob service, in memory, on a free port; yields its connection string.

    ``AIRFLOW_CONN_WASB_DEFAULT`` already points at this port, so hooks built inside tests reach it.
    """
    service = azurite_service(_AZURITE_PORT)
    ARTIFACTS.mkdir(exist_ok=True)
    process = service.start(ARTIFACTS / "azurite.log")
    try:
        yield azurite_connection_string(_AZURITE_PORT)
    finally:
        from devtools.services import stop_process

        stop_process(process.pid)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throw-away metadata database (needed by dag.test() and the CLI)."""
    from airflow.utils import db

    db.initdb()
