"""Airflow as separate component processes (api-server, scheduler, dag-processor, triggerer).

This is the topology of `docker-compose.yaml`, minus containers: each component is its own process
group, started and stopped by pid, so a test can SIGKILL one (a worker, the triggerer, the
scheduler) and start it again while a run is in flight. The reliability suite and the benchmarks
run against it; ``airflow standalone`` hides the components behind one parent and cannot do that.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devtools.services import HOST, ROOT, LocalPorts, airflow_environment, free_port, stop_process, wait_for_port

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
ADMIN_USER = "admin"


@dataclass
class AirflowCluster:
    """One Airflow installation on loopback, with its own home, database and free ports.

    :param home: AIRFLOW_HOME (database, logs, passwords file); created if missing.
    :param ports: where Azurite and the emulator listen (for the ``AIRFLOW_CONN_*``).
    :param dags_folder: the DAG bundle (default: the project's ``dags/``).
    :param parallelism: LocalExecutor worker slots.
    :param settings: extra ``AIRFLOW__*`` variables (they win over the defaults below).
    """

    home: Path
    ports: LocalPorts
    dags_folder: Path = ROOT / "dags"
    parallelism: int = 4
    settings: Mapping[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _password: str = field(default_factory=lambda: secrets.token_urlsafe(12), init=False, repr=False)
    _token: str | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def environment(self) -> dict[str, str]:
        env = airflow_environment(self.home, self.ports)
        env.update(
            {
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.url,
                # Every component must sign and check task tokens with the same secret.
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret(),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._port_for("worker_log_server")),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._port_for("trigger_log_server")),
                # New DAG files and edits show up within seconds, not minutes.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                # A worker that dies without reporting is noticed in 30 s, not 5 min.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        env.update(self.settings)
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, components: Iterable[str] = COMPONENTS, timeout: float = 180.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._passwords_file.write_text(json.dumps({ADMIN_USER: self._password}))
        self.airflow("db", "migrate", log_name="db-migrate")
        for component in components:
            self.start_component(component)
        self.wait_healthy(timeout=timeout)

    def start_component(self, component: str) -> subprocess.Popen[bytes]:
        if component in self.processes and self.processes[component].poll() is None:
            raise RuntimeError(f"{component} is already running (pid {self.processes[component].pid})")
        argv = [self._airflow_binary(), *component.split()]
        log = (self.log_dir / f"{component.replace(' ', '-')}.out").open("ab")
        with log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **self.environment()},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes[component] = process
        if component == "api-server":
            wait_for_port(self.api_port, process, timeout=120)
        return process

    def kill_component(self, component: str) -> None:
        """SIGKILL a component's whole process group: no shutdown handler runs."""
        process = self.processes.pop(component)
        os.killpg(process.pid, 9)
        process.wait(timeout=30)

    def stop_component(self, component: str) -> None:
        process = self.processes.pop(component, None)
        if process is not None:
            stop_process(process.pid, timeout=20)

    def stop(self) -> None:
        # Scheduler first, so it does not hand out work while the others go.
        for component in ("scheduler", *reversed(list(self.processes))):
            self.stop_component(component)

    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def airflow(self, *args: str, log_name: str = "cli", timeout: float = 300.0) -> str:
        """Run an ``airflow`` CLI command against this installation; returns its stdout."""
        result = subprocess.run(
            [self._airflow_binary(), *args],
            cwd=ROOT,
            env={**os.environ, **self.environment()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with (self.log_dir / f"{log_name}.out").open("a") as log:
            log.write(f"$ airflow {' '.join(args)}\n{result.stdout}\n{result.stderr}\n")
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
        return result.stdout

    # -- REST API ----------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the public REST API (``/api/v2/...``) as the admin user; returns the JSON body."""
        for attempt in (1, 2):
            response = requests.request(
                method,
                f"{self.url}/api/v2/{path.lstrip('/')}",
                headers={"Authorization": f"Bearer {self.token()}"},
                timeout=60,
                **kwargs,
            )
            if response.status_code == 401 and attempt == 1:
                self._token = None
                continue
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def token(self) -> str:
        if self._token is None:
            response = requests.post(
                f"{self.url}/auth/token",
                json={"username": ADMIN_USER, "password": self._password},
                timeout=30,
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    @property
    def credentials(self) -> tuple[str, str]:
        """The UI login (user, password) of this installation."""
        return ADMIN_USER, self._password

    def health(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/v2/monitor/health", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def wait_healthy(
        self, timeout: float = 180.0, components: Iterable[str] = ("scheduler", "triggerer", "dag_processor")
    ) -> None:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                last = self.health()
            except requests.RequestException:
                time.sleep(1)
                continue
            if all((last.get(name) or {}).get("status") == "healthy" for name in components):
                return
            time.sleep(1)
        raise TimeoutError(f"Airflow not healthy after {timeout:.0f}s: {last}; logs in {self.log_dir}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            dags = self.api("GET", "dags", params={"dag_id_pattern": dag_id})["dags"]
            if any(dag["dag_id"] == dag_id for dag in dags):
                errors = self.api("GET", "importErrors")["import_errors"]
                if errors:
                    raise RuntimeError(f"DAG import errors: {errors}")
                return
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f}s; logs in {self.log_dir}")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None) -> str:
        """Trigger a DAG run through the REST API; returns its run id."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        return str(self.api("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            time.sleep(1)
        raise TimeoutError(f"{dag_id}/{run_id} still {self.run_state(dag_id, run_id)} after {timeout:.0f}s")

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return dict(self.api("GET", path))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: Iterable[str], timeout: float = 120.0
    ) -> dict[str, Any]:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        ti: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            ti = self.task_instance(dag_id, run_id, task_id)
            if ti["state"] in wanted:
                return ti
            time.sleep(0.5)
        raise TimeoutError(f"{task_id} in {dag_id}/{run_id} is {ti.get('state')!r}, not one of {sorted(wanted)}")

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        self.api("PATCH", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state})

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None:
        self.api(
            "POST",
            f"dags/{dag_id}/clearTaskInstances",
            json={"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": False},
        )

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        response = requests.get(
            f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            headers={"Authorization": f"Bearer {self.token()}", "Accept": "text/plain"},
            timeout=60,
        )
        response.raise_for_status()
        return response.text

    # -- internals ---------------------------------------------------------------------------

    @property
    def _passwords_file(self) -> Path:
        return self.home / "passwords.json"

    def _jwt_secret(self) -> str:
        secret_file = self.home / "jwt-secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32))
        return secret_file.read_text()

    def _port_for(self, name: str) -> int:
        port_file = self.home / f"{name}.port"
        if not port_file.exists():
            port_file.write_text(str(free_port()))
        return int(port_file.read_text())

    def _airflow_binary(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    def _check_alive(self) -> None:
        for component, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{component.replace(' ', '-')}.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Airflow {component} exited with {process.returncode}:\n{tail}")
