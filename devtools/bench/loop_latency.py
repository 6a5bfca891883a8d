"""3. Loop latency: the window's data lands -> the endpoint serves the new model, minus the job's time.

A copy of the shipped ``churn.yaml`` (its sensor, training, evaluation and both targets; its own
containers, and a schedule that does not fire during the bench) runs on the real scheduler and
triggerer. Each sample: trigger a run for a new day (``promote: force``, so every run promotes), wait
until its sensor has deferred, land the day's CSV and then its ``_SUCCESS`` marker (t0), and wait for
the run to end. The endpoint serves the new model from the emulator's successful PATCH of it (its
request log); the BES job's own time (started -> ended, from the emulator) is subtracted.

Where the time goes comes from the task instances: the sensor (poll interval, stability wait, its
end in the triggerer), ``plan`` if it was still running then (it starts with the sensor), the
scheduling hops between the tasks of the critical path, the tasks' own run time, the
training task around the job (submit, the poll that sees the end, the resume), and the promotion up to
the PATCH. Verification (read back, smoke test, ledger) follows the PATCH and is reported apart.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from devtools.bench.core import Bench, Check, Measurement, fmt_seconds, median, parse_time
from devtools.services import ROOT

TITLE = "Loop latency"
TARGET_SECONDS = 10.0
LOOP_LATENCY_FIGURE = "loop_latency_seconds"
DAG_ID = "retrain_bench_loop"
DATA_CONTAINER = "bench-loop-data"
# The critical path: ``plan`` runs while the sensor waits, and ``evaluate`` branches to the promotion.
PATH = ("wait_for_data", "train", "evaluate", "promote_classic_endpoints")
SMALL_TASKS = ("evaluate",)
FIRST_DAY = datetime(2026, 10, 1, tzinfo=UTC)


def samples(smoke: bool) -> int:
    return 1 if smoke else 3


def loop_config() -> dict[str, Any]:
    """The shipped churn config, pointed at the bench's own containers."""
    data = yaml.safe_load((ROOT / "dags" / "retraining" / "churn.yaml").read_text())
    data["model"] = "bench_loop"
    # Runs are triggered with their window; no scheduled run may compete with them.
    data["schedule"] = "0 2 1 1 *"
    data["data"] = {**data["data"], "container": DATA_CONTAINER, "prefix": "loop/{window_start:%Y-%m-%d}/"}
    data["outputs"] = {"container": "bench-models", "prefix": "loop"}
    data["ledger_container"] = "bench-ledger-loop"
    return dict(data)


def prepare(bench: Bench) -> None:
    bench.write_config("bench_loop", loop_config())


def span(ti: dict[str, Any]) -> tuple[float, float]:
    return parse_time(ti["start_date"]) or 0.0, parse_time(ti["end_date"]) or 0.0


def one_sample(bench: Bench, day: datetime, window: int) -> dict[str, Any]:
    from azureml_retrain.windows import WINDOW_PARAM, window_interval
    from emulator.datasets import generate_csv

    cluster = bench.cluster
    conf = {WINDOW_PARAM: window_interval(day, day + timedelta(days=1)), "promote": "force"}
    known_jobs = bench.job_ids()
    run_id = cluster.trigger(DAG_ID, conf=conf)
    cluster.wait_for_task_state(DAG_ID, run_id, "wait_for_data", {"deferred"}, timeout=180)
    container = bench.blob_service().get_container_client(DATA_CONTAINER)
    prefix = f"loop/{day:%Y-%m-%d}/"
    container.upload_blob(f"{prefix}part-0.csv", generate_csv("churn", rows=400, window=window, seed=window).encode())
    container.upload_blob(f"{prefix}_SUCCESS", b"")
    landed = time.time()
    state = cluster.wait_for_run(DAG_ID, run_id, timeout=600)
    if state != "success":
        raise RuntimeError(f"{DAG_ID} run {run_id} ended {state}")
    tis = cluster.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    by_task: dict[str, list[dict[str, Any]]] = {}
    for ti in tis["task_instances"]:
        by_task.setdefault(ti["task_id"], []).append(ti)
    patches = [
        parse_time(r["time"]) or 0.0
        for r in bench.emulator_requests("mgmt.endpoint.patch")
        if r["status"] == 200 and (parse_time(r["time"]) or 0.0) > landed
    ]
    jobs = bench.jobs_since(known_jobs)
    if len(jobs) != 1 or not patches:
        raise RuntimeError(f"expected one BES job and a PATCH after the data landed: jobs {jobs}, patches {patches}")
    job_start, job_end = parse_time(jobs[0]["started_at"]) or 0.0, parse_time(jobs[0]["ended_at"]) or 0.0
    served = max(patches)

    steps: dict[str, float] = {}
    spans = {task: span(by_task[task][0]) for task in PATH[:-1]}
    # ``train`` needs the plan too: were it still running when the sensor ended, the rest is its.
    plan_late = max(0.0, span(by_task["plan"][0])[1] - spans["wait_for_data"][1])
    promotions = sorted(span(ti) for ti in by_task[PATH[-1]])
    spans[PATH[-1]] = (promotions[0][0], max(end for _, end in promotions))
    steps["sensor: landed -> accepted, task done"] = spans["wait_for_data"][1] - landed
    steps["plan: still running when the sensor ended"] = plan_late
    hops = -plan_late
    for upstream, downstream in itertools.pairwise(PATH):
        hops += spans[downstream][0] - spans[upstream][1]
    steps[f"scheduling hops ({len(PATH) - 1}, task end -> next task start)"] = hops
    steps[f"{', '.join(SMALL_TASKS)}: run time"] = sum(spans[t][1] - spans[t][0] for t in SMALL_TASKS)
    steps["train: start -> job started (submit)"] = job_start - spans["train"][0]
    steps["train: job ended -> task done"] = spans["train"][1] - job_end
    steps["promotion: start -> PATCH served"] = served - spans[PATH[-1]][0]
    job_seconds = job_end - job_start
    latency = served - landed - job_seconds
    return {
        "run_id": run_id,
        "latency_seconds": round(latency, 2),
        "landed_to_served_seconds": round(served - landed, 2),
        "job_seconds": round(job_seconds, 2),
        "first_target_served_after": round(min(patches) - landed, 2),
        "verification_after_patch_seconds": round(spans[PATH[-1]][1] - served, 2),
        "run_end_after_landed_seconds": round(
            max(span(ti)[1] for tis_ in by_task.values() for ti in tis_ if ti["end_date"]) - landed, 2
        ),
        "breakdown_seconds": {k: round(v, 2) for k, v in steps.items()},
    }


def run(bench: Bench) -> Measurement:
    m = Measurement("loop_latency", TITLE)
    cluster = bench.cluster
    bench.container(DATA_CONTAINER)
    cluster.wait_for_dag(DAG_ID, timeout=180)
    cluster.set_paused(DAG_ID, False)
    results = []
    for i in range(samples(bench.smoke)):
        results.append(one_sample(bench, FIRST_DAY + timedelta(days=i), window=i + 1))
        bench.log(f"  sample {i + 1}: {results[-1]['latency_seconds']:.1f}s")
    latency = median(r["latency_seconds"] for r in results)
    bench.figures[LOOP_LATENCY_FIGURE] = latency  # the backfill measurement's yardstick
    breakdown = {k: median(r["breakdown_seconds"][k] for r in results) for k in results[0]["breakdown_seconds"]}
    config = loop_config()["data"]
    m.raw = {"samples": results, "median_breakdown_seconds": breakdown, "sensor_config": config}
    m.checks.append(
        Check(
            case="data landed -> endpoint serves, minus the BES job",
            value=round(latency, 2),
            unit="s",
            target=TARGET_SECONDS,
            ours=f"{fmt_seconds(median(r['landed_to_served_seconds'] for r in results))} in all, "
            f"job {fmt_seconds(median(r['job_seconds'] for r in results))}",
            note=f"median of {len(results)}",
        )
    )
    m.notes.append(
        "where the loop's time goes (medians): "
        + "; ".join(f"{k} {fmt_seconds(v)}" for k, v in breakdown.items())
        + f"; after serving: verification {fmt_seconds(median(r['verification_after_patch_seconds'] for r in results))}"
    )
    m.notes.append(
        f"sensor as shipped in churn.yaml: poke_interval_seconds {config['poke_interval_seconds']}, "
        f"stable_for_seconds {config['stable_for_seconds']}, marker {config['marker']}"
    )
    return m
