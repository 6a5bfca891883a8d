"""7. Models: what carrying 1, 10 and 100 retraining models costs the DAG processor and the scheduler.

An Airflow of its own (the bench's settings: separate components, LocalExecutor, 4 slots) whose DAGs
folder holds the shipped loader, ``retraining_dags.py``, with N copies of the churn config in
``retraining/`` (own model names and targets; their data never lands; one check a minute), and
``same_shape.py``: the same DAGs (the N retraining DAGs and the rollback DAG), task counts and
trigger forms, every task an ``EmptyOperator``. N grows 1 -> 10 -> 100 in the same installation.

- **Parse cost per model**: the DAG processor's own ``last_parse_duration`` of each file (the median
  of ``PARSE_SAMPLES`` re-parses at that N, while every DAG is paused), over N. Checks: the cost per model at 100
  within 1.2x of its cost at 10; per model within 1.15x of the same-shape file's at 10 and at 100.
  At 1 the package's own import is most of the parse: reported, not checked. Reported beside them:
  the cost of each added model (the slope between 10 and 100 models), which leaves out what a parse
  pays once whatever the number of models.
- **Scheduler loop**: ``scheduler.scheduler_loop_duration`` (Airflow's StatsD timer), the median over
  ``LOOP_SECONDS``, with every model's DAG active: unpaused, its latest scheduled run in flight and
  its sensor deferred, waiting for data (the steady state between data arrivals); reported next to
  the loop with no DAG active.

``--smoke`` (in ``make test``) has no Airflow: it parses both files for N = 1 and 10 the way the DAG
processor's child does (``parse_probe``) and reports the time per model against the same-shape file;
its regression limit is on the function calls per model (counted, so the same on any machine under
any load): timed on 2 busy cores, the same code moved between 1.06x and 1.46x.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.bench.core import Bench, Check, Measurement, fmt_seconds, median, run_python
from devtools.bench.parse_cost import SAME_SHAPE_TEMPLATE, probe
from devtools.services import ROOT

TITLE = "Models"
SIZES = (1, 10, 100)
SMOKE_SIZES = (1, 10)
LOADER = "retraining_dags.py"
SAME_SHAPE = "same_shape.py"
GROWTH_TARGET = 1.2  # cost per model at 100 over its cost at 10
SAME_SHAPE_TARGET = 1.15  # cost per model over the same-shape file's
# The smoke run's regression limit: function calls per model at 10 models over the same-shape
# file's, about 10% over the 1.057x of 2026-12-08 (timed, the same code gave 1.06x-1.31x on a quiet
# machine and 1.46x in a busy test run). Our parse's extra work is partly C (YAML, pydantic-core), so
# its calls ratio is below its time ratio (about 1.17x in CPU time): a limit on calls is tighter
# than it looks.
SMOKE_CALLS_LIMIT = 1.15
# Re-parses per file and size: their median. Two files parse side by side with the scheduler and
# the triggerer on 2 cores; a median of 4 moved by 10-15% between runs of the same code.
PARSE_SAMPLES = 8
LOOP_SECONDS = 20.0
LOOP_TIMER = "scheduler.scheduler_loop_duration"
DATA_CONTAINER = "bench-models-data"


def model_name(index: int) -> str:
    return f"models_{index:03d}"


def write_configs(folder: Path, models: int) -> None:
    """Configs 0..models-1 (those already there are kept, so N grows in place)."""
    import yaml

    churn = yaml.safe_load((ROOT / "dags" / "retraining" / "churn.yaml").read_text())
    # The latest interval is due at once: each DAG's scheduled run starts when it is unpaused.
    start = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    (folder / "retraining").mkdir(parents=True, exist_ok=True)
    for index in range(models):
        name = model_name(index)
        path = folder / "retraining" / f"{name}.yaml"
        if path.exists():
            continue
        config = {
            **churn,
            "model": name,
            "start_date": start.isoformat(),
            "catchup": False,
            "data": {
                **churn["data"],
                "container": DATA_CONTAINER,
                "prefix": f"{name}/{{window_start:%Y-%m-%d}}/",
                "poke_interval_seconds": 60,
            },
            "outputs": {"container": "bench-models", "prefix": name},
            "ledger_container": "bench-models-ledger",
            "targets": [{**t, "name": f"{name}-{t['name']}"} for t in churn["targets"]],
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def write_same_shape(bench: Bench, folder: Path) -> None:
    """``same_shape.py`` of the loader's DAGs as they are now (built in a fresh interpreter)."""
    code = (
        "import json, sys; from pathlib import Path; "
        "from azureml_retrain.factory import retraining_dags; "
        "from devtools.bench.parse_probe import dag_shape; "
        f"dags = retraining_dags(Path({str(folder / 'retraining')!r})); "
        "print(json.dumps([dag_shape(d) for d in dags.values()]))"
    )
    shape = json.loads(run_python(code, bench.environment()).strip().splitlines()[-1])
    (folder / SAME_SHAPE).write_text(SAME_SHAPE_TEMPLATE.format(name=LOADER, shape=json.dumps(shape)))


def prepare_folder(bench: Bench, models: int) -> Path:
    folder = bench.work / "models-dags"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "dags" / LOADER, folder / LOADER)
    write_configs(folder, models)
    write_same_shape(bench, folder)
    return folder


def parse_samples(
    cluster: Any, models: int, wanted: int = PARSE_SAMPLES, timeout: float = 300.0
) -> dict[str, list[float]]:
    """``last_parse_duration`` of the loader and the same-shape file, one per re-parse with ``models``
    configs: only parses that built the newest model's DAG count."""
    newest = f"retrain_{model_name(models - 1)}"
    watched = {LOADER: newest, SAME_SHAPE: f"same_shape_{newest}"}
    seen: dict[str, dict[str, float]] = {name: {} for name in watched}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, dag_id in watched.items():
            try:
                dag = cluster.api("GET", f"dags/{dag_id}/details")
            except RuntimeError:  # not parsed yet
                continue
            if dag.get("last_parse_duration") is not None and dag.get("last_parsed_time"):
                seen[name][str(dag["last_parsed_time"])] = float(dag["last_parse_duration"])
        if all(len(values) >= wanted for values in seen.values()):
            break
        time.sleep(2)
    else:
        raise TimeoutError(f"{models} models: parses seen {seen}")
    return {name: sorted(values.values()) for name, values in seen.items()}


def activate(cluster: Any, models: int, timeout: float = 900.0) -> float:
    """Unpause every model's DAG and wait until each has a run whose sensor is deferred; seconds."""
    started = time.monotonic()
    dag_ids = [f"retrain_{model_name(i)}" for i in range(models)]
    cluster.wait_for_dag(dag_ids[-1], timeout=300)
    # One request for all (a request per DAG waits on SQLite's lock while the scheduler writes).
    cluster.api("PATCH", "dags", params={"dag_id_pattern": "retrain_models_%"}, json={"is_paused": False})
    deadline = time.monotonic() + timeout
    waiting: list[str] = dag_ids
    while time.monotonic() < deadline:
        deferred = {
            ti["dag_id"]
            for ti in cluster.api("GET", "dags/~/dagRuns/~/taskInstances", params={"state": "deferred", "limit": 1000})[
                "task_instances"
            ]
            if ti["task_id"] == "wait_for_data"
        }
        waiting = [d for d in dag_ids if d not in deferred]
        if not waiting:
            return time.monotonic() - started
        time.sleep(3)
    raise TimeoutError(f"{models} models: sensors not deferred after {timeout:.0f}s: {waiting[:5]}")


def loop_times(bench: Bench, seconds: float = LOOP_SECONDS) -> list[float]:
    """The scheduler's loop durations (ms) over the next ``seconds``."""
    assert bench.statsd is not None
    began = time.monotonic()
    time.sleep(seconds)
    return bench.statsd.timer_values(f"airflow.{LOOP_TIMER}", began)


def per_model(samples: list[float], models: int) -> float:
    return median(samples) / models


def run_cluster(bench: Bench, m: Measurement) -> None:
    for container in (DATA_CONTAINER, "bench-models", "bench-models-ledger"):
        bench.container(container)
    folder = prepare_folder(bench, SIZES[0])
    bench.stop_cluster()  # the shared Airflow's DAG processor would parse beside this one's
    # Re-parses are what this measures: as often as the test clusters make them.
    cluster = bench.start_cluster(bench.work / "models-airflow", folder, reparse_seconds=5)
    try:
        cluster.wait_for_dag(f"retrain_{model_name(0)}", timeout=300)
        idle = loop_times(bench)
        m.raw["loop_ms_no_dag_active"] = idle
        results: dict[int, dict[str, Any]] = {}
        m.raw["sizes"] = results  # filled as it goes: a size that fails keeps the ones before
        for models in SIZES:
            bench.log(f"  {models} model(s)")
            if models != SIZES[0]:
                prepare_folder(bench, models)
            parses = parse_samples(cluster, models)
            activated = activate(cluster, models)
            loops = loop_times(bench)
            results[models] = {
                "parse_seconds": parses,
                "per_model_seconds": {name: per_model(values, models) for name, values in parses.items()},
                "seconds_to_activate": round(activated, 1),
                "loop_ms": loops,
            }
    finally:
        cluster.stop()
    add_checks(
        m,
        {n: r["per_model_seconds"] for n, r in results.items()},
        "the DAG processor's last_parse_duration",
        target=SAME_SHAPE_TARGET,
    )
    for models, result in results.items():
        m.checks.append(
            Check(
                case=f"scheduler loop with {models} model(s) active (runs in flight, sensors deferred)",
                value=round(median(result["loop_ms"]), 1),
                unit="ms",
                target=None,
                ours=f"median of {len(result['loop_ms'])} loops",
                baseline=f"{median(idle):.1f} ms with no DAG active",
            )
        )


def run_smoke(bench: Bench, m: Measurement) -> None:
    per_size: dict[int, dict[str, float]] = {}
    calls: dict[int, dict[str, float]] = {}
    for models in SMOKE_SIZES:
        folder = prepare_folder(bench, models)
        files = {f"{models}/{LOADER}": folder / LOADER, f"{models}/{SAME_SHAPE}": folder / SAME_SHAPE}
        by_file = {name.split("/", 1)[1]: values for name, values in probe(bench, 5, files, shipped=False).items()}
        per_size[models] = {file: min(s["process_seconds"] for s in runs) / models for file, runs in by_file.items()}
        calls[models] = {file: runs[0]["calls"] / models for file, runs in by_file.items()}
    m.raw["sizes"] = {n: {"per_model_seconds": v, "per_model_calls": calls[n]} for n, v in per_size.items()}
    add_checks(m, per_size, "a forked child like the DAG processor's (best of 5)", target=None)
    largest = max(SMOKE_SIZES)
    ours, same = calls[largest][LOADER], calls[largest][SAME_SHAPE]
    m.checks.append(
        Check(
            case=f"{largest} model(s): function calls of a parse per model vs a same-shape EmptyOperator DAG",
            value=round(ours / same, 3),
            unit="x",
            target=SMOKE_CALLS_LIMIT,
            ours=f"{ours:,.0f} calls",
            baseline=f"{same:,.0f} calls",
            note="regression limit; counted under cProfile in one more forked child",
        )
    )


def add_checks(m: Measurement, per_size: dict[int, dict[str, float]], how: str, *, target: float | None) -> None:
    sizes = sorted(per_size)
    for models in sizes:
        ours, same = per_size[models][LOADER], per_size[models][SAME_SHAPE]
        m.checks.append(
            Check(
                case=f"{models} model(s): parse cost per model vs a same-shape EmptyOperator DAG ({how})",
                value=round(ours / same, 2),
                unit="x",
                target=target if models >= 10 else None,
                ours=fmt_seconds(ours),
                baseline=fmt_seconds(same),
            )
        )
    if len(sizes) >= 2:
        # What one more model costs, without what every parse pays once (the package's import, the
        # configs' scan): the slope between the two largest sizes.
        small, large = sizes[-2], sizes[-1]
        slope = {
            name: (per_size[large][name] * large - per_size[small][name] * small) / (large - small)
            for name in (LOADER, SAME_SHAPE)
        }
        m.checks.append(
            Check(
                case=f"parse cost of each added model ({small} -> {large} models) vs the same-shape file's ({how})",
                value=round(slope[LOADER] / slope[SAME_SHAPE], 2),
                unit="x",
                target=None,
                ours=fmt_seconds(slope[LOADER]),
                baseline=fmt_seconds(slope[SAME_SHAPE]),
            )
        )
    if 10 in per_size and 100 in per_size:
        m.checks.append(
            Check(
                case="parse cost per model at 100 models vs at 10",
                value=round(per_size[100][LOADER] / per_size[10][LOADER], 2),
                unit="x",
                target=GROWTH_TARGET,
                ours=fmt_seconds(per_size[100][LOADER]),
                baseline=fmt_seconds(per_size[10][LOADER]),
            )
        )


def run(bench: Bench) -> Measurement:
    m = Measurement("models", TITLE)
    if bench.smoke:
        run_smoke(bench, m)
    else:
        run_cluster(bench, m)
    return m
