"""`make airflow`: Airflow's four components on 127.0.0.1, with the local connections pre-set.

A small supervisor instead of ``airflow standalone``. Standalone keeps its components in its own
process group, so Ctrl-C (SIGINT to the whole group) reaches every component *and* standalone then
sends each one SIGTERM: the second signal re-enters Airflow's exit handlers while the first is still
shutting the executor down, and the scheduler and DAG processor deadlock. SIGTERM to standalone
alone orphans its components.

Here each component (api-server, scheduler, dag-processor, triggerer) is ``airflow <component>`` in
a session of its own, so a signal to the terminal's (or anyone's) process group reaches only this
supervisor. On SIGINT, SIGTERM or SIGHUP it sends each component exactly one SIGTERM, waits up to
``--stop-timeout`` seconds for every process below it to end (LocalExecutor workers, task runners,
log servers: it is their subreaper, so none escapes by being orphaned), SIGKILLs what remains, stops
PostgreSQL and exits 0. Should the supervisor itself be killed, each component gets SIGTERM from
the kernel (parent-death signal).

The metadata database is PostgreSQL, run from Debian's packages with its data in
``.airflow/postgres/``: the CLI, the REST API, the scheduler and the DAG processor all write to it
at once, which SQLite answers with "database is locked". Without PostgreSQL (and no apt-get to
install it) it falls back to SQLite, with a warning.

``python -m devtools.standalone env`` prints the exports that point an ``airflow`` command in
another shell at the same installation (database included).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psutil
import requests

from devtools import services
from devtools.cluster import (
    COMPONENTS,
    POSTGRES_PACKAGE,
    PostgresServer,
    _parents,
    descendants,
    ensure_system_packages,
    postgres_bin_dir,
)

ADMIN_USER = "admin"
DEFAULT_API_PORT = 8080
DEFAULT_POSTGRES_PORT = 15432
STOP_TIMEOUT = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def api_port() -> int:
    """The API server's port: ``AIRFLOW__API__PORT`` if set, as Airflow itself reads it."""
    return int(os.environ.get("AIRFLOW__API__PORT") or DEFAULT_API_PORT)


def api_url() -> str:
    return f"http://{services.HOST}:{api_port()}"


def postgres_port() -> int:
    return int(os.environ.get("AIRFLOW_POSTGRES_PORT") or DEFAULT_POSTGRES_PORT)


def postgres_server(home: Path) -> PostgresServer:
    """The installation's PostgreSQL: data in ``<home>/postgres``, its password kept beside it
    (owner-only) so that every start, and the CLI in another shell, log in with the same one."""
    password_file = home / "postgres.password"
    if not password_file.exists():
        home.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_urlsafe(16))
    return PostgresServer(home / "postgres", port=postgres_port(), password=password_file.read_text().strip())


def postgres_initialised(home: Path) -> bool:
    return (home / "postgres" / "data" / "PG_VERSION").exists()


def sqlite_url(home: Path) -> str:
    # Several processes share the file: wait for a lock rather than fail at once.
    return f"sqlite:///{home / 'airflow.db'}?timeout=60"


def database_url(home: Path) -> str:
    """Where the installation in ``home`` keeps its metadata: PostgreSQL once it was set up there."""
    return postgres_server(home).url() if postgres_initialised(home) else sqlite_url(home)


def _file_secret(path: Path, make: str) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make)
    return path.read_text().strip()


def environment(home: Path, db_url: str) -> dict[str, str]:
    """What every component (and ``env``'s CLI) gets on top of the caller's environment."""
    url = api_url()
    env = services.airflow_environment(home)
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API__PORT": str(api_port()),
            "AIRFLOW__API__BASE_URL": url,
            # Task runners reach the API server here; its default assumes port 8080.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def component_environment(home: Path, db_url: str) -> dict[str, str]:
    env = {**os.environ, **environment(home, db_url)}
    # Every component must sign and check task tokens with the same secret.
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = _file_secret(home / "jwt-secret", secrets.token_urlsafe(32))
    return env


def password_file(home: Path) -> Path:
    return home / "simple_auth_manager_passwords.json.generated"


def ensure_admin_password(home: Path) -> None:
    """Write the admin's password file before the API server starts: it would otherwise generate one
    and print it into its log."""
    path = password_file(home)
    if not path.exists():
        _file_secret(path, json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}) + "\n")


# -- process plumbing ------------------------------------------------------------------------------


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _state(pid: int) -> str | None:
    """The process's status (``psutil.STATUS_ZOMBIE`` for a zombie), or None when it is gone."""
    try:
        return str(psutil.Process(pid).status())
    except psutil.Error:
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, psutil.STATUS_ZOMBIE)


def _below(pid: int, parents: dict[int, int]) -> set[int]:
    """Every process below ``pid`` in one snapshot of the process table."""
    found: set[int] = set()
    for candidate in parents:
        ancestor = parents.get(candidate)
        chain = {candidate}
        while ancestor is not None and ancestor not in chain:
            if ancestor == pid:
                found.add(candidate)
                break
            chain.add(ancestor)
            ancestor = parents.get(ancestor)
    return found


def _reap_orphans(keep: set[int]) -> None:
    """Wait for the zombies this subreaper inherited (not the children Popen waits for)."""
    for pid in descendants(os.getpid()):
        if pid not in keep and _state(pid) == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


@dataclass
class Supervisor:
    home: Path
    stop_timeout: float = STOP_TIMEOUT
    database: PostgresServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stop_signal: int | None = None

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            print(f"\n{signal.Signals(signum).name}: stopping Airflow ...", flush=True)

    def run(self) -> int:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self.request_stop)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            code = self._start_and_watch()
        finally:
            self._stop()
        return code

    def _start_and_watch(self) -> int:
        db_url = self._database_url()
        env = component_environment(self.home, db_url)
        if self.stop_signal is not None:
            return 0
        if self._run_step("db-migrate", ["db", "migrate"], env) != 0:
            if self.stop_signal is not None:
                return 0
            print(f"error: airflow db migrate failed; see {self.log_dir / 'db-migrate.log'}", file=sys.stderr)
            return 1
        if db_url.startswith("sqlite:///"):
            # Readers and the one writer proceed together (the setting persists in the file).
            with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
                db.execute("PRAGMA journal_mode=WAL")
        ensure_admin_password(self.home)
        for component in COMPONENTS:
            if self.stop_signal is not None:
                return 0
            self._start_component(component, env)
        self._write_state()
        shown = _display(password_file(self.home))
        print(f"Airflow UI: {api_url()}  (user '{ADMIN_USER}'; password in {shown})", flush=True)
        print(f"Component logs: {_display(self.log_dir)}/<component>.log. Stop with Ctrl-C.", flush=True)
        ready = False
        while self.stop_signal is None:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    print(f"error: airflow {name} exited with {process.returncode}:", file=sys.stderr)
                    print(_tail(self.log_dir / f"{name}.log"), file=sys.stderr)
                    return 1
            if not ready and _healthy():
                ready = True
                print("Airflow is ready. Another shell reaches it after:", flush=True)
                home = "" if self.home == services.AIRFLOW_HOME else f" --home {shlex.quote(_display(self.home))}"
                print(f'  eval "$({_display(Path(sys.executable))} -m devtools.standalone env{home})"', flush=True)
            _reap_orphans(self._own_pids())
            time.sleep(0.5 if ready else 0.2)
        return 0

    def _database_url(self) -> str:
        present = postgres_bin_dir() is not None
        if not present and os.geteuid() == 0:
            print("setup: PostgreSQL from Debian's packages (apt-get, first run only)", flush=True)
        try:
            installed = ensure_system_packages({POSTGRES_PACKAGE: present})
        except (RuntimeError, subprocess.CalledProcessError) as error:
            print(
                f"warning: PostgreSQL is not available ({error}).\n"
                "warning: running on SQLite: `airflow` commands from another shell may fail with "
                "'database is locked' while Airflow runs.",
                file=sys.stderr,
                flush=True,
            )
            return sqlite_url(self.home)
        if installed:
            print(f"setup: installed {', '.join(installed)} from Debian's packages", flush=True)
        self.database = postgres_server(self.home)
        self.database.start()
        return self.database.url()

    def _database_pids(self, parents: dict[int, int] | None = None) -> set[int]:
        if self.database is None or self.database.process is None:
            return set()
        return {self.database.process.pid, *_below(self.database.process.pid, parents or _parents())}

    def _write_state(self) -> None:
        """Where this run listens, for ``env`` in another shell (which may not have our variables)."""
        state = {"api_port": api_port(), "postgres_port": self.database.port if self.database else None}
        state_file(self.home).parent.mkdir(parents=True, exist_ok=True)
        state_file(self.home).write_text(json.dumps(state))

    def _own_pids(self) -> set[int]:
        """The processes someone else waits for: our Popen children and PostgreSQL's processes."""
        return {p.pid for p in self.processes.values()} | self._database_pids()

    def _airflow_pids(self) -> list[int]:
        """Every live process below this one that is not PostgreSQL (stopped last, on its own)."""
        parents = _parents()  # one snapshot: a PostgreSQL backend forked meanwhile is never mistaken
        database = self._database_pids(parents)
        return [pid for pid in _below(os.getpid(), parents) if pid not in database and _alive(pid)]

    def _run_step(self, name: str, args: list[str], env: dict[str, str]) -> int:
        """Run ``airflow <args>`` to completion (its own session, log in ``<name>.log``), or stop it
        on a stop request."""
        process = self._popen(name, args, env)
        while process.poll() is None:
            if self.stop_signal is not None:
                _terminate_tree(process, self.stop_timeout)
                break
            time.sleep(0.2)
        return process.wait()

    def _start_component(self, name: str, env: dict[str, str]) -> None:
        self.processes[name] = self._popen(name, [name], env)

    def _popen(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        airflow = str(Path(sys.executable).parent / "airflow")
        with (self.log_dir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [airflow, *args],
                cwd=services.ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (single-threaded here)
            )

    def _stop(self) -> None:
        """One SIGTERM to each component; SIGKILL for whatever is still below us at the deadline."""
        started = time.monotonic()
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = started + self.stop_timeout
        took: dict[str, float] = {}
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    took.setdefault(name, time.monotonic() - started)
            _reap_orphans(self._own_pids())
            if not self._airflow_pids():
                break
            time.sleep(0.1)
        left = self._airflow_pids()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        _reap_orphans(self._own_pids())
        if self.database is not None:
            self.database.stop()
        state_file(self.home).unlink(missing_ok=True)
        killed = f"; {len(left)} process(es) did not stop in {self.stop_timeout:.0f}s: killed" if left else ""
        slowest = f" (slowest: {max(took, key=took.__getitem__)} {max(took.values()):.1f}s)" if took else ""
        print(f"Airflow stopped in {time.monotonic() - started:.1f}s{slowest}{killed}.", flush=True)


def _terminate_tree(process: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _healthy() -> bool:
    try:
        response = requests.get(f"{api_url()}/api/v2/monitor/health", timeout=2)
        health = response.json() if response.ok else {}
    except (requests.RequestException, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _display(path: Path) -> str:
    """A path as the user typed their way there: relative to the project when inside it."""
    try:
        return str(path.relative_to(services.ROOT))
    except ValueError:
        return str(path)


def state_file(home: Path) -> Path:
    return home / "run" / "standalone.json"


def print_env(home: Path) -> None:
    """Shell exports for ``airflow`` commands against the installation in ``home`` (the ports of its
    running supervisor, if one runs)."""
    if state_file(home).exists():
        state = json.loads(state_file(home).read_text())
        os.environ["AIRFLOW__API__PORT"] = str(state["api_port"])
        if state["postgres_port"]:
            os.environ["AIRFLOW_POSTGRES_PORT"] = str(state["postgres_port"])
    env = environment(home, database_url(home))
    path = env.pop("PATH").split(os.pathsep, 1)[0]
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    print(f'export PATH={shlex.quote(path)}:"$PATH"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.standalone", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["run", "env"], default="run")
    parser.add_argument("--home", type=Path, default=services.AIRFLOW_HOME, help="AIRFLOW_HOME (default: .airflow)")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT, help="seconds before SIGKILL on stop")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if args.command == "env":
        print_env(home)
        return 0
    return Supervisor(home, stop_timeout=args.stop_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
