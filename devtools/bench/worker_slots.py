"""2. Worker slots during long jobs: N concurrent BES jobs on a scheduler with 4 worker slots.

The project: N ``SubmitBesJobOperator`` tasks with ``start_from_trigger=True`` (its default poll
schedule): the scheduler hands each to the triggerer, which submits, starts and follows the job and
ends the task, so no worker slot is taken. Each N runs on a triggerer that has just started.
The baseline: the Studio-generated BES sample (submit, start, GET every second) in a ``PythonOperator``
mapped over N jobs, which holds a slot for a job's whole duration, so 4 slots run 4 jobs at a time.

Reported per N: wall time from trigger to the run's end divided by one job's time, and the
triggerer's memory (PSS of its process tree, idle and peak). A polling run of N jobs takes
``ceil(N / 4)`` waves of one job each; where a polling N does not fit the time budget it is computed
from the measured N's time per wave (and marked extrapolated).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import psutil

from devtools.bench.core import Bench, Check, Measurement, parse_time
from devtools.cluster import descendants

SLOTS = 4
TARGET_RATIO = 2.0
TRAINING_ROWS = 60
GLOBAL_PARAMETERS = {"Number of trees": "5"}

TITLE = "Worker slots during long jobs"


def settings(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"job_seconds": 8.0, "deferrable_sizes": [8], "polling_sizes": [4], "gated_size": 8}
    return {"job_seconds": 30.0, "deferrable_sizes": [10, 50, 100], "polling_sizes": [10], "gated_size": 100}


def dag_params(bench: Bench) -> dict[str, Any]:
    plan = settings(bench.smoke)
    return {
        "worker_slots": {
            "container": "bench-slots",
            "input": "bench-slots/input/churn.csv",
            "azureml_conn_id": "azureml_churn_training",
            "global_parameters": GLOBAL_PARAMETERS,
            "deferrable_sizes": plan["deferrable_sizes"],
            "polling_sizes": plan["polling_sizes"],
        }
    }


def process_memory(pid: int) -> int:
    """Bytes of ``pid``: PSS (shared pages split between their users), else RSS; 0 once it is gone."""
    try:
        process = psutil.Process(pid)
        try:
            return int(process.memory_full_info().pss)
        except (psutil.AccessDenied, AttributeError):  # smaps unreadable, or no PSS on this system
            return int(process.memory_info().rss)
    except psutil.Error:
        return 0


class MemorySampler:
    """PSS (else RSS) of a process tree, sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="memory-sampler")

    def measure(self) -> int:
        return sum(process_memory(pid) for pid in (self.pid, *descendants(self.pid)))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.measure())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_size(bench: Bench, mode: str, n: int, job_seconds: float) -> dict[str, Any]:
    dag_id = f"bench_slots_{mode}_{n}"
    bench.admin("DELETE", "requests")
    known_jobs = bench.job_ids()
    triggerer = bench.cluster.processes["triggerer"]
    sampler = MemorySampler(triggerer.pid)
    idle = sampler.measure()
    with sampler:
        run = bench.run_dag(dag_id, timeout=max(900.0, job_seconds * n))
    started = parse_time(run["start_date"]) or 0.0
    jobs = bench.jobs_since(known_jobs)
    starts = sorted(parse_time(j["started_at"]) or 0.0 for j in jobs)
    ends = sorted(parse_time(j["ended_at"]) or 0.0 for j in jobs)
    durations = [(parse_time(j["ended_at"]) or 0.0) - (parse_time(j["started_at"]) or 0.0) for j in jobs]
    status_calls = len(bench.emulator_requests("bes.status"))
    return {
        "n": n,
        "wall_seconds": round(run["wall_seconds"], 2),
        "ratio": round(run["wall_seconds"] / job_seconds, 3),
        "jobs": len(jobs),
        "job_seconds_median": round(sorted(durations)[len(durations) // 2], 2) if durations else None,
        "first_job_started_after": round(starts[0] - started, 2) if starts else None,
        "last_job_started_after": round(starts[-1] - started, 2) if starts else None,
        "last_job_ended_after": round(ends[-1] - started, 2) if ends else None,
        "status_calls": status_calls,
        "status_calls_per_job": round(status_calls / max(len(jobs), 1), 2),
        "triggerer_pss_idle_mb": round(idle / 2**20, 1),
        "triggerer_pss_peak_mb": round(max([idle, *sampler.samples]) / 2**20, 1),
    }


def run(bench: Bench) -> Measurement:
    plan = settings(bench.smoke)
    job_seconds = float(plan["job_seconds"])
    m = Measurement("worker_slots", TITLE)
    from emulator.datasets import generate_csv

    bench.upload("bench-slots", "input/churn.csv", generate_csv("churn", rows=TRAINING_ROWS, window=1).encode())
    bench.write_dags(dag_params(bench))
    bench.set_job_duration(job_seconds)
    deferrable = {}
    for n in plan["deferrable_sizes"]:
        # Each size on a triggerer that has just started, as each baseline run has fresh workers: the
        # secrets masker of a process never forgets a secret (see docs/known-limits.md).
        bench.cluster.stop_component("triggerer")
        bench.cluster.start_component("triggerer")
        time.sleep(3)
        bench.cluster.wait_healthy(components=("triggerer",))
        bench.log(f"  deferrable, N={n} x {job_seconds:g}s jobs")
        deferrable[n] = run_size(bench, "deferrable", n, job_seconds)
    polling = {}
    for n in plan["polling_sizes"]:
        bench.log(f"  Studio sample polling loop, N={n} x {job_seconds:g}s jobs")
        polling[n] = run_size(bench, "polling", n, job_seconds)
    bench.set_job_duration(0)

    measured_n = max(polling)
    per_wave = polling[measured_n]["wall_seconds"] / math.ceil(measured_n / SLOTS)
    m.raw = {
        "job_seconds": job_seconds,
        "worker_slots": SLOTS,
        "deferrable": deferrable,
        "polling": polling,
        "polling_seconds_per_wave": round(per_wave, 2),
    }
    for n, result in deferrable.items():
        if n in polling:
            baseline_wall, note = polling[n]["wall_seconds"], ""
        else:
            baseline_wall = per_wave * math.ceil(n / SLOTS)
            note = f"baseline extrapolated from N={measured_n}: {math.ceil(n / SLOTS)} waves"
        m.checks.append(
            Check(
                case=f"N={n} jobs of {job_seconds:g}s: wall / one job",
                value=result["ratio"],
                unit="x",
                target=TARGET_RATIO if n == plan["gated_size"] else None,
                ours=f"{result['wall_seconds']:.0f} s",
                baseline=f"{baseline_wall:.0f} s ({baseline_wall / job_seconds:.2f}x)",
                note=note,
            )
        )
    biggest = deferrable[max(deferrable)]
    m.checks.append(
        Check(
            case=f"triggerer memory (PSS) with N={max(deferrable)} deferred",
            value=biggest["triggerer_pss_peak_mb"],
            unit="MB",
            target=None,
            ours=f"{biggest['triggerer_pss_idle_mb']:.0f} MB idle -> {biggest['triggerer_pss_peak_mb']:.0f} MB peak",
            baseline="no triggerer; 4 worker slots busy",
        )
    )
    m.notes.append(
        f"{SLOTS} LocalExecutor slots; each job waits {job_seconds:g}s in the emulator (job_min_duration_seconds)."
    )
    return m
