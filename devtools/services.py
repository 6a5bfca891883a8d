"""Start, stop and describe the local development services (Azurite, the Azure ML emulator).

One place for how the services are launched and how Airflow reaches them: ``make services`` /
``make stop`` / ``make demo`` / ``make airflow`` use the command line below, and the test suite
imports the same functions to start throw-away instances on free ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = ROOT / ".airflow"
RUN_DIR = AIRFLOW_HOME / "run"
LOG_DIR = AIRFLOW_HOME / "logs"
DATA_DIR = AIRFLOW_HOME / "data"
# The deployment's Airflow config folder (airflow_local_settings.py). The image has it where Airflow
# looks, $AIRFLOW_HOME/config; the local homes are elsewhere, so local processes get it on the path.
CONFIG_DIR = ROOT / "config"

HOST = "127.0.0.1"
AZURITE_PORT = int(os.environ.get("AZURITE_PORT", "10000"))
EMULATOR_PORT = int(os.environ.get("AZUREML_EMULATOR_PORT", "8765"))
EMULATOR_TLS_PORT = int(os.environ.get("AZUREML_EMULATOR_TLS_PORT", "8766"))

# Azurite's well-known development account. It is public (documented by Microsoft) and only
# ever valid against the local emulator, so it may live in the repository.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_blob_endpoint(port: int = AZURITE_PORT) -> str:
    return f"http://{HOST}:{port}/{AZURITE_ACCOUNT}"


def azurite_connection_string(port: int = AZURITE_PORT) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={azurite_blob_endpoint(port)};"
    )


def emulator_url(port: int = EMULATOR_PORT) -> str:
    return f"http://{HOST}:{port}"


def emulator_cert_path(data_dir: Path) -> Path:
    """Where the emulator writes the certificate of its TLS (token authority) listener."""
    return data_dir / "tls" / "cert.pem"


@dataclass(frozen=True)
class LocalPorts:
    """Where the local services listen (fixed for `make`, free ports in tests)."""

    azurite: int = AZURITE_PORT
    emulator: int = EMULATOR_PORT
    emulator_tls: int = EMULATOR_TLS_PORT
    emulator_data_dir: Path = DATA_DIR / "emulator"


def training_datasets() -> dict[str, str]:
    """The local training connections and the dataset each one's service learns from (the emulator's
    data generator names), from the emulator's seed."""
    from emulator.catalog import load_seed

    seed = load_seed()
    classic = next(s for s in seed.workspaces[0].web_services if s.kind == "training")
    arm = next(s for s in seed.arm_web_services if s.kind == "training")
    return {
        "azureml_churn_training": seed.experiments[classic.experiment].dataset,
        "azureml_energy_training": seed.experiments[arm.experiment].dataset,
    }


def airflow_connections(ports: LocalPorts | None = None) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables that point Airflow at Azurite and the seeded emulator.

    Ids and keys come from the emulator's seed file (development values, like Azurite's key).
    """
    from emulator.catalog import load_seed

    ports = ports or LocalPorts()
    seed = load_seed()
    base = emulator_url(ports.emulator)
    workspace = seed.workspaces[0]
    classic_training = next(s for s in workspace.web_services if s.kind == "training")
    training_endpoint = next(e for e in classic_training.endpoints if e.name == "default")
    arm_training = next(s for s in seed.arm_web_services if s.kind == "training")
    tenant = seed.tenants[0]
    principal = tenant.service_principals[0]
    connections: dict[str, dict[str, Any]] = {
        "wasb_default": {
            "conn_type": "wasb",
            "extra": {"connection_string": azurite_connection_string(ports.azurite)},
        },
        "azureml_churn_training": {
            "conn_type": "azureml_web_service",
            "host": f"{base}/workspaces/{workspace.id}/services/{training_endpoint.service_id}",
            "password": training_endpoint.primary_key,
        },
        "azureml_energy_training": {
            "conn_type": "azureml_web_service",
            "host": f"{base}/subscriptions/{arm_training.subscription}/services/{arm_training.data_plane_id}",
            "password": arm_training.primary_key,
        },
        "azureml_classic_management_default": {
            "conn_type": "azureml_classic_management",
            "host": base,
            "schema": workspace.id,
            "password": workspace.authorization_token,
        },
        "azureml_resource_manager_default": {
            "conn_type": "azureml_resource_manager",
            # Resource Manager is https-only (bearer tokens never go over http): the TLS listener.
            "host": f"https://{HOST}:{ports.emulator_tls}",
            "login": principal.client_id,
            "password": principal.client_secret,
            "extra": {
                "tenant_id": tenant.id,
                "subscription_id": arm_training.subscription,
                "resource_group": arm_training.resource_group,
                "authority_host": f"https://{HOST}:{ports.emulator_tls}",
                "ca_bundle": str(emulator_cert_path(ports.emulator_data_dir)),
            },
        },
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value) for conn_id, value in connections.items()}


def python_path(*first: Path | str) -> str:
    """``PYTHONPATH`` for a local Airflow process: ``first``, the deployment's config folder, then what
    this process's ``PYTHONPATH`` already holds."""
    entries = [*(str(path) for path in first), str(CONFIG_DIR), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(entry for entry in entries if entry))


def airflow_environment(home: Path = AIRFLOW_HOME, ports: LocalPorts | None = None) -> dict[str, str]:
    """The environment every local Airflow process gets (CLI, standalone, tests' DAG runs)."""
    env = {
        "AIRFLOW_HOME": str(home),
        "PYTHONPATH": python_path(),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # Airflow ships this as False; the project's operators and sensors wait in the triggerer.
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        # The emulator and Azurite run on loopback; keep proxies out of the way.
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.update(airflow_connections(ports))
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before port {port} opened")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout:.0f}s")


@dataclass
class Service:
    """A background service: how to start it and how to know it is up."""

    name: str
    port: int
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    also_wait_for: tuple[int, ...] = ()

    def start(self, log_path: Path) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # Own session: `stop` signals the whole group, so no child is left behind.
            process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        try:
            for port in (self.port, *self.also_wait_for):
                wait_for_port(port, process, timeout=60)
        except Exception:
            stop_process(process.pid)
            raise
        return process


def azurite_service(port: int = AZURITE_PORT, location: Path | None = None) -> Service:
    binary = ROOT / "node_modules" / ".bin" / "azurite-blob"
    argv = [str(binary), "--blobHost", HOST, "--blobPort", str(port), "--disableTelemetry", "--silent"]
    # azure-storage-blob sends an API version newer than Azurite 3.35 knows; the wire format is
    # unchanged for what we use, so let it through.
    argv += ["--skipApiVersionCheck", "--loose"]
    argv += ["--location", str(location)] if location else ["--inMemoryPersistence"]
    return Service("azurite", port, argv)


def emulator_service(
    port: int = EMULATOR_PORT,
    tls_port: int = EMULATOR_TLS_PORT,
    data_dir: Path | None = None,
    *,
    in_memory: bool = False,
) -> Service:
    """The Azure ML Studio (classic) emulator.

    State persists in ``data_dir`` unless ``in_memory`` (or no ``data_dir``); the TLS certificate is
    written under ``data_dir`` when one is given.
    """
    argv = [sys.executable, "-m", "emulator", "--host", HOST, "--port", str(port), "--tls-port", str(tls_port)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if in_memory or data_dir is None:
        argv.append("--in-memory")
    return Service("azureml-emulator", port, argv, also_wait_for=(tls_port,))


def local_services() -> list[Service]:
    """The services `make services` runs, in start order."""
    return [
        azurite_service(AZURITE_PORT, DATA_DIR / "azurite"),
        emulator_service(EMULATOR_PORT, EMULATOR_TLS_PORT, DATA_DIR / "emulator"),
    ]


def stop_process(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL whatever is left after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            _reap(pid)
            time.sleep(0.1)


def _reap(pid: int) -> None:
    # Our own children stay zombies (and so "alive" to killpg) until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _pid_file(service: Service) -> Path:
    return RUN_DIR / f"{service.name}.pid"


def _running_pid(service: Service) -> int | None:
    pid_file = _pid_file(service)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def start_all() -> list[str]:
    """Start every local service not already running; returns the names of those it started."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    started = []
    for service in local_services():
        if _running_pid(service):
            print(f"{service.name}: already running on {HOST}:{service.port}")
            continue
        log_path = LOG_DIR / f"{service.name}.log"
        process = service.start(log_path)
        _pid_file(service).write_text(str(process.pid))
        started.append(service.name)
        print(f"{service.name}: started on {HOST}:{service.port} (pid {process.pid}, log {log_path.relative_to(ROOT)})")
    return started


def stop_all(names: list[str] | None = None) -> None:
    """Stop the named local services (default: all), last started first."""
    for service in reversed(local_services()):
        if names is not None and service.name not in names:
            continue
        pid = _running_pid(service)
        if pid is None:
            print(f"{service.name}: not running")
            continue
        stop_process(pid)
        _pid_file(service).unlink(missing_ok=True)
        print(f"{service.name}: stopped (pid {pid})")


def status() -> int:
    down = 0
    for service in local_services():
        pid = _running_pid(service)
        state = f"running, pid {pid}" if pid else "stopped"
        print(f"{service.name}: {state} ({HOST}:{service.port})")
        down += pid is None
    return 1 if down else 0


def describe_local_services() -> list[str]:
    """What the local services offer a config: the ids its targets name, and where each connection's
    credential comes from (never a key itself)."""
    from emulator.catalog import load_seed

    seed = load_seed()
    lines = ["Classic web services (targets: kind classic_endpoint, web_service_id, endpoint_name):"]
    for workspace in seed.workspaces:
        lines.append(f"  workspace {workspace.name} (id {workspace.id})")
        for service in workspace.web_services:
            endpoints = ", ".join(e.name for e in service.endpoints)
            kind = f"{service.kind.value:<10}"
            lines.append(f"    {kind} {service.name}: web_service_id {service.id}; endpoints {endpoints}")
    lines.append("Resource Manager web services (targets: kind arm_web_service, web_service_name):")
    for arm in seed.arm_web_services:
        where = f"resource group {arm.resource_group}, subscription {arm.subscription}"
        lines.append(f"    {arm.kind.value:<10} {arm.name} ({where})")
    lines.append(
        "Connections (AIRFLOW_CONN_* variables from `python -m devtools.services env`; keys from the emulator's seed):"
    )
    datasets = training_datasets()
    for variable in airflow_connections():
        conn_id = variable.removeprefix("AIRFLOW_CONN_").lower()
        trains = f"; training data: the emulator's '{datasets[conn_id]}' dataset" if conn_id in datasets else ""
        lines.append(f"    {conn_id}{trains}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.services", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status", "env", "ids"])
    args = parser.parse_args(argv)
    if args.command == "start":
        start_all()
    elif args.command == "stop":
        stop_all()
    elif args.command == "status":
        return status()
    elif args.command == "ids":
        print("\n".join(describe_local_services()))
    else:  # shell-quoted exports, for `eval "$(python -m devtools.services env)"`
        import shlex

        for key, value in airflow_environment().items():
            print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
