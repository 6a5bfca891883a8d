"""Runs made the way `make demo` makes them never take a scheduled or backfill run's place.

One model's config in a real Airflow installation (api-server, scheduler, DAG processor, triggerer),
its DAG paused at creation as under `make airflow`. The demo's own functions land its data and run
the three latest complete windows with `airflow dags test` (dry runs: they stop after planning), in
the installation's database. Then the DAG is unpaused: the scheduler creates its run for the latest
complete window, one the demo ran, and moves on to the next window, never logging that a run
already exists. A backfill from the CLI over the windows before it creates a run for every one of
them, the demo's included.

Before the fix, the demo gave each run the logical date of its window's *end*, which is the logical
date of the next window's scheduled run: the scheduler logged "run already exists" and never moved on,
and the backfill left out the window after each demo window (each step of this test failed on that).
Now `dags test` gives a run the moment it started as its logical date, never a schedule's tick.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools import demo
from devtools.cluster import AirflowCluster
from devtools.services import LocalPorts
from support.dags import install_retraining_config
from support.retraining import shipped_config_data
from support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(600)]

Window = tuple[datetime, datetime]
SKIPPED_AS_EXISTING = "run already exists; skipping dagrun creation"


def model_config(model: str) -> dict[str, Any]:
    """The shipped churn config (daily, no catch-up) under another name, with its own data folder,
    outputs and ledger, its daily tick half a day from now: no window ends while the test runs, so the
    latest complete window stays the one the test reads at its start."""
    data = copy.deepcopy(shipped_config_data("churn"))
    data["model"] = model
    data["schedule"] = f"0 {(datetime.now(UTC).hour + 12) % 24} * * *"
    data["data"] |= {"prefix": f"{model}/{{window_start:%Y-%m-%d}}/", "poke_interval_seconds": 1}
    data["outputs"]["prefix"] = model
    data["ledger_container"] = f"ledger-{model.replace('_', '-')}"
    for target in data["targets"]:
        target["name"] = f"{model.replace('_', '-')}-{target['endpoint_name']}"
    return data


class Installation:
    def __init__(self, cluster: AirflowCluster, dags: Path, model: str) -> None:
        self.cluster, self.dags, self.model = cluster, dags, model
        self.dag_id = f"retrain_{model}"

    def dag(self) -> dict[str, Any]:
        return dict(self.cluster.api("GET", f"dags/{self.dag_id}"))

    def next_window(self) -> Window | None:
        """The data interval of the run the scheduler creates next."""
        dag = self.dag()
        start, end = dag["next_dagrun_data_interval_start"], dag["next_dagrun_data_interval_end"]
        return (parse(start), parse(end)) if start and end else None

    def runs(self, run_type: str | None = None) -> list[dict[str, Any]]:
        params = {"limit": 100} | ({"run_type": run_type} if run_type else {})
        return list(self.cluster.api("GET", f"dags/{self.dag_id}/dagRuns", params=params)["dag_runs"])

    def planned_window(self, run_id: str) -> Window:
        """The window the run's ``plan`` task planned (the plugin's plan, not the demo's conf format)."""
        entry = self.cluster.api(
            "GET", f"dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/plan/xcomEntries/return_value"
        )
        window = entry["value"]["window"]
        return parse(window["start"]), parse(window["end"])

    def scheduler_log(self) -> str:
        return (self.cluster.log_dir / "scheduler.out").read_text(errors="replace")

    def skipped(self) -> list[str]:
        return [line for line in self.scheduler_log().splitlines() if SKIPPED_AS_EXISTING in line]

    def exited(self) -> str | None:
        """Why waiting for the scheduler is pointless: one of the components exited."""
        for name, process in self.cluster.processes.items():
            if process.poll() is not None:
                return f"airflow {name} exited with {process.returncode}"
        return None

    def wait(self, condition: Callable[[], Any], what: str) -> Any:
        return wait_until(condition, what, timeout=240, interval=1, abort=self.exited)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def interval(run: dict[str, Any]) -> Window | None:
    start, end = run["data_interval_start"], run["data_interval_end"]
    return (parse(start), parse(end)) if start and end else None


@pytest.fixture(scope="module")
def installation(azurite: str, local_ports: LocalPorts, tmp_path_factory: Any) -> Iterator[Installation]:
    model = f"demo_sched_{uuid.uuid4().hex[:6]}"
    home = tmp_path_factory.mktemp("demo-then-scheduler")
    dags = home / "dags"
    dags.mkdir()
    install_retraining_config(dags, model_config(model))
    # As under `make airflow`: a new DAG waits, paused, until its user unpauses it.
    cluster = AirflowCluster(
        home=home / "airflow",
        ports=local_ports,
        dags_folder=dags,
        settings={"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"},
    )
    try:
        cluster.start()
        cluster.wait_for_dag(f"retrain_{model}")
        yield Installation(cluster, dags, model)
    finally:
        cluster.stop()


def test_demo_runs_leave_every_window_to_the_scheduler_and_to_backfills(
    installation: Installation, blob_service: Any, local_ports: LocalPorts
) -> None:
    inst, cluster = installation, installation.cluster
    assert inst.dag()["is_paused"] is True

    # The window the scheduler will run first: with no catch-up, the latest complete interval.
    latest = inst.wait(inst.next_window, "the DAG's next scheduled window")
    day = timedelta(days=1)
    assert latest[1] <= datetime.now(UTC) < latest[1] + day, latest

    # -- `make demo`: its configs, its data, its runs (oldest window first), in this installation.
    models, skipped = demo.demo_models(inst.dags / "retraining")
    assert [m.config.model for m in models] == [inst.model], skipped
    config = models[0].config
    days = [latest[0] - day * (demo.DAY_COUNT - 1 - i) for i in range(demo.DAY_COUNT)]
    demo_windows = [demo.window_of(config, d) for d in days]
    assert demo_windows[-1] == latest  # the demo's newest window is the one the scheduler runs next
    demo.land_data(models, days, ports=local_ports)
    env = cluster.environment()
    for window in demo_windows:
        code, _ = demo.run_dag(config.dag_id, window, conf={"dry_run": True}, env=env, log_dir=cluster.log_dir)
        assert code == 0, (cluster.log_dir / f"demo-{config.dag_id}-{window[0]:%Y%m%d}.log").read_text()[-3000:]
    # The scheduler's and the backfill's runs then wait in their sensor rather than train.
    data = blob_service.get_container_client(config.data.container)
    for blob in list(data.list_blobs(name_starts_with=f"{inst.model}/")):
        data.delete_blob(blob.name)

    demo_runs = inst.runs()
    assert len(demo_runs) == len(demo_windows), demo_runs
    assert {(r["run_type"], r["state"]) for r in demo_runs} == {("manual", "success")}, demo_runs
    assert sorted(inst.planned_window(r["dag_run_id"]) for r in demo_runs) == demo_windows
    # A scheduled or backfill run of window W has logical date W's start: the demo's runs hold none.
    demo_dates = {parse(r["logical_date"]) for r in demo_runs if r["logical_date"]}
    assert not demo_dates & {latest[0] + day * k for k in range(-5, 3)}, demo_runs
    assert inst.next_window() == latest  # the demo moved nothing

    # -- `make airflow`: the user unpauses the DAG.
    cluster.set_paused(inst.dag_id, False)
    inst.wait(
        lambda: inst.runs("scheduled") or SKIPPED_AS_EXISTING in inst.scheduler_log(),
        "the scheduler to create the latest window's run (or to skip it)",
    )
    assert SKIPPED_AS_EXISTING not in inst.scheduler_log(), inst.skipped()
    scheduled = inst.runs("scheduled")
    assert [interval(r) for r in scheduled] == [latest], scheduled
    following = (latest[1], latest[1] + day)
    inst.wait(lambda: inst.next_window() == following, f"the next scheduled window to become {following}")
    dag = inst.dag()
    assert parse(dag["next_dagrun_run_after"]) == following[1], dag
    # Nothing holds the next window's logical date either: its run is created when it is due.
    assert parse(dag["next_dagrun_logical_date"]) not in demo_dates
    # Back to quiet: the scheduled run waits for data that never lands, and backfill runs stay queued.
    cluster.set_paused(inst.dag_id, True)

    # -- A backfill over the three windows before the latest: two of them the demo's.
    backfilled = [(latest[0] - day * k, latest[1] - day * k) for k in (3, 2, 1)]
    backfill = (
        *("backfill", "create", "--dag-id", inst.dag_id, "--max-active-runs", "2"),
        *("--from-date", backfilled[0][0].isoformat(), "--to-date", backfilled[-1][0].isoformat()),
    )
    # This installation shares one SQLite file with `dags test` (as the demo and `make airflow` do
    # only on its SQLite fallback), where the CLI's write can lose the lock to the scheduler's:
    # "database is locked", the reason `make airflow` runs PostgreSQL.
    cluster.airflow(*backfill, log_name="backfill", lock_retries=2)
    runs = inst.runs("backfill")
    assert sorted(interval(r) for r in runs) == backfilled, runs
    assert {r["state"] for r in runs} == {"queued"}, runs
    assert {r["dag_run_id"]: r["state"] for r in inst.runs("manual")} == {r["dag_run_id"]: "success" for r in demo_runs}

    assert SKIPPED_AS_EXISTING not in inst.scheduler_log(), inst.skipped()
