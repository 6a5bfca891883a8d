"""Airflow as separate component processes (api-server, scheduler, dag-processor, triggerer).

This is the topology of `docker-compose.yaml`, minus containers: each component is its own process
group, started and stopped by pid, so a test can SIGKILL one (a worker, the triggerer, the
scheduler) and start it again while a run is in flight. The reliability suite and the benchmarks
run against it; ``airflow standalone`` hides the components behind one parent and cannot do that.

By default it is LocalExecutor on SQLite; given a ``database`` (:class:`PostgresServer`), on that
PostgreSQL instead. With ``executor="CeleryExecutor"`` it also runs its own
PostgreSQL (:class:`PostgresServer`) and Redis (:class:`RedisServer`) on free loopback ports and
``celery_workers`` Celery workers, each its own process group with its own Celery node name and
log server port, as `docker compose up --scale airflow-worker=N` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests

from devtools.services import HOST, ROOT, LocalPorts, airflow_environment, free_port, stop_process, wait_for_port

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
CELERY_WORKER = "celery worker"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
ADMIN_USER = "admin"
POSTGRES_PACKAGE = "postgresql"
REDIS_PACKAGE = "redis-server"


# -- PostgreSQL and Redis as child processes -------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), if any."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    return candidates[-1].parent if candidates else None


def ensure_system_packages(packages: Mapping[str, bool] | None = None) -> list[str]:
    """Install the missing ones of PostgreSQL and Redis with apt-get (idempotent); returns what it installed.

    Installing needs root; otherwise a missing package fails with the command to run.
    """
    present = packages or {
        POSTGRES_PACKAGE: postgres_bin_dir() is not None,
        REDIS_PACKAGE: shutil.which("redis-server") is not None,
    }
    missing = [name for name, installed in present.items() if not installed]
    if not missing:
        return []
    if os.geteuid() != 0:
        raise RuntimeError(
            f"{', '.join(missing)} not installed; install with: sudo apt-get install -y {' '.join(missing)}"
        )
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise RuntimeError(f"{', '.join(missing)} not installed, and there is no apt-get to install them with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt_get, "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run([apt_get, "update", "-q"], env=env, capture_output=True, check=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(missing)} failed:\n{result.stdout[-2000:]}{result.stderr}")
    return missing


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1 (no Unix socket), initialised in ``directory``.

    The server runs in the foreground as a child process (its own process group), so it is stopped by
    pid. PostgreSQL refuses to run as root: as root it runs as the ``postgres`` system user, which
    owns ``directory`` (so every directory above it must be searchable by that user: not a 0700
    temp dir). Durability is off (fsync, full-page writes): it holds test data only.
    """

    directory: Path
    port: int = field(default_factory=free_port)
    user: str = "airflow"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    database: str = "airflow"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@{HOST}:{self.port}/{self.database}"

    def start(self) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError(f"PostgreSQL is not installed: apt-get install -y {POSTGRES_PACKAGE}")
        data = self.directory / "data"
        if not (data / "PG_VERSION").exists():
            self._initdb(bin_dir, data)
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-h", HOST, "-p", str(self.port), "-k", ""]
        argv += ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
        argv += ["-c", "max_connections=200"]  # every Airflow process and Celery child holds some
        with (self.directory / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **self._as_owner(),
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for every client to leave.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stop_process(self.process.pid)
        self.process = None

    def _initdb(self, bin_dir: Path, data: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        password_file = self.directory / "password"
        password_file.write_text(self.password)
        owner = self._as_owner()
        if owner:
            shutil.chown(self.directory, owner["user"], owner["group"])
            shutil.chown(password_file, owner["user"], owner["group"])
        result = subprocess.run(
            [
                *(str(bin_dir / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={password_file}"),
                *("--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8"),
            ],
            capture_output=True,
            text=True,
            check=False,
            **owner,
        )
        password_file.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr[-2000:]}")

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """Until the server accepts connections; then create the database if it is missing."""
        import sqlalchemy

        assert self.process is not None
        engine = sqlalchemy.create_engine(
            self.url().rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    tail = (self.directory / "postgres.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL exited with {self.process.returncode}:\n{tail}")
                try:
                    with engine.connect() as connection:
                        exists = connection.execute(
                            sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": self.database}
                        ).scalar()
                        if not exists:
                            connection.execute(
                                sqlalchemy.text(f'CREATE DATABASE "{self.database}" OWNER "{self.user}"')
                            )
                    return
                except sqlalchemy.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            engine.dispose()

    @staticmethod
    def _as_owner() -> dict[str, Any]:
        """Popen arguments that run PostgreSQL as the ``postgres`` user when we are root."""
        if os.geteuid() != 0:
            return {}
        return {"user": "postgres", "group": "postgres", "extra_groups": []}


@dataclass
class RedisServer:
    """redis-server on 127.0.0.1 as a child process (its own process group), no persistence."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def url(self, db: int = 0) -> str:
        return f"redis://:@{HOST}:{self.port}/{db}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"Redis is not installed: apt-get install -y {REDIS_PACKAGE}")
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--dir", str(self.directory)]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        wait_for_port(self.port, self.process, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process.pid)
            self.process = None


# -- process trees ---------------------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """pid → parent pid of every process: one snapshot of the process table."""
    parents: dict[int, int] = {}
    for process in psutil.process_iter(["ppid"]):
        ppid = process.info["ppid"]  # None when it may not be read (another user's process)
        if ppid is not None:
            parents[process.pid] = ppid
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, including those that left its process group (Airflow's task
    runners start their own)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class AirflowCluster:
    """One Airflow installation on loopback, with its own home, database and free ports.

    :param home: AIRFLOW_HOME (database, logs, passwords file); created if missing.
    :param ports: where Azurite and the emulator listen (for the ``AIRFLOW_CONN_*``).
    :param dags_folder: the DAG bundle (default: the project's ``dags/``).
    :param parallelism: LocalExecutor worker slots.
    :param settings: extra ``AIRFLOW__*`` variables (they win over the defaults below).
    :param executor: ``LocalExecutor`` or ``CeleryExecutor``.
    :param celery_workers: Celery workers :meth:`start` runs (CeleryExecutor only).
    :param database: PostgreSQL for the metadata (and the Celery results); without it LocalExecutor
        uses a SQLite file in ``home``, CeleryExecutor makes one under ``home``. Started and stopped
        with the cluster.
    :param broker: the Celery broker; CeleryExecutor makes one when not given.
    :param worker_command: the ``airflow`` subcommand of a Celery worker.
    :param component_env: ``airflow`` subcommand → variables only that component gets.
    """

    home: Path
    ports: LocalPorts
    dags_folder: Path = ROOT / "dags"
    parallelism: int = 4
    settings: Mapping[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    executor: str = "LocalExecutor"
    celery_workers: int = 2
    database: PostgresServer | None = None
    broker: RedisServer | None = None
    worker_command: str = CELERY_WORKER
    component_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _password: str = field(default_factory=lambda: secrets.token_urlsafe(12), init=False, repr=False)
    _token: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.celery:
            self.database = self.database or PostgresServer(self.home / "postgres")
            self.broker = self.broker or RedisServer(self.home / "redis")

    @property
    def celery(self) -> bool:
        return self.executor == "CeleryExecutor"

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
                # Four processes share one SQLite file: wait for a lock instead of failing at once.
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}?timeout=60",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        if self.database is not None:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.database.url()
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = self.database.url("db+postgresql+psycopg2")
        if self.broker is not None:
            env["AIRFLOW__CELERY__BROKER_URL"] = self.broker.url()
        if self.celery:
            env["AIRFLOW__CORE__EXECUTOR"] = self.executor
            # The scheduler's health server has a fixed default port: two clusters would collide.
            env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] = str(self._port_for("scheduler_health"))
        env.update(self.settings)
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, components: Iterable[str] = COMPONENTS, timeout: float = 180.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._passwords_file.write_text(json.dumps({ADMIN_USER: self._password}))
        for backend in (self.database, self.broker):
            if backend is not None:
                backend.start()
        self.airflow("db", "migrate", log_name="db-migrate")
        self._use_write_ahead_log()
        for component in components:
            self.start_component(component)
        if self.celery:
            for index in range(1, self.celery_workers + 1):
                self.start_celery_worker(index)
        self.wait_healthy(timeout=timeout)
        if self.celery:
            self.wait_workers_ready(timeout=timeout)

    def start_component(
        self, component: str, *, name: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``airflow <component>``; ``name`` (default: the component) identifies it in
        :attr:`processes` and names its log, ``env`` adds to :meth:`environment`."""
        name = name or component
        if name in self.processes and self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is already running (pid {self.processes[name].pid})")
        argv = [self._airflow_binary(), *component.split()]
        log = (self.log_dir / f"{name.replace(' ', '-')}.out").open("ab")
        with log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **self.environment(), **self.component_env.get(component, {}), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes[name] = process
        if component == "api-server":
            wait_for_port(self.api_port, process, timeout=120)
        return process

    def start_celery_worker(self, index: int) -> subprocess.Popen[bytes]:
        """Celery worker ``worker-<index>``: on one host, workers need their own Celery node name and
        log server port (containers get both from their own hostname and network)."""
        name = self.worker_name(index)
        return self.start_component(
            f"{self.worker_command} --celery-hostname {name}@%h",
            name=name,
            env={
                **self.component_env.get(self.worker_command, {}),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._port_for(f"{name}_log_server")),
            },
        )

    def start_triggerer(self, name: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Another triggerer, ``name``: on one host each needs its own trigger log server port (in
        containers each has its own network)."""
        port = {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._port_for(f"{name}_log_server"))}
        return self.start_component("triggerer", name=name, env={**port, **(env or {})})

    @staticmethod
    def worker_name(index: int) -> str:
        return f"worker-{index}"

    @property
    def worker_names(self) -> list[str]:
        return [name for name in self.processes if name.startswith("worker-")]

    def wait_workers_ready(self, timeout: float = 120.0) -> None:
        """Until every Celery worker has logged that it is ready to take tasks."""
        deadline = time.monotonic() + timeout
        waiting = list(self.worker_names)
        while waiting:
            self._check_alive()
            waiting = [name for name in waiting if not self._worker_ready(name)]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"Celery workers {waiting} not ready after {timeout:.0f}s; logs in {self.log_dir}")
            time.sleep(0.5)

    def _worker_ready(self, name: str) -> bool:
        # Celery logs "<node name> ready." once it consumes from the queue.
        lines = (self.log_dir / f"{name}.out").read_text(errors="replace").splitlines()
        return any(f" {name}@" in line and " ready." in line for line in lines)

    def component_running(self, pid: int) -> str | None:
        """The component (key of :attr:`processes`) whose process tree holds ``pid``."""
        parents = _parents()
        roots = {process.pid: name for name, process in self.processes.items()}
        while pid in parents:
            if pid in roots:
                return roots[pid]
            pid = parents[pid]
        return None

    def kill_component(self, component: str, *, tree: bool = False) -> None:
        """SIGKILL a component's whole process group: no shutdown handler runs.

        With ``tree``, every process below it too (task runners are in process groups of their
        own), as when the machine or container running it dies.
        """
        process = self.processes.pop(component)
        below = descendants(process.pid) if tree else []
        os.killpg(process.pid, 9)
        _kill_all(below)
        process.wait(timeout=30)

    @contextlib.contextmanager
    def paused_component(self, component: str) -> Iterator[None]:
        """SIGSTOP a component and everything below it for the block, then SIGCONT: it falls behind
        the others, as a starved or swapping process does, without losing any state."""
        process = self.processes[component]
        pids = [process.pid, *descendants(process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop_component(self, component: str) -> None:
        process = self.processes.pop(component, None)
        if process is not None:
            below = descendants(process.pid)
            stop_process(process.pid, timeout=20)
            # Whatever left the group (a task runner) must not outlive its component.
            _kill_all(pid for pid in below if _alive(pid))

    def stop(self) -> None:
        # Scheduler first, so it does not hand out work while the others go.
        try:
            for component in ("scheduler", *reversed(list(self.processes))):
                self.stop_component(component)
        finally:
            for backend in (self.broker, self.database):
                if backend is not None:
                    backend.stop()

    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def airflow(self, *args: str, log_name: str = "cli", timeout: float = 300.0, lock_retries: int = 0) -> str:
        """Run an ``airflow`` CLI command against this installation; returns its stdout.

        :param lock_retries: tries again, up to this many times, when SQLite refused the command's
            write ("database is locked": another component held the lock); such an attempt wrote
            nothing, its transaction rolled back.
        """
        for attempt in range(lock_retries + 1):
            try:
                return self._airflow(*args, log_name=log_name, timeout=timeout)
            except RuntimeError as error:
                if "database is locked" not in str(error) or attempt == lock_retries:
                    raise
        raise AssertionError("unreachable")

    def _airflow(self, *args: str, log_name: str, timeout: float) -> str:
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
        """Call the public REST API (``/api/v2/...``) as the admin user; returns the JSON body.

        A request that may be repeated (not a POST) and gets no answer in time is sent once more: on
        SQLite the API server can wait for the write lock while the scheduler and the DAG processor
        write (a PATCH of ``is_paused`` once waited over 60 s under a loaded suite)."""
        for attempt in (1, 2):
            try:
                response = requests.request(
                    method,
                    f"{self.url}/api/v2/{path.lstrip('/')}",
                    headers={"Authorization": f"Bearer {self.token()}"},
                    timeout=60,
                    **kwargs,
                )
            except requests.Timeout:
                if method.upper() == "POST" or attempt == 2:
                    raise
                continue
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

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None) -> str:
        """Trigger a DAG run through the REST API; returns its run id.

        The run id is chosen here, so that a request that got no answer in time can be sent once
        more (see :meth:`api`): if the first one had created the run, the second is refused with 409."""
        run_id = f"manual__{datetime.now(UTC).isoformat()}"
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": logical_date, "conf": dict(conf or {})}
        for attempt in (1, 2):
            try:
                return str(self.api("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"])
            except requests.Timeout:
                if attempt == 2:
                    raise
            except RuntimeError as error:
                if attempt == 2 and " -> 409:" in str(error):
                    return run_id
                raise
        raise AssertionError("unreachable")

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
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Iterable[str],
        *,
        timeout: float = 120.0,
        map_index: int = -1,
    ) -> dict[str, Any]:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        ti: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                ti = self.task_instance(dag_id, run_id, task_id, map_index)
            except RuntimeError:  # a mapped instance does not exist until its upstream has run
                time.sleep(0.5)
                continue
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

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task's log for one try as the UI shows it (trigger lines included), one event per line."""
        body = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
        )
        content = body.get("content") or []
        if isinstance(content, str):
            return content
        lines: list[str] = []
        for item in content:
            if not isinstance(item, dict):
                lines.append(str(item))
                continue
            lines.append(str(item.get("event", "")))
            # An exception's text travels next to the event, as the UI shows it.
            lines.extend(f"{d.get('exc_type')}: {d.get('exc_value')}" for d in item.get("error_detail") or [])
        return "\n".join(lines)

    # -- internals ---------------------------------------------------------------------------

    @property
    def _passwords_file(self) -> Path:
        return self.home / "passwords.json"

    def _jwt_secret(self) -> str:
        secret_file = self.home / "jwt-secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32))
        return secret_file.read_text()

    def _use_write_ahead_log(self) -> None:
        """SQLite in WAL mode lets readers and the one writer proceed together (the setting persists)."""
        url = self.environment()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        if url.startswith("sqlite:///"):
            with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///").split("?")[0])) as db:
                db.execute("PRAGMA journal_mode=WAL")

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
