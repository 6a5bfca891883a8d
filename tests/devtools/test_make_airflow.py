"""`make airflow` as a user runs it: real Airflow components on a real PostgreSQL.

* started and stopped repeatedly through ``make`` itself, by SIGINT (Ctrl-C) or SIGTERM to its
  process group once Airflow is healthy, and once by SIGINT while it is still starting: it stops every
  time, within its deadline and without killing anything, and no process of it is left (by process
  group, by descendant, and by anything still pointing at its Airflow home);
* the backfill command of docs/retraining.md, run from "another shell" set up by the line ``make airflow``
  prints, against the running scheduler: no "database is locked", and exactly the windows the page names;
  a CLI-triggered run reaches the API server on a moved port (the execution API URL), and a SIGTERM
  to the supervisor's group ends it with exit status 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.cluster import descendants, postgres_bin_dir
from devtools.services import HOST, ROOT, LocalPorts, free_port
from support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

# Stop cycles per signal once healthy (make test); MAKE_AIRFLOW_STOP_CYCLES=N runs more.
CYCLES = int(os.environ.get("MAKE_AIRFLOW_STOP_CYCLES", "2"))
READY_TIMEOUT = 240.0
# The supervisor's deadline is 30 s before SIGKILL, then PostgreSQL's fast shutdown (up to 20 s).
EXIT_TIMEOUT = 120.0
BACKFILL_PAGE = ROOT / "docs" / "retraining.md"
DEFAULT_SIGINT_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
)
# The windows docs/retraining.md says its backfill example covers (data interval start, end).
BACKFILL_WINDOWS = [
    (datetime(2026, 11, day, 2, tzinfo=UTC), datetime(2026, 11, day + 1, 2, tzinfo=UTC)) for day in range(20, 26)
]


@dataclass(frozen=True)
class Installation:
    home: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.env['AIRFLOW__API__PORT']}"


@pytest.fixture(scope="module")
def installation(local_ports: LocalPorts) -> Iterator[Installation]:
    if postgres_bin_dir() is None and os.geteuid() != 0:
        pytest.skip("needs PostgreSQL (apt-get install postgresql) or root to install it")
    # PostgreSQL runs as its own user when we are root: every directory above its data must be
    # searchable (so not a 0700 temp dir).
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="make-airflow-", dir=ROOT / "test-artifacts"))
    home.chmod(0o755)
    env = {
        **os.environ,
        "AIRFLOW__API__PORT": str(free_port()),
        "AIRFLOW_POSTGRES_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AZURITE_PORT": str(local_ports.azurite),
        "AZUREML_EMULATOR_PORT": str(local_ports.emulator),
        "AZUREML_EMULATOR_TLS_PORT": str(local_ports.emulator_tls),
    }
    try:
        yield Installation(home, env)
    finally:
        assert not processes_of(home), f"processes of {home} outlived the tests"
        shutil.rmtree(home, ignore_errors=True)


# -- what belongs to an installation ---------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(start time, process group) of a live process; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if stat[0] == "Z" else (int(stat[19]), int(stat[2]))


def _start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[0] if stat else None


def snapshot(pid: int) -> dict[int, tuple[int, int]]:
    """``pid`` and everything below it, each with its start time (so that a reused pid is not
    mistaken for it) and process group."""
    found = {}
    for each in (pid, *descendants(pid)):
        stat = _stat(each)
        if stat is not None:
            found[each] = stat
    return found


def live_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def processes_of(home: Path) -> list[str]:
    """Live processes whose command line or environment names ``home`` (Airflow's processes get
    AIRFLOW_HOME, PostgreSQL's its data directory): whatever escaped any snapshot."""
    mark = str(home).encode()
    found = []
    for pid in live_pids():
        if pid == os.getpid() or _stat(pid) is None:
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if mark in cmdline or mark in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(f"{pid}: {cmdline.replace(bytes(1), b' ').decode(errors='replace')}")
    return found


def assert_nothing_left(before: dict[int, tuple[int, int]], home: Path) -> None:
    """None of ``before`` runs any more, no process is in one of their process groups, and nothing
    else names the installation's home."""
    alive = [pid for pid, (started, _) in before.items() if _start_time(pid) == started]
    assert alive == [], f"still running: {alive}"
    groups = {group for _, group in before.values()}
    in_groups = [pid for pid in live_pids() if (stat := _stat(pid)) is not None and stat[1] in groups]
    assert in_groups == [], f"processes left in the groups {sorted(groups)}: {in_groups}"
    assert processes_of(home) == []


# -- starting and stopping -------------------------------------------------------------------------


def start_make(inst: Installation, log: Path) -> subprocess.Popen[bytes]:
    """``make airflow`` (without re-running its `services` prerequisite: the tests have their own
    Azurite and emulator) as its own process group, as a terminal's foreground job is: with SIGINT's
    default action, which a test run in the background may have inherited as ignored."""
    make = ["make", "-s", "-o", "services", "airflow", f"AIRFLOW_ARGS=--home {shlex.quote(str(inst.home))}"]
    return spawn([sys.executable, "-c", DEFAULT_SIGINT_EXEC, *make], inst, log)


def spawn(argv: list[str], inst: Installation, log: Path) -> subprocess.Popen[bytes]:
    """``argv`` in the project, with the installation's environment, in its own process group, its
    output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=inst.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_while_running(condition: Callable[[], Any], process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    def exited() -> str | None:
        return None if process.poll() is None else f"exited with {process.returncode}"

    try:
        wait_until(condition, what, timeout=READY_TIMEOUT, abort=exited)
    except AssertionError as error:
        pytest.fail(f"{error}\n{log.read_text()[-3000:]}")


def ready(inst: Installation, log: Path) -> bool:
    """The supervisor said so (it polls the health endpoint itself), and the API server agrees."""
    return "Airflow is ready" in log.read_text() and healthy(inst)


def healthy(inst: Installation) -> bool:
    try:
        health = requests.get(f"{inst.url}/api/v2/monitor/health", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def stop(process: subprocess.Popen[bytes], sig: signal.Signals, inst: Installation) -> float:
    """Signal the whole process group; returns how long it took to exit. Leaves nothing behind."""
    before = snapshot(process.pid)
    started = time.monotonic()
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_TIMEOUT:.0f}s after {sig.name}: {sorted(snapshot(process.pid))}")
    took = time.monotonic() - started
    assert_nothing_left(before, inst.home)
    return took


# -- the tests -------------------------------------------------------------------------------------


def test_make_airflow_stops_on_sigint_or_sigterm_to_its_group_every_time(installation: Installation):
    inst = installation
    log = ROOT / "test-artifacts" / "make-airflow-stop.log"
    stops: list[tuple[str, float, float]] = []
    plan = [signal.SIGINT, signal.SIGTERM] * CYCLES
    for cycle, sig in enumerate(plan, 1):
        started = time.monotonic()
        make = start_make(inst, log)
        wait_while_running(lambda: ready(inst, log), make, log, "ready")
        ready_after = time.monotonic() - started
        took = stop(make, sig, inst)
        output = log.read_text()
        stops.append((sig.name, round(ready_after, 1), round(took, 1)))
        # make dies by the same signal once its recipe has finished (it re-raises it on itself).
        assert make.returncode == -sig, output
        assert f"{sig.name}: stopping Airflow" in output, output
        assert "Error" not in output, output  # make's report of a recipe's non-zero exit
        assert re.search(r"Airflow stopped in [\d.]+s( \(slowest: [a-z-]+ [\d.]+s\))?\.\n", output), output
        assert f"Airflow UI: {inst.url} " in output, output  # the moved port, not 8080
        print(f"cycle {cycle}: {sig.name} ready after {ready_after:.1f}s, stopped in {took:.1f}s")

    # Ctrl-C while it is still starting (components launched, not yet healthy) ends it as cleanly.
    make = start_make(inst, log)
    wait_while_running(lambda: "Airflow UI:" in log.read_text(), make, log, "starting its components")
    took = stop(make, signal.SIGINT, inst)
    assert "did not stop" not in log.read_text()
    print(f"SIGINT while starting: stopped in {took:.1f}s; cycles: {stops}")


def test_readme_backfill_against_the_running_scheduler_on_postgresql(installation: Installation, azurite: str):
    inst = installation
    log = ROOT / "test-artifacts" / "make-airflow-backfill.log"
    # Started as `make airflow` starts it, without make: the exit status is the supervisor's own.
    supervisor = spawn([sys.executable, "-m", "devtools.standalone", "--home", str(inst.home)], inst, log)
    try:
        wait_while_running(lambda: ready(inst, log), supervisor, log, "ready")
        env_line = re.search(r'eval "\$\((.+)\)"', log.read_text())
        assert env_line, log.read_text()

        def shell(command: str) -> str:
            """``command`` in another shell (without this test's Airflow variables), set up the way
            `make airflow` tells the user."""
            clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            result = subprocess.run(
                ["bash", "-c", f'eval "$({env_line.group(1)})" && {command}'],
                cwd=ROOT,
                env=clean,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            output = result.stdout + result.stderr
            assert "database is locked" not in output
            assert result.returncode == 0, f"{command}:\n{output[-3000:]}"
            return output

        api = Api(inst)
        wait_while_running(lambda: api.dag_exists("retrain_churn"), supervisor, log, "retrain_churn parsed")
        assert api.get("dags/retrain_churn")["is_paused"] is True  # a fresh `make airflow`

        backfill = documented_backfill_command()
        shell(backfill)
        runs = api.get("dags/retrain_churn/dagRuns", params={"run_type": "backfill"})["dag_runs"]
        windows = sorted(
            (datetime.fromisoformat(run["data_interval_start"]), datetime.fromisoformat(run["data_interval_end"]))
            for run in runs
        )
        assert windows == BACKFILL_WINDOWS
        assert {run["state"] for run in runs} == {"queued"}  # paused: they wait

        # A run from the CLI reaches the API server on its moved port (the execution API URL).
        shell("airflow dags unpause check_connections && airflow dags trigger check_connections")
        run_id = api.wait_for_run("check_connections", supervisor, log)
        assert api.get(f"dags/check_connections/dagRuns/{run_id}")["state"] == "success"
    finally:
        took = stop(supervisor, signal.SIGTERM, inst)
    assert supervisor.returncode == 0, log.read_text()[-3000:]
    logs = [path for path in (inst.home / "logs").rglob("*") if path.is_file()]
    assert logs
    assert not [path for path in logs if "database is locked" in path.read_text(errors="replace")]
    print(f"backfill test: stopped in {took:.1f}s")


def documented_backfill_command() -> str:
    """The backfill example of docs/retraining.md, verbatim, and its statement of the windows it covers."""
    text = BACKFILL_PAGE.read_text()
    commands = re.findall(r"^airflow backfill create .+$", text, flags=re.MULTILINE)
    assert len(commands) == 1, commands
    first, last = BACKFILL_WINDOWS[0], BACKFILL_WINDOWS[-1]
    said = " ".join(text.split())
    assert f"six windows, from {first[0]:%Y-%m-%d %H:%M} → {first[1]:%Y-%m-%d %H:%M}" in said
    assert f"to {last[0]:%Y-%m-%d %H:%M} → {last[1]:%Y-%m-%d %H:%M}" in said
    return str(commands[0])


class Api:
    """The installation's REST API as its admin user."""

    def __init__(self, inst: Installation) -> None:
        self.inst = inst
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            password = json.loads((self.inst.home / "simple_auth_manager_passwords.json.generated").read_text())
            response = requests.post(
                f"{self.inst.url}/auth/token", json={"username": "admin", "password": password["admin"]}, timeout=30
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def get(self, path: str, **kwargs: object) -> dict:
        response = requests.get(
            f"{self.inst.url}/api/v2/{path}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
            **kwargs,  # type: ignore[arg-type]
        )
        response.raise_for_status()
        return dict(response.json())

    def dag_exists(self, dag_id: str) -> bool:
        try:
            self.get(f"dags/{dag_id}")
        except requests.HTTPError:
            return False
        return True

    def wait_for_run(self, dag_id: str, process: subprocess.Popen[bytes], log: Path) -> str:
        found: dict = {}

        def finished() -> bool:
            runs = self.get(f"dags/{dag_id}/dagRuns")["dag_runs"]
            found.update(runs[0] if runs else {})
            return bool(runs) and runs[0]["state"] in ("success", "failed")

        wait_while_running(finished, process, log, f"a finished {dag_id} run")
        return str(found["dag_run_id"])
