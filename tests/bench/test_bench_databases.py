"""The bench's choice of Airflow's metadata database (``--database``), without running a measurement:
what runs on which database, and how the table and the JSON file tell the rows apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import devtools.bench.__main__ as bench_main
from devtools.bench import core
from devtools.bench.core import Bench, Check, Measurement, render_table


def measured(key: str, database: str | None) -> Measurement:
    return Measurement(key, key.replace("_", " "), checks=[Check("a case", 1.0, "x", 2.0, "1 s")], database=database)


@pytest.fixture
def fake_measurements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """main() with every measurement faked: returns the (database, names) of each pass."""
    passes: list[tuple[str, list[str]]] = []

    def measure(bench: Bench, names: list[str]) -> list[Measurement]:
        passes.append((bench.database, names))
        return [measured(n, bench.database if n in bench_main.on_airflow(bench.smoke) else None) for n in names]

    monkeypatch.setattr(bench_main, "measure", measure)
    monkeypatch.setattr(bench_main, "cpu_reference_seconds", lambda: 0.1)
    monkeypatch.setattr(core, "cpu_reference_seconds", lambda: 0.1)
    monkeypatch.setattr(Bench, "configure_process", lambda self: None)
    return passes


def test_both_databases_run_what_needs_airflow_on_each_and_the_rest_once(
    fake_measurements: list[tuple[str, list[str]]], tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    only = ["parse_cost", "loop_latency", "models"]
    argv = ["--database", "both", "--only", *only, "--out", str(out), "--work-dir", str(tmp_path / "work")]

    assert bench_main.main(argv) == 0

    assert fake_measurements == [("sqlite", only), ("postgresql", ["loop_latency", "models"])]
    document = json.loads(out.read_text())
    assert document["database"] == "both"
    # Table order: by number, each number's SQLite row before its PostgreSQL row.
    assert list(document["measurements"]) == [
        "parse_cost",
        "loop_latency@sqlite",
        "loop_latency@postgresql",
        "models@sqlite",
        "models@postgresql",
    ]
    assert document["measurements"]["models@postgresql"]["database"] == "postgresql"
    assert document["measurements"]["parse_cost"]["database"] is None


def test_airflow_only_leaves_out_the_measurements_without_airflow(
    fake_measurements: list[tuple[str, list[str]]], tmp_path: Path
) -> None:
    argv = ["--database", "postgresql", "--airflow-only", "--out", str(tmp_path / "b.json")]
    argv += ["--work-dir", str(tmp_path / "work")]

    assert bench_main.main(argv) == 0

    assert fake_measurements == [("postgresql", ["worker_slots", "loop_latency", "scale", "models", "backfill"])]


def test_the_table_names_the_database_of_each_row() -> None:
    table = render_table([measured("parse_cost", None), measured("backfill", "postgresql")])

    header, _, no_airflow, on_postgres = table.splitlines()
    assert [cell.strip() for cell in header.split("|")][1:4] == ["#", "measurement", "database"]
    assert [cell.strip() for cell in no_airflow.split("|")][3] == "-"
    assert [cell.strip() for cell in on_postgres.split("|")][3] == "PostgreSQL"


def test_one_postgresql_server_per_airflow_home_and_none_on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "ensure_system_packages", lambda packages: [])
    on_sqlite = Bench(smoke=True)
    on_postgres = Bench(smoke=True, database="postgresql")
    try:
        assert on_sqlite.database_server(on_sqlite.home) is None
        shared = on_postgres.database_server(on_postgres.home)
        # The same server (and password) when the shared Airflow starts again on its home.
        assert shared is not None and on_postgres.database_server(on_postgres.home) is shared
        other = on_postgres.database_server(on_postgres.work / "models-airflow")
        assert other is not None and other is not shared and other.directory != shared.directory
    finally:
        shutil.rmtree(on_sqlite.work, ignore_errors=True)
        shutil.rmtree(on_postgres.work, ignore_errors=True)


def test_an_unknown_database_is_refused() -> None:
    with pytest.raises(ValueError, match="mysql"):
        Bench(smoke=True, database="mysql")
