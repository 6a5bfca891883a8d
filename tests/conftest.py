"""Test-wide setup: a throw-away AIRFLOW_HOME, and real local services started on free ports.

The environment (Airflow home, ``AIRFLOW_CONN_*`` for Azurite and the emulator) is set before
anything imports Airflow, so no test ever touches a developer's `.airflow/` database, and hooks
built inside tests reach the services these fixtures start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devtools.services import (
    ROOT,
    LocalPorts,
    airflow_environment,
    azurite_connection_string,
    azurite_service,
    free_port,
    stop_process,
)

_home = Path(tempfile.mkdtemp(prefix="airflow-test-home-"))
atexit.register(shutil.rmtree, _home, ignore_errors=True)
PORTS = LocalPorts(
    azurite=free_port(),
    emulator=free_port(),
    emulator_tls=free_port(),
    emulator_data_dir=_home / "emulator",
)
os.environ.update(airflow_environment(home=_home, ports=PORTS))

import pytest  # noqa: E402  (after the environment is set)
from azure.storage.blob import BlobServiceClient  # noqa: E402

from emulator.datasets import generate_csv  # noqa: E402
from support.emulator import RunningEmulator, start_emulator  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"
# The suite runs on two pytest-xdist workers (``make test``); each has its own services and logs.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
LOG_SUFFIX = f"-{WORKER}" if WORKER else ""
# The modules that run whole Airflow installations (marker ``cluster``) take turns on one worker: two
# at once on two cores would starve each other's schedulers. Every other module goes whole to either
# worker, the benchmark smoke run too: it starts no Airflow, and checks counts and memory, and one
# time ratio with room (40 triggers following 5 s jobs in 1.1x one's time, limit 4x). (By path:
# xdist's scheduler sees node ids, not markers.)
AIRFLOW_INSTALLATION_MODULES = (
    "tests/bench/test_bench_postgres.py",
    "tests/devtools/test_make_airflow.py",
    "tests/e2e/",
    "tests/reliability/test_process_faults.py",
    "tests/reliability/test_triggerer_failover.py",
    "tests/ui/",
)


@pytest.fixture(autouse=True)
def _triggers_share_nothing_across_tests() -> Iterator[None]:
    """Triggers share hooks and storage clients per process for a minute (triggers/shared.py); a
    test that changes a connection must not get the client an earlier test built."""
    from azureml_retrain.triggers import shared

    shared._clients.clear()
    yield
    shared._clients.clear()


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class OneAirflowInstallationAtATime(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "airflow-installations" if module.startswith(AIRFLOW_INSTALLATION_MODULES) else module

    return OneAirflowInstallationAtATime(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("cluster") and not item.nodeid.startswith(AIRFLOW_INSTALLATION_MODULES):
            raise pytest.UsageError(
                f"{item.nodeid} runs an Airflow installation: add its module to AIRFLOW_INSTALLATION_MODULES "
                "in tests/conftest.py, so that it takes turns with the others"
            )


@pytest.fixture(scope="session")
def local_ports() -> LocalPorts:
    """Where this session's Azurite and emulator listen (what the ``AIRFLOW_CONN_*`` point at)."""
    return PORTS


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A real Azurite blob service, in memory, on a free port; yields its connection string.

    ``AIRFLOW_CONN_WASB_DEFAULT`` already points at this port, so hooks built inside tests reach it.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    process = azurite_service(PORTS.azurite).start(ARTIFACTS / f"azurite{LOG_SUFFIX}.log")
    try:
        yield azurite_connection_string(PORTS.azurite)
    finally:
        stop_process(process.pid)


@pytest.fixture(scope="session")
def emulator_session(azurite: str) -> Iterator[RunningEmulator]:
    """The Azure ML emulator as a real subprocess, on the ports the AIRFLOW_CONN_* point at."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"emulator{LOG_SUFFIX}.log"
    log_path.unlink(missing_ok=True)
    running = start_emulator(
        log_path,
        PORTS.emulator_data_dir,
        port=PORTS.emulator,
        tls_port=PORTS.emulator_tls,
        in_memory=True,
    )
    try:
        yield running
    finally:
        stop_process(running.pid)


@pytest.fixture
def emulator(emulator_session: RunningEmulator) -> Iterator[RunningEmulator]:
    """The session's emulator, reset to its seed (no jobs, faults or knobs from earlier tests), and
    reset again afterwards: module fixtures that use the session's emulator directly never meet a
    deleted service or a held operation a test left behind."""
    emulator_session.admin("POST", "reset")
    yield emulator_session
    emulator_session.admin("POST", "reset")


@pytest.fixture(scope="session")
def blob_service(azurite: str) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite)


@pytest.fixture
def container(blob_service: BlobServiceClient, request: pytest.FixtureRequest) -> str:
    """A fresh container per test (names are 3-63 lowercase characters)."""
    name = "t" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + str(time.monotonic_ns())[-8:]
    blob_service.create_container(name)
    return name


@pytest.fixture
def upload(blob_service: BlobServiceClient, container: str) -> Callable[..., str]:
    """Upload bytes or a generated dataset; returns ``container/blob``."""

    def _upload(blob: str, data: bytes | None = None, *, dataset: str | None = None, **options: int) -> str:
        if data is None:
            assert dataset is not None
            data = generate_csv(dataset, **options).encode()
        blob_service.get_blob_client(container, blob).upload_blob(data, overwrite=True)
        return f"{container}/{blob}"

    return _upload


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throw-away metadata database (needed by dag.test() and the CLI)."""
    from airflow.utils import db

    db.initdb()
