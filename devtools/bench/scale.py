"""6. Scale of work: a backfill of daily windows, and promotion fan-out to 1, 10 and 50 endpoints.

Backfill: a copy of the shipped churn config (tiny data: 60 rows a day) is backfilled over daily
windows with ``POST /api/v2/backfills`` (what ``airflow backfill create`` does), four runs at a time;
backfill runs train and evaluate and do not promote. Reported: the wall time, the time per window, and
each run's orchestration overhead (run duration minus its BES job). The 90-window figure is measured
when it fits the time budget, otherwise computed from the measured windows' throughput (marked).

Fan-out: the same config with 1, 10 and 50 classic endpoint targets (created by the run), one forced
promotion each; promotion time is the first promotion task's start to the last one's end (the
promotion tasks are mapped over batches of targets). ``BENCH_SCALE_BACKFILL=0`` in the environment
leaves the backfill out (to time the fan-out alone).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.bench.core import Bench, Check, Measurement, fmt_seconds, median, parse_time
from devtools.bench.loop_latency import loop_config

TITLE = "Scale of work"
DATA_CONTAINER = "bench-scale-data"
BACKFILL_DAG = "retrain_bench_backfill"
FIRST_DAY = datetime(2026, 8, 1, tzinfo=UTC)
WINDOWS_ASKED = 90
BACKFILL_RUNS_AT_ONCE = 4
# Smoke limits: promotion task instances for 50 targets, and a batch of 10 vs 1 in one task.
SMOKE_TASKS_TARGETS = 50
TARGET_TASKS = 2
SMOKE_BATCH = 10
SMOKE_LATENCY_SECONDS = 0.2
TARGET_BATCH_RATIO = 3.0
# Full run: promoting to 50 endpoints takes at most this many times promoting to one.
TARGET_FANOUT_RATIO = 3.0


def settings(smoke: bool) -> dict[str, Any]:
    backfill = os.environ.get("BENCH_SCALE_BACKFILL", "1") != "0"
    if smoke:
        return {"windows": 2 if backfill else 0, "fanout": [1, 3]}
    return {"windows": 5 if backfill else 0, "fanout": [1, 10, 50]}


def fanout_dag(k: int) -> str:
    return f"retrain_bench_fanout_{k}"


def prepare(bench: Bench) -> None:
    if bench.smoke:
        return  # the smoke run needs no DAGs (see run_smoke)
    plan = settings(bench.smoke)
    base = loop_config()
    service_id = base["targets"][0]["web_service_id"]
    backfill = {
        **base,
        "model": "bench_backfill",
        "schedule": "0 2 * * *",
        "start_date": FIRST_DAY.isoformat(),
        "data": {**base["data"], "container": DATA_CONTAINER, "prefix": "backfill/{window_start:%Y-%m-%d}/"},
        "outputs": {"container": "bench-models", "prefix": "backfill"},
        "ledger_container": "bench-ledger-backfill",
        "targets": [
            {
                "kind": "classic_endpoint",
                "name": "bench-backfill",
                "web_service_id": service_id,
                "endpoint_name": "backfill",
                "create_endpoint": True,
            }
        ],
    }
    bench.write_config("bench_backfill", backfill)
    for k in plan["fanout"]:
        bench.write_config(f"bench_fanout_{k}", fanout_config(k, service_id))


def land(bench: Bench, prefix: str, rows: int, window: int) -> None:
    from emulator.datasets import generate_csv

    container = bench.blob_service().get_container_client(DATA_CONTAINER)
    if not container.exists():
        container.create_container()
    data = generate_csv("churn", rows=rows, window=window).encode()
    container.upload_blob(f"{prefix}part-0.csv", data, overwrite=True)
    container.upload_blob(f"{prefix}_SUCCESS", b"", overwrite=True)


def run_backfill(bench: Bench, windows: int) -> dict[str, Any]:
    cluster = bench.cluster
    days = [FIRST_DAY + timedelta(days=i) for i in range(windows)]
    for i, day in enumerate(days):
        land(bench, f"backfill/{day:%Y-%m-%d}/", rows=60, window=1 + i % 3)
    cluster.wait_for_dag(BACKFILL_DAG, timeout=180)
    known_jobs = bench.job_ids()
    started = time.time()
    body = {
        "dag_id": BACKFILL_DAG,
        "from_date": days[0].isoformat(),
        "to_date": (days[-1] + timedelta(hours=3)).isoformat(),
        "max_active_runs": BACKFILL_RUNS_AT_ONCE,
        "run_backwards": False,
        "dag_run_conf": {},
        "reprocess_behavior": "none",
    }
    for attempt in range(1, 11):
        try:
            backfill = cluster.api("POST", "backfills", json=body)
            break
        except RuntimeError as error:
            # On SQLite the API refuses to create a backfill while another process holds the lock.
            if "-> 503" not in str(error) or attempt == 10:
                raise
            time.sleep(2)
    cluster.set_paused(BACKFILL_DAG, False)
    deadline = time.monotonic() + 900
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = [
            r
            for r in cluster.api("GET", f"dags/{BACKFILL_DAG}/dagRuns", params={"limit": 1000})["dag_runs"]
            if r["run_type"] == "backfill"
        ]
        if len(runs) == windows and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(2)
    else:
        raise TimeoutError(f"backfill not done after 900s: {[r['state'] for r in runs]}")
    cluster.set_paused(BACKFILL_DAG, True)
    failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
    if failed:
        raise RuntimeError(f"backfill runs failed: {failed}")
    ended = max(parse_time(r["end_date"]) or 0.0 for r in runs)
    jobs = bench.jobs_since(known_jobs)
    job_seconds = [(parse_time(j["ended_at"]) or 0.0) - (parse_time(j["started_at"]) or 0.0) for j in jobs]
    durations = [(parse_time(r["end_date"]) or 0.0) - (parse_time(r["start_date"]) or 0.0) for r in runs]
    return {
        "backfill_id": backfill.get("id"),
        "windows": windows,
        "wall_seconds": round(ended - started, 1),
        "seconds_per_window": round((ended - started) / windows, 2),
        "run_seconds": [round(d, 1) for d in durations],
        "job_seconds": [round(s, 2) for s in job_seconds],
        "overhead_per_run_seconds": round(median(durations) - median(job_seconds), 2),
    }


def run_fanout(bench: Bench, k: int) -> dict[str, Any]:
    from azureml_retrain.windows import WINDOW_PARAM, window_interval

    day = datetime(2026, 10, 1, tzinfo=UTC)
    land(bench, f"fanout{k}/{day:%Y-%m-%d}/", rows=400, window=1)
    conf = {WINDOW_PARAM: window_interval(day, day + timedelta(days=1)), "promote": "force"}
    run = bench.run_dag(fanout_dag(k), conf=conf, timeout=1200)
    tis = bench.cluster.api(
        "GET", f"dags/{fanout_dag(k)}/dagRuns/{run['dag_run_id']}/taskInstances", params={"limit": 1000}
    )["task_instances"]
    # Mapped over batches of targets: fewer task instances than targets.
    promotions = [t for t in tis if t["task_id"] == "promote_classic_endpoints"]
    if not promotions or any(t["state"] != "success" for t in promotions):
        raise RuntimeError(f"fan-out {k}: promotions {[t['state'] for t in promotions]}")
    report = next(t for t in tis if t["task_id"] == "report")
    if report["state"] != "success":
        raise RuntimeError(f"fan-out {k}: report {report['state']}")
    first = min(parse_time(t["start_date"]) or 0.0 for t in promotions)
    last = max(parse_time(t["end_date"]) or 0.0 for t in promotions)
    return {
        "targets": k,
        "run_seconds": round(run["wall_seconds"], 1),
        "promotion_seconds": round(last - first, 2),
        "promotion_tasks": len(promotions),
        "promotion_task_seconds_median": round(median(float(t["duration"] or 0.0) for t in promotions), 2),
    }


def fanout_config(k: int, service_id: str) -> dict[str, Any]:
    base = loop_config()
    return {
        **base,
        "model": f"bench_fanout_{k}",
        "data": {
            **base["data"],
            "container": DATA_CONTAINER,
            "prefix": f"fanout{k}/{{window_start:%Y-%m-%d}}/",
        },
        "outputs": {"container": "bench-models", "prefix": f"fanout{k}"},
        "ledger_container": f"bench-ledger-fanout{k}",
        "targets": [
            {
                "kind": "classic_endpoint",
                "name": f"fan{k}-{i:02d}",
                "web_service_id": service_id,
                "endpoint_name": f"fan{k}n{i:02d}",
                "create_endpoint": True,
            }
            for i in range(k)
        ],
    }


def promotion_tasks(k: int) -> int:
    """Task instances of the mapped classic promotion for a config with ``k`` endpoint targets."""
    from azureml_retrain.config import ClassicEndpointTarget, parse_config
    from azureml_retrain.factory import target_batches

    config = parse_config(fanout_config(k, "service"), f"bench_fanout_{k}.yaml")
    plan = {"expected_models": {t.name: None for t in config.targets}}
    return len(target_batches(config, plan, ClassicEndpointTarget))


class _Ti:
    map_index = -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def promote_in_process(model: str, names: list[str]) -> float:
    """Seconds for one PatchEndpointOperator task to promote ``model`` to the endpoints ``names``."""
    from azureml_retrain.operators import PatchEndpointOperator

    operator = PatchEndpointOperator(
        task_id="promote",
        model=model,
        web_service_id=loop_config()["targets"][0]["web_service_id"],
        targets=[{"endpoint_name": name, "create_endpoint": True} for name in names],
        ledger_container="bench-ledger-smoke",
        verify_poll_interval=0.2,
    )
    context: Any = {"ti": _Ti(), "run_id": f"smoke-{names[0]}"}
    started = time.perf_counter()
    results = operator.execute(context)
    seconds = time.perf_counter() - started
    if sorted(r["endpoint_name"] for r in results if r["changed"]) != sorted(names):
        raise RuntimeError(f"not every endpoint was promoted: {results}")
    return seconds


def run_smoke(bench: Bench) -> Measurement:
    from airflow.sdk.bases.operator import ExecutorSafeguard

    from emulator.catalog import load_seed
    from emulator.datasets import generate_csv
    from emulator.learning import train

    m = Measurement("scale", TITLE)
    tasks = promotion_tasks(SMOKE_TASKS_TARGETS)
    # A model the churn service accepts, trained here (no BES job, no scheduler).
    trained = train(load_seed().experiments["churn"], generate_csv("churn", rows=200).encode(), {})
    bench.upload("bench-models", "fanout-smoke/model.ilearner", trained.ilearner)
    model = "bench-models/fanout-smoke/model.ilearner"
    ExecutorSafeguard.test_mode = True  # this process plays the task runner's part
    promote_in_process(model, ["fsmokewarm"])  # imports, connections, the ledger container
    delay = {"kind": "delay", "delay_seconds": SMOKE_LATENCY_SECONDS}
    bench.admin("POST", "faults", json={"path": r".*/endpoints/[a-z0-9]+", "action": delay})
    try:
        one = promote_in_process(model, ["fsmoke1"])
        batch = promote_in_process(model, [f"fsmokeb{i:02d}" for i in range(SMOKE_BATCH)])
    finally:
        bench.admin("DELETE", "faults")
    m.raw = {
        "promotion_tasks_for_50_targets": tasks,
        "latency_seconds": SMOKE_LATENCY_SECONDS,
        "one_target_seconds": round(one, 3),
        f"batch_of_{SMOKE_BATCH}_seconds": round(batch, 3),
    }
    m.checks.append(
        Check(
            case=f"promotion fan-out to {SMOKE_TASKS_TARGETS} endpoints: promotion task instances",
            value=tasks,
            unit="tasks",
            target=TARGET_TASKS,
            ours=f"{tasks} task instance(s) (batches of targets)",
            baseline=f"{SMOKE_TASKS_TARGETS} (one per target)",
        )
    )
    m.checks.append(
        Check(
            case=f"one promotion task: batch of {SMOKE_BATCH} endpoints vs 1 (ledger included)",
            value=round(batch / one, 2),
            unit="x",
            target=TARGET_BATCH_RATIO,
            ours=fmt_seconds(batch),
            baseline=fmt_seconds(one),
            note=f"in process, every endpoint request delayed {SMOKE_LATENCY_SECONDS * 1000:.0f} ms by the emulator",
        )
    )
    return m


def run(bench: Bench) -> Measurement:
    if bench.smoke:
        return run_smoke(bench)
    plan = settings(bench.smoke)
    m = Measurement("scale", TITLE)
    backfill: dict[str, Any] | None = None
    if plan["windows"]:
        bench.log(f"  backfill of {plan['windows']} daily windows")
        backfill = run_backfill(bench, plan["windows"])
    fanout: dict[int, dict[str, Any]] = {}
    for k in plan["fanout"]:
        bench.log(f"  promotion fan-out to {k} endpoint(s)")
        fanout[k] = run_fanout(bench, k)
    m.raw = {"backfill": backfill, "fanout": fanout}
    if backfill is not None:
        backfill_checks(m, backfill)
    fanout_checks(m, fanout)
    return m


def backfill_checks(m: Measurement, backfill: dict[str, Any]) -> None:
    measured = backfill["windows"]
    projected = backfill["seconds_per_window"] * WINDOWS_ASKED
    m.checks.append(
        Check(
            case=f"backfill of {WINDOWS_ASKED} daily windows (train + evaluate): wall",
            value=round(projected, 1),
            unit="s",
            target=None,
            ours=f"{fmt_seconds(backfill['wall_seconds'])} for {measured} windows, "
            f"{fmt_seconds(backfill['seconds_per_window'])} per window",
            note=""
            if measured >= WINDOWS_ASKED
            else f"computed from {measured} measured windows, {BACKFILL_RUNS_AT_ONCE} runs at once",
        )
    )
    m.checks.append(
        Check(
            case="backfill: orchestration overhead per run (run minus its BES job)",
            value=backfill["overhead_per_run_seconds"],
            unit="s",
            target=None,
            ours=f"run {fmt_seconds(median(backfill['run_seconds']))}, "
            f"job {fmt_seconds(median(backfill['job_seconds']))}",
        )
    )


def fanout_checks(m: Measurement, fanout: dict[int, dict[str, Any]]) -> None:
    smallest = fanout[min(fanout)]
    for k, result in fanout.items():
        m.checks.append(
            Check(
                case=f"promotion fan-out to {k} endpoint(s): promotion time vs 1",
                value=round(result["promotion_seconds"] / smallest["promotion_seconds"], 2),
                unit="x",
                target=TARGET_FANOUT_RATIO if k >= 50 else None,
                ours=f"{fmt_seconds(result['promotion_seconds'])} ({result['promotion_tasks']} task(s), "
                f"{fmt_seconds(result['promotion_task_seconds_median'])} each)",
                baseline=fmt_seconds(smallest["promotion_seconds"]),
            )
        )
