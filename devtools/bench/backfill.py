"""8. Backfill: a real backfill of 30 daily windows, four runs at once, against one run's loop latency.

A copy of the shipped churn config (tiny data: 60 rows a window; its own containers) is backfilled
over 30 daily windows with ``airflow backfill create --max-active-runs 4``, on the real scheduler,
triggerer and LocalExecutor (4 slots). Backfill runs train and evaluate and do not promote. Per run,
its orchestration overhead is its duration minus its BES job's (started -> ended, from the emulator,
matched to the run by the ``bes_job_id`` its ``train`` task pushed). Check: the median overhead per window at
most 2x the loop latency of a single run (measurement 3, ``loop_latency``: data lands -> the endpoint
serves, minus the job), measured in the same bench run (one sample of it when run alone).

``--smoke`` has no Airflow and skips this measurement.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.bench import loop_latency
from devtools.bench.core import Bench, Check, Measurement, fmt_seconds, median, parse_time
from devtools.bench.loop_latency import LOOP_LATENCY_FIGURE, loop_config

TITLE = "Backfill"
WINDOWS = 30
RUNS_AT_ONCE = 4
TARGET_RATIO = 2.0
MODEL = "bench_backfill30"
DAG_ID = f"retrain_{MODEL}"
DATA_CONTAINER = "bench-backfill30-data"
FIRST_DAY = datetime(2026, 6, 1, tzinfo=UTC)


def prepare(bench: Bench) -> None:
    base = loop_config()
    service_id = base["targets"][0]["web_service_id"]
    bench.write_config(
        MODEL,
        {
            **base,
            "model": MODEL,
            "schedule": "0 2 * * *",
            "start_date": FIRST_DAY.isoformat(),
            "data": {**base["data"], "container": DATA_CONTAINER, "prefix": "{window_start:%Y-%m-%d}/"},
            "outputs": {"container": "bench-models", "prefix": MODEL},
            "ledger_container": "bench-ledger-backfill30",
            "targets": [
                {
                    "kind": "classic_endpoint",
                    "name": "bench-backfill30",
                    "web_service_id": service_id,
                    "endpoint_name": "backfill30",
                    "create_endpoint": True,
                }
            ],
        },
    )
    loop_latency.prepare(bench)  # its yardstick, when this measurement runs alone


def land(bench: Bench, days: list[datetime]) -> None:
    from emulator.datasets import generate_csv

    container = bench.container(DATA_CONTAINER)
    for index, day in enumerate(days):
        data = generate_csv("churn", rows=60, window=1 + index % 3).encode()
        container.upload_blob(f"{day:%Y-%m-%d}/part-0.csv", data, overwrite=True)
        container.upload_blob(f"{day:%Y-%m-%d}/_SUCCESS", b"", overwrite=True)


def backfill_runs(bench: Bench, windows: int, timeout: float = 1500.0) -> list[dict[str, Any]]:
    cluster = bench.cluster
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = [
            r
            for r in cluster.api("GET", f"dags/{DAG_ID}/dagRuns", params={"limit": 1000})["dag_runs"]
            if r["run_type"] == "backfill"
        ]
        if len(runs) == windows and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(3)
    raise TimeoutError(f"backfill not done after {timeout:.0f}s: {sorted(r['state'] for r in runs)}")


def job_seconds_of(bench: Bench, run: dict[str, Any]) -> float:
    """The BES job of ``run``'s train task (the ``bes_job_id`` it pushed), started -> ended."""
    path = f"dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/train/xcomEntries/bes_job_id"
    job = bench.job(str(bench.cluster.api("GET", path)["value"]))
    return (parse_time(job["ended_at"]) or 0.0) - (parse_time(job["started_at"]) or 0.0)


def run(bench: Bench) -> Measurement:
    m = Measurement("backfill", TITLE)
    if bench.smoke:
        return m
    if LOOP_LATENCY_FIGURE not in bench.figures:
        bench.log("  the yardstick first: one loop latency sample")
        loop_latency.run(bench)
    yardstick = bench.figures[LOOP_LATENCY_FIGURE]
    cluster = bench.cluster
    days = [FIRST_DAY + timedelta(days=i) for i in range(WINDOWS)]
    land(bench, days)
    cluster.wait_for_dag(DAG_ID, timeout=180)
    started = time.time()
    command = (
        *("backfill", "create", "--dag-id", DAG_ID, "--max-active-runs", str(RUNS_AT_ONCE)),
        *("--from-date", days[0].isoformat(), "--to-date", (days[-1] + timedelta(hours=3)).isoformat()),
        *("--reprocess-behavior", "none"),
    )
    # On SQLite the CLI's write can lose the lock to the scheduler's.
    cluster.airflow(*command, log_name="backfill", lock_retries=4)
    cluster.set_paused(DAG_ID, False)
    runs = backfill_runs(bench, WINDOWS)
    cluster.set_paused(DAG_ID, True)
    failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
    if failed:
        raise RuntimeError(f"backfill runs failed: {failed}")
    ended = max(parse_time(r["end_date"]) or 0.0 for r in runs)
    per_run = []
    for r in runs:
        duration = (parse_time(r["end_date"]) or 0.0) - (parse_time(r["start_date"]) or 0.0)
        job = job_seconds_of(bench, r)
        per_run.append({"run_id": r["dag_run_id"], "run_seconds": round(duration, 2), "job_seconds": round(job, 2)})
    overheads = [r["run_seconds"] - r["job_seconds"] for r in per_run]
    overhead = median(overheads)
    wall = ended - started
    m.raw = {
        "windows": WINDOWS,
        "runs_at_once": RUNS_AT_ONCE,
        "wall_seconds": round(wall, 1),
        "runs": per_run,
        "overhead_seconds_median": round(overhead, 2),
        "overhead_seconds_max": round(max(overheads), 2),
        "loop_latency_seconds": round(yardstick, 2),
    }
    m.checks.append(
        Check(
            case=f"backfill of {WINDOWS} daily windows, {RUNS_AT_ONCE} at once: orchestration overhead per "
            "window (run minus its BES job) vs one run's loop latency",
            value=round(overhead / yardstick, 2),
            unit="x",
            target=TARGET_RATIO,
            ours=f"{fmt_seconds(overhead)} (max {fmt_seconds(max(overheads))})",
            baseline=f"loop latency {fmt_seconds(yardstick)}",
            note="median of the runs",
        )
    )
    m.checks.append(
        Check(
            case=f"backfill of {WINDOWS} daily windows: wall time per window",
            value=round(wall / WINDOWS, 1),
            unit="s",
            target=None,
            ours=f"{fmt_seconds(wall)} in all",
        )
    )
    return m
