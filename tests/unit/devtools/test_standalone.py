"""`make airflow`'s supervisor: what another shell gets from ``python -m devtools.standalone env``, and
which processes it counts as its own when it stops (the real start/stop is in
tests/devtools/test_make_airflow.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from devtools import standalone


def exports(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What ``env`` exports, from a shell without our port variables (PATH aside: it extends "$PATH")."""
    for name in ("AIRFLOW__API__PORT", "AIRFLOW_POSTGRES_PORT"):
        monkeypatch.delenv(name, raising=False)
    lines = [line for line in _printed(home).splitlines() if not line.startswith("export PATH=")]
    pairs = (part.partition("=") for part in shlex.split("\n".join(lines)) if "=" in part)
    return {key: value for key, _, value in pairs}


def _printed(home: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        standalone.print_env(home)
    return out.getvalue()


def test_env_points_at_sqlite_until_postgresql_was_set_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = exports(tmp_path, monkeypatch)
    assert env["AIRFLOW_HOME"] == str(tmp_path)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow.db'}?timeout=60"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"


def test_env_follows_the_running_supervisor_ports_and_its_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "postgres" / "data").mkdir(parents=True)
    (tmp_path / "postgres" / "data" / "PG_VERSION").write_text("15\n")
    standalone.state_file(tmp_path).parent.mkdir(parents=True)
    standalone.state_file(tmp_path).write_text(json.dumps({"api_port": 18081, "postgres_port": 25433}))
    env = exports(tmp_path, monkeypatch)
    password = (tmp_path / "postgres.password").read_text().strip()
    assert oct((tmp_path / "postgres.password").stat().st_mode & 0o777) == "0o600"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://airflow:{password}@127.0.0.1:25433/airflow"
    )
    assert env["AIRFLOW__API__PORT"] == "18081"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18081/execution/"


def test_the_printed_exports_work_in_a_shell(tmp_path: Path):
    script = f'{_printed(tmp_path)}\ncommand -v airflow && echo "$AIRFLOW_HOME"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=dict(os.environ))
    airflow, home = result.stdout.split()
    assert Path(airflow).name == "airflow" and home == str(tmp_path)


def test_processes_below_count_in_one_snapshot_without_loops():
    parents = {10: 1, 11: 10, 12: 11, 20: 1, 21: 20, 30: 31, 31: 30}
    assert standalone._below(10, parents) == {11, 12}
    assert standalone._below(1, parents) == {10, 11, 12, 20, 21}
    assert standalone._below(30, parents) == {31}
