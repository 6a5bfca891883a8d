"""6. Scale of work: promotion fan-out to 1, 10 and 50 endpoints (backfills: measurement 8).

A copy of the shipped churn config with 1, 10 and 50 classic endpoint targets (created by the run),
one forced promotion each; promotion time is the first promotion task's start to the last one's end
(the promotion tasks are mapped over batches of targets). Each size runs :data:`FANOUT_ROUNDS`
times, the sizes taking turns, each round with endpoints and a ledger of its own (every promotion
is a target's first); the row is each size's median round.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.bench.core import Bench, Check, Measurement, fmt_seconds, median, parse_time
from devtools.bench.loop_latency import loop_config

TITLE = "Scale of work"
DATA_CONTAINER = "bench-scale-data"
# Smoke limits: promotion task instances for 50 targets, and a batch of 10 vs 1 in one task, in
# endpoint requests waited for one after another (counted from the emulator's request log, so the
# verdict does not depend on the machine's speed; the times are reported beside it).
SMOKE_TASKS_TARGETS = 50
TARGET_TASKS = 2
SMOKE_BATCH = 10
SMOKE_LATENCY_SECONDS = 0.2
SMOKE_ENDPOINT_PATH = r".*/endpoints/[a-z0-9]+"
TARGET_BATCH_RATIO = 3.0
# Full run: promoting to 50 endpoints takes at most this many times promoting to one.
TARGET_FANOUT_RATIO = 3.0
# Runs of each size: one endpoint's promotion (about half a second, most of it the task's start)
# moved by 1.8x between single runs on this machine.
FANOUT_ROUNDS = 3


def settings(smoke: bool) -> dict[str, Any]:
    return {"fanout": [1, 3]} if smoke else {"fanout": [1, 10, 50]}


def fanout_model(k: int, round_: int) -> str:
    return f"bench_fanout_{k}_r{round_}"


def fanout_dag(k: int, round_: int) -> str:
    return f"retrain_{fanout_model(k, round_)}"


def prepare(bench: Bench) -> None:
    if bench.smoke:
        return  # the smoke run needs no DAGs (see run_smoke)
    plan = settings(bench.smoke)
    base = loop_config()
    service_id = base["targets"][0]["web_service_id"]
    for round_ in range(FANOUT_ROUNDS):
        for k in plan["fanout"]:
            bench.write_config(fanout_model(k, round_), fanout_config(k, service_id, round_))


def land(bench: Bench, prefix: str, rows: int, window: int) -> None:
    from emulator.datasets import generate_csv

    container = bench.container(DATA_CONTAINER)
    data = generate_csv("churn", rows=rows, window=window).encode()
    container.upload_blob(f"{prefix}part-0.csv", data, overwrite=True)
    container.upload_blob(f"{prefix}_SUCCESS", b"", overwrite=True)


def run_fanout(bench: Bench, k: int, round_: int) -> dict[str, Any]:
    from azureml_retrain.windows import WINDOW_PARAM, window_interval

    day = datetime(2026, 10, 1, tzinfo=UTC)
    land(bench, f"{fanout_model(k, round_)}/{day:%Y-%m-%d}/", rows=400, window=1)
    conf = {WINDOW_PARAM: window_interval(day, day + timedelta(days=1)), "promote": "force"}
    dag_id = fanout_dag(k, round_)
    run = bench.run_dag(dag_id, conf=conf, timeout=1200)
    tis = bench.cluster.api("GET", f"dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances", params={"limit": 1000})[
        "task_instances"
    ]
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


def fanout_config(k: int, service_id: str, round_: int = 0) -> dict[str, Any]:
    base = loop_config()
    model = fanout_model(k, round_)
    return {
        **base,
        "model": model,
        "data": {
            **base["data"],
            "container": DATA_CONTAINER,
            "prefix": f"{model}/{{window_start:%Y-%m-%d}}/",
        },
        "outputs": {"container": "bench-models", "prefix": model},
        "ledger_container": f"bench-ledger-fanout{k}r{round_}",
        "targets": [
            {
                "kind": "classic_endpoint",
                "name": f"fan{k}r{round_}-{i:02d}",
                "web_service_id": service_id,
                "endpoint_name": f"fan{k}r{round_}n{i:02d}",
                "create_endpoint": True,
            }
            for i in range(k)
        ],
    }


def promotion_tasks(k: int) -> int:
    """Task instances of the mapped classic promotion for a config with ``k`` endpoint targets."""
    from azureml_retrain.config import ClassicEndpointTarget, parse_config
    from azureml_retrain.factory import target_batches

    config = parse_config(fanout_config(k, "service"), f"{fanout_model(k, 0)}.yaml")
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


def most_in_flight(requests: list[dict[str, Any]], slack_ms: float = 20.0) -> int:
    """The most of ``requests`` (entries of the emulator's request log: ``time`` when it logged the
    answer, ``duration_ms``) that it was serving at the same moment. The emulator logs an answer after
    sending it, so a client's next request may arrive just before: overlaps shorter than
    ``slack_ms`` do not count."""
    events: list[tuple[float, int]] = []
    for request in requests:
        answered = parse_time(request["time"])
        if answered is None:  # a request placed at the epoch would overlap nothing and hide a fan-out
            raise ValueError(f"an emulator request log entry without its time: {request}")
        started = answered - request["duration_ms"] / 1000
        events += [(started, 1), (max(started, answered - slack_ms / 1000), -1)]
    most = current = 0
    for _, change in sorted(events):  # at the same instant an answer (-1) sorts before an arrival
        current += change
        most = max(most, current)
    return most


def sequential_requests(bench: Bench, model: str, names: list[str]) -> dict[str, Any]:
    """Promote ``model`` to ``names`` in one task, and count from the emulator's log the endpoint
    requests (each held ``SMOKE_LATENCY_SECONDS``) and the most of them in flight at once: their
    ratio is how many such waits the task made one after another."""
    bench.admin("DELETE", "requests")
    seconds = promote_in_process(model, names)
    endpoint = re.compile(SMOKE_ENDPOINT_PATH)
    requests = [r for r in bench.emulator_requests() if endpoint.fullmatch(r["path"])]
    in_flight = most_in_flight(requests)
    return {
        "seconds": round(seconds, 3),
        "endpoint_requests": len(requests),
        "most_in_flight": in_flight,
        "sequential": len(requests) / max(in_flight, 1),
    }


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
    bench.admin("POST", "faults", json={"path": SMOKE_ENDPOINT_PATH, "action": delay})
    try:
        one = sequential_requests(bench, model, ["fsmoke1"])
        batch = sequential_requests(bench, model, [f"fsmokeb{i:02d}" for i in range(SMOKE_BATCH)])
    finally:
        bench.admin("DELETE", "faults")
    m.raw = {
        "promotion_tasks_for_50_targets": tasks,
        "latency_seconds": SMOKE_LATENCY_SECONDS,
        "one_target": one,
        f"batch_of_{SMOKE_BATCH}": batch,
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
    delayed = f"in process, every endpoint request delayed {SMOKE_LATENCY_SECONDS * 1000:.0f} ms by the emulator"
    m.checks.append(
        Check(
            case=f"one promotion task: batch of {SMOKE_BATCH} endpoints vs 1, endpoint requests waited for in turn",
            value=round(batch["sequential"] / one["sequential"], 2),
            unit="x",
            target=TARGET_BATCH_RATIO,
            ours=f"{batch['endpoint_requests']} requests, at most {batch['most_in_flight']} at once",
            baseline=f"{one['endpoint_requests']} requests, at most {one['most_in_flight']} at once",
            note=f"{delayed}; counted in its request log",
        )
    )
    m.checks.append(
        Check(
            case=f"one promotion task: batch of {SMOKE_BATCH} endpoints vs 1 (ledger included)",
            value=round(batch["seconds"] / one["seconds"], 2),
            unit="x",
            target=None,
            ours=fmt_seconds(batch["seconds"]),
            baseline=fmt_seconds(one["seconds"]),
            note=delayed,
        )
    )
    return m


def run(bench: Bench) -> Measurement:
    if bench.smoke:
        return run_smoke(bench)
    plan = settings(bench.smoke)
    m = Measurement("scale", TITLE)
    rounds: dict[int, list[dict[str, Any]]] = {k: [] for k in plan["fanout"]}
    for round_ in range(FANOUT_ROUNDS):
        for k in plan["fanout"]:
            bench.log(f"  promotion fan-out to {k} endpoint(s), round {round_ + 1} of {FANOUT_ROUNDS}")
            rounds[k].append(run_fanout(bench, k, round_))
    fanout = {k: median_round(results) for k, results in rounds.items()}
    m.raw = {"fanout": fanout, "fanout_rounds": rounds}
    fanout_checks(m, fanout)
    return m


def median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose promotion time is the median (the lower middle one for an even count)."""
    ordered = sorted(results, key=lambda result: result["promotion_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds_seconds": [r["promotion_seconds"] for r in results]}


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
                note=rounds_note(result, smallest),
            )
        )


def rounds_note(result: dict[str, Any], smallest: dict[str, Any]) -> str:
    """The rounds behind a row's medians."""
    if len(result["rounds_seconds"]) < 2:
        return ""
    ours = ", ".join(fmt_seconds(seconds) for seconds in result["rounds_seconds"])
    note = f"median of {len(result['rounds_seconds'])} rounds: {ours}"
    if result is smallest:
        return note
    ones = ", ".join(fmt_seconds(seconds) for seconds in smallest["rounds_seconds"])
    return f"{note} (one endpoint: {ones})"
