"""What every benchmark shares: results and their table, statistics, the local services, one Airflow.

Each benchmark module exposes ``run(bench: Bench) -> Measurement``. A measurement holds its raw
numbers (everything that was timed or counted, for the JSON file) and its checks: one number each,
compared with a target (``value <= target``), against a baseline measured in the same run. Airflow's
metadata database is SQLite or PostgreSQL (:data:`DATABASES`); a measurement that ran on Airflow
names the one it ran on.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from devtools.cluster import POSTGRES_PACKAGE, AirflowCluster, PostgresServer, ensure_system_packages, postgres_bin_dir
from devtools.services import (
    ROOT,
    LocalPorts,
    airflow_environment,
    azurite_connection_string,
    azurite_service,
    emulator_service,
    free_port,
    python_path,
    stop_process,
)

DAG_TEMPLATES = Path(__file__).parent / "dags"
PARAMS_FILE = "bench_params.json"
STATSD_PREFIX = "airflow"
# Airflow's metadata database: the name on the command line and in the JSON -> the table's label.
DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class Check:
    """One line of the table: a number, what it is compared with, and its target.

    :param case: what was measured, e.g. ``"rollback_model.py parse time"``
    :param value: the number the target applies to (a ratio, seconds or calls)
    :param unit: ``"x"`` for a ratio, else the unit of ``value``
    :param target: upper bound for ``value``; None when the number is only reported
    :param ours: the project's raw figure, human readable
    :param baseline: the baseline's raw figure, human readable
    :param note: how the figure was obtained when it is not a plain median (extrapolated, simulated)
    """

    case: str
    value: float
    unit: str
    target: float | None
    ours: str
    baseline: str = "-"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.value <= self.target

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class Measurement:
    """One measurement's results.

    :param database: the metadata database of the Airflow it ran on (a key of :data:`DATABASES`);
        None when it needed no Airflow
    :param load_average: the machine's 1-minute load average when it began and when it ended
    """

    key: str
    title: str
    checks: list[Check] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    database: str | None = None
    load_average: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed is not False for c in self.checks)

    @property
    def id(self) -> str:
        """Its key in the JSON file: the same measurement may run on each database in one run."""
        return self.key if self.database is None else f"{self.key}@{self.database}"

    @property
    def database_label(self) -> str:
        return "-" if self.database is None else DATABASES[self.database]

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "database": self.database,
            "passed": self.passed,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "load_average": self.load_average,
            "checks": [c.to_json() for c in self.checks],
            "notes": self.notes,
            "raw": self.raw,
        }


def median(values: Iterable[float]) -> float:
    data = list(values)
    if not data:
        raise ValueError("no samples")
    return float(statistics.median(data))


def fmt_seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def fmt_value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return fmt_seconds(value)
    return f"{value:g} {unit}"


def render_table(measurements: list[Measurement], numbers: Mapping[str, int] | None = None) -> str:
    """The results as a Markdown table (it reads the same in a terminal and in the README)."""
    header = ["#", "measurement", "database", "case", "ours", "baseline", "value", "target", "result"]
    rows: list[list[str]] = []
    for index, m in enumerate(measurements, 1):
        first = [str((numbers or {}).get(m.key, index)), m.title, m.database_label]
        if m.error:
            rows.append([*first, "error", m.error.splitlines()[0][:80], "-", "-", "-", "ERROR"])
            continue
        for c in m.checks:
            target = "report" if c.target is None else f"<= {fmt_value(c.target, c.unit)}"
            result = "-" if c.passed is None else ("pass" if c.passed else "FAIL")
            case = f"{c.case} ({c.note})" if c.note else c.case
            rows.append([*first, case, c.ours, c.baseline, fmt_value(c.value, c.unit), target, result])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(r) for r in rows)])


def cpu_reference_seconds() -> float:
    """A fixed pure-Python workload (5 million additions), best of 3: how fast this CPU was when the
    numbers were taken. A shared virtual machine's speed varies over a day, and every figure that
    involves Airflow's processes varies with it: compare runs at a similar reference."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(5_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def machine(load_at_start: tuple[float, float, float], cpu_at_start: float) -> dict[str, Any]:
    """Where the numbers come from; the load averages say how busy the machine was besides the bench,
    the CPU reference how fast it was."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpu_reference_seconds_at_start": cpu_at_start,
        "cpu_reference_seconds_at_end": cpu_reference_seconds(),
    }


# -- the environment ---------------------------------------------------------------------------------


class StatsdListener:
    """Airflow's StatsD metrics, received on a loopback UDP port: the timers (``name:value|ms``) by
    name, each value with the time it arrived. The bench cluster's components send there."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.timings: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._receive, name="statsd", daemon=True).start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.socket.recv(65536)
            except OSError:  # closed
                return
            arrived = time.monotonic()
            for line in data.decode(errors="replace").splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                if kind.startswith("ms"):
                    with self._lock:
                        self.timings.setdefault(name, []).append((arrived, float(value)))

    def timer_values(self, name: str, since: float, until: float | None = None) -> list[float]:
        """Values of the timer ``name`` (milliseconds) that arrived between two ``time.monotonic()``s."""
        with self._lock:
            samples = list(self.timings.get(name, []))
        return [value for arrived, value in samples if arrived >= since and (until is None or arrived <= until)]

    def close(self) -> None:
        self.socket.close()


class Bench:
    """The local services, an Airflow installation and a scratch folder, shared by all benchmarks.

    Azurite and the emulator are fresh (in memory) for every run: nothing is cached between runs.
    The Airflow cluster starts on first use, with every bench DAG in its DAG folder. Every Airflow
    of the bench keeps its metadata in ``database`` (a key of :data:`DATABASES`): PostgreSQL is
    installed from Debian's packages if missing, and each Airflow home gets a server of its own.
    """

    def __init__(
        self,
        *,
        smoke: bool,
        work_dir: Path | None = None,
        database: str = "sqlite",
        log: Callable[[str], None] = print,
    ) -> None:
        if database not in DATABASES:
            raise ValueError(f"database {database!r} is not one of {sorted(DATABASES)}")
        self.smoke = smoke
        self.database = database
        self.log = log
        self.work = work_dir or Path(tempfile.mkdtemp(prefix="azureml-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.ports = LocalPorts(
            azurite=free_port(),
            emulator=free_port(),
            emulator_tls=free_port(),
            emulator_data_dir=self.work / "emulator",
        )
        self.home = self.work / "airflow"
        self.dags_folder = self.work / "dags"
        self.params: dict[str, Any] = {}
        self._pids: list[int] = []
        self._cluster: AirflowCluster | None = None
        self._database_servers: dict[Path, PostgresServer] = {}
        self._emulator_state: dict[str, Any] | None = None
        self.statsd: StatsdListener | None = None
        # Figures one measurement leaves for another of the same run (e.g. the loop latency).
        self.figures: dict[str, float] = {}

    # environment of this process (hooks and triggers run in it) --------------------------------

    def environment(self) -> dict[str, str]:
        return airflow_environment(self.home, self.ports)

    def configure_process(self) -> None:
        """Point this process's Airflow at the bench's home and services (before importing Airflow)."""
        os.environ.update(self.environment())
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(self.dags_folder)
        # Operators and sensors run in this process too; their info logs would bury the table.
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"

    def write_config(self, name: str, config: Mapping[str, Any]) -> None:
        """A retraining config for the bench factory DAG file (``bench_retraining.py``)."""
        import yaml

        folder = self.dags_folder / "bench_retraining"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))

    # services ------------------------------------------------------------------------------------

    def start_services(self) -> None:
        logs = self.work / "logs"
        azurite = azurite_service(self.ports.azurite).start(logs / "azurite.log")
        self._pids.append(azurite.pid)
        emulator = emulator_service(
            self.ports.emulator, self.ports.emulator_tls, self.ports.emulator_data_dir, in_memory=True
        ).start(logs / "emulator.log")
        self._pids.append(emulator.pid)

    def stop(self) -> None:
        self.stop_cluster()
        if self.statsd is not None:
            self.statsd.close()
            self.statsd = None
        for pid in reversed(self._pids):
            stop_process(pid)
        self._pids.clear()

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.ports.azurite)

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.emulator}"

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.emulator_url}/_emulator/{path}", timeout=60, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def emulator_requests(self, route: str | None = None) -> list[dict[str, Any]]:
        return list(self.admin("GET", "requests", params={"route": route} if route else None)["requests"])

    def set_job_duration(self, seconds: float) -> None:
        self.admin("PATCH", "settings", json={"job_min_duration_seconds": seconds})

    def emulator_state(self) -> dict[str, Any]:
        return dict(self.admin("GET", "state"))

    def job_ids(self) -> set[str]:
        return {job["id"] for job in self.emulator_state()["jobs"]}

    def job(self, job_id: str) -> dict[str, Any]:
        """One BES job with its times (``started_at``, ``ended_at``)."""
        return dict(self.admin("GET", f"state/jobs/{job_id}"))

    def jobs_since(self, known: set[str]) -> list[dict[str, Any]]:
        """The jobs not in ``known`` (ids from :meth:`job_ids` taken earlier), with their times."""
        return [self.job(job_id) for job_id in sorted(self.job_ids() - known)]

    @property
    def seeded(self) -> dict[str, Any]:
        """The emulator's seed (ids, keys); read once."""
        if self._emulator_state is None:
            self._emulator_state = self.emulator_state()
        return self._emulator_state

    def blob_service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def container(self, name: str) -> Any:
        """The client of container ``name`` in Azurite, which is created if missing."""
        client = self.blob_service().get_container_client(name)
        if not client.exists():
            client.create_container()
        return client

    def upload(self, container: str, blob: str, data: bytes) -> None:
        self.container(container).upload_blob(blob, data, overwrite=True)

    # Airflow -------------------------------------------------------------------------------------

    def write_dags(self, params: Mapping[str, Any]) -> None:
        """Put the bench DAG files and their parameters into the DAG folder (merged with earlier ones).

        Copies of the shipped DAG files go there too (the DAG processor's parse times of them are
        reported); like every DAG of the bench cluster they stay paused unless a benchmark runs them.
        """
        self.params.update(params)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        for template in DAG_TEMPLATES.glob("*.py"):
            if template.name != "__init__.py":
                shutil.copyfile(template, self.dags_folder / template.name)
        for shipped in (ROOT / "dags").glob("*.py"):
            shutil.copyfile(shipped, self.dags_folder / shipped.name)
        shutil.copytree(ROOT / "dags" / "retraining", self.dags_folder / "retraining", dirs_exist_ok=True)
        (self.dags_folder / PARAMS_FILE).write_text(json.dumps(self.params, indent=2, sort_keys=True))
        # Compiled once here, like the project's own DAG folder (see __main__).
        compileall.compile_dir(self.dags_folder, quiet=1)

    @property
    def cluster(self) -> AirflowCluster:
        if self._cluster is None:
            self.write_dags({})
            self._cluster = self.start_cluster(self.home, self.dags_folder)
        return self._cluster

    def stop_cluster(self) -> None:
        """Stop the shared Airflow (a measurement that needs the machine to itself); the next use of
        :attr:`cluster` starts it again on the same home and database."""
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None

    def database_server(self, home: Path) -> PostgresServer | None:
        """The PostgreSQL of the Airflow in ``home`` (None on SQLite), started and stopped with its
        cluster. One per home, kept across restarts: its password is set when its data is created."""
        if self.database == "sqlite":
            return None
        if home not in self._database_servers:
            installed = ensure_system_packages({POSTGRES_PACKAGE: postgres_bin_dir() is not None})
            if installed:
                self.log(f"  setup: installed {', '.join(installed)} from Debian's packages")
            # As root, PostgreSQL runs as the postgres user, which must reach its data directory.
            for folder in (self.work, home):
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o755)
            self._database_servers[home] = PostgresServer(home / "postgres")
        return self._database_servers[home]

    def start_cluster(self, home: Path, dags_folder: Path, *, reparse_seconds: int = 30) -> AirflowCluster:
        """An Airflow of the bench's settings (LocalExecutor, 4 slots, DAGs paused at creation,
        StatsD metrics to :attr:`statsd`, metadata in :attr:`database`) on ``dags_folder``; the
        caller stops it.

        :param reparse_seconds: how often the DAG processor parses a file again when it has not
            changed (``min_file_process_interval``; changed and new files are parsed at once). 30 s
            is Airflow's default, which the shipped deployment keeps: every re-parse of the bench's
            DAG files costs CPU the measurements share (the test clusters' 5 s re-parsed them during
            every run measured).
        """
        if self.statsd is None:
            self.statsd = StatsdListener()
        cluster = AirflowCluster(
            home,
            self.ports,
            dags_folder=dags_folder,
            parallelism=4,
            database=self.database_server(home),
            settings={
                # DAGs run only when a benchmark unpauses them (the shipped DAG copies never do).
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                # Bench DAG files import the Studio sample from devtools.
                "PYTHONPATH": python_path(ROOT),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # The scheduler's loop time (scheduler.scheduler_loop_duration) and the others.
                "AIRFLOW__METRICS__STATSD_ON": "True",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(self.statsd.port),
                "AIRFLOW__METRICS__STATSD_PREFIX": STATSD_PREFIX,
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(reparse_seconds),
            },
        )
        started = time.monotonic()
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        self.log(
            f"  airflow on {DATABASES[self.database]}: up in {time.monotonic() - started:.0f}s"
            f" ({cluster.url}, logs {cluster.log_dir})"
        )
        return cluster

    def run_dag(self, dag_id: str, conf: Mapping[str, Any] | None = None, timeout: float = 600.0) -> dict[str, Any]:
        """Trigger ``dag_id``, wait for it to end; returns the run (REST shape) with ``wall_seconds``."""
        cluster = self.cluster
        cluster.wait_for_dag(dag_id, timeout=180)
        cluster.set_paused(dag_id, False)
        started = time.monotonic()
        run_id = cluster.trigger(dag_id, conf=conf)
        state = cluster.wait_for_run(dag_id, run_id, timeout=timeout)
        wall = time.monotonic() - started
        run = dict(cluster.api("GET", f"dags/{dag_id}/dagRuns/{run_id}"))
        run["wall_seconds"] = wall
        if state != "success":
            failed = [t["task_id"] for t in cluster.task_instances(dag_id, run_id) if t["state"] != "success"]
            raise RuntimeError(f"{dag_id} run {run_id} ended {state}; tasks not successful: {failed}")
        return run


def parse_time(value: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 timestamp from the REST API or the emulator (None stays None)."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def run_python(code: str, env: Mapping[str, str], timeout: float = 300.0) -> str:
    """Run ``code`` in a fresh interpreter of this venv; returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"python exited {result.returncode}: {result.stderr[-3000:]}")
    return result.stdout
