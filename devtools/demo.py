"""`make demo`: a full retrain-and-promote cycle against the local emulator and Azurite.

1. Starts Azurite and the emulator if they are not running (and stops exactly those at the end),
   and resets the emulator to its seed (the predictive services serve their initial models) and the
   demo's containers to empty.
2. Lands three days of generated training data that drifts day by day, for both shipped models
   (a classic web service and a Resource Manager one), each day's folder closed by a `_SUCCESS`
   marker.
3. Runs each retraining DAG for each of those days with `airflow dags test` (the real task runner;
   deferred waits run their triggers in-process), oldest day first, as a catch-up would.
4. Prints, per run: the window, the challenger's and champion's metric, the decision, and what each
   endpoint serves now; then a prediction before/after through RRS. Exits non-zero if a run failed
   or nothing was promoted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from devtools import services

DAY_COUNT = 3
ROWS_PER_DAY = 600
DEMO_CONTAINERS = ("training-data", "models", "model-ledger")


def _airflow_env() -> dict[str, str]:
    env = {**os.environ, **services.airflow_environment()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _emulator(path: str, method: str = "GET", ports: services.LocalPorts | None = None) -> Any:
    ports = ports or services.LocalPorts()
    response = requests.request(method, f"{services.emulator_url(ports.emulator)}/_emulator/{path}", timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def _blob_service(ports: services.LocalPorts | None = None) -> Any:
    from azure.storage.blob import BlobServiceClient

    ports = ports or services.LocalPorts()
    return BlobServiceClient.from_connection_string(services.azurite_connection_string(ports.azurite))


def reset_local_state(ports: services.LocalPorts | None = None) -> None:
    """The emulator back to its seed and the demo's containers empty (``ports``: default, `make services`)."""
    _emulator("reset", "POST", ports)
    client = _blob_service(ports)
    for name in DEMO_CONTAINERS:
        container = client.get_container_client(name)
        if container.exists():
            for blob in container.list_blobs():
                container.delete_blob(blob.name)
        else:
            container.create_container()


def land_data(days: list[datetime], ports: services.LocalPorts | None = None) -> None:
    from emulator.datasets import generate_csv

    container = _blob_service(ports).get_container_client("training-data")
    for index, day in enumerate(days, start=1):
        for model in ("churn", "energy"):
            folder = f"{model}/{day:%Y-%m-%d}"
            csv = generate_csv(model, rows=ROWS_PER_DAY, window=index, seed=100 + index)
            container.upload_blob(f"{folder}/part-0.csv", csv.encode(), overwrite=True)
            container.upload_blob(f"{folder}/_SUCCESS", b"", overwrite=True)
    print(f"demo: landed {len(days)} days of drifting data for churn and energy in Azurite (training-data/)")


def run_dag(dag_id: str, logical_date: datetime) -> tuple[int, float]:
    log_path = services.LOG_DIR / f"demo-{dag_id}-{logical_date:%Y%m%d}.log"
    began = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id, logical_date.isoformat()],
            cwd=services.ROOT,
            env=_airflow_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait()
        except BaseException:
            services.stop_process(process.pid)  # interrupted: leave no run behind
            raise
    elapsed = time.monotonic() - began
    # `dags test` exits 0 even when the run fails: ask the metadata database how the run ended.
    if returncode == 0 and run_state(dag_id, logical_date) != "success":
        returncode = 1
    if returncode != 0:
        print(f"demo: {dag_id} for {logical_date:%Y-%m-%d} FAILED; the end of {log_path}:", file=sys.stderr)
        print("\n".join(log_path.read_text().splitlines()[-25:]), file=sys.stderr)
    return returncode, elapsed


def run_state(dag_id: str, logical_date: datetime) -> str | None:
    from airflow.models.dagrun import DagRun

    runs = DagRun.find(dag_id=dag_id, logical_date=logical_date)
    return str(runs[-1].state) if runs else None


def score(api_location: str, key: str, rows: list[dict[str, Any]]) -> list[str]:
    response = requests.post(
        f"{api_location}/execute",
        params={"api-version": "2.0", "format": "swagger"},
        headers={"Authorization": f"Bearer {key}"},
        json={"Inputs": {"input1": rows}, "GlobalParameters": {}},
        timeout=30,
    )
    response.raise_for_status()
    results = next(iter(response.json()["Results"].values()))
    return [
        str(r.get("Scored Labels", ""))
        + (f" (p={float(r['Scored Probabilities']):.2f})" if "Scored Probabilities" in r else "")
        for r in results
    ]


def scoring_endpoints(ports: services.LocalPorts | None = None) -> dict[str, tuple[str, str]]:
    state = _emulator("state", ports=ports)
    classic = next(s for s in state["workspaces"][0]["web_services"] if s["kind"] == "predictive")
    endpoint = next(e for e in classic["endpoints"] if e["name"] == "retrain01")
    arm = next(s for s in state["arm_web_services"] if s["kind"] == "predictive")
    return {
        "churn": (endpoint["api_location"], endpoint["primary_key"]),
        "energy": (arm["api_location"], arm["primary_key"]),
    }


def main() -> int:
    # SIGTERM (e.g. a stopped `make`) unwinds like Ctrl-C, so the services and runs we started stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Before anything imports Airflow: it reads AIRFLOW_HOME and the connections at import.
    os.environ.update(services.airflow_environment())
    import logging

    from azureml_retrain.config import load_configs
    from azureml_retrain.ledger import PromotionLedger

    # Importing Airflow turns on azure-core's request logging; the demo's own output is the summary.
    logging.getLogger("azure").setLevel(logging.WARNING)
    configs = {c.model: c for c in load_configs(services.ROOT / "dags" / "retraining")}
    started = services.start_all()
    try:
        reset_local_state()
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        days = [today - timedelta(days=DAY_COUNT - i) for i in range(DAY_COUNT)]
        land_data(days)
        endpoints = scoring_endpoints()
        before = {m: score(*endpoints[m], configs[m].smoke_test_rows) for m in configs}
        failures, runs = 0, []
        for day in days:
            for model, config in configs.items():
                # A run is labelled by when it runs: the day after its window, at the schedule's time.
                hour, minute = int(config.schedule.split()[1]), int(config.schedule.split()[0])
                run_at = (day + timedelta(days=1)).replace(hour=hour, minute=minute)
                print(f"demo: running {config.dag_id} for the window of {day:%Y-%m-%d} ...", flush=True)
                code, elapsed = run_dag(config.dag_id, run_at)
                failures += code != 0
                runs.append((model, day, code, elapsed))
        after = {m: score(*endpoints[m], configs[m].smoke_test_rows) for m in configs}
        promoted = print_summary(configs, runs, PromotionLedger(), before, after)
        if failures or not promoted:
            print(f"demo: FAILED ({failures} failed run(s), {promoted} promotion(s))", file=sys.stderr)
            return 1
        print(f"demo: done: {len(runs)} runs, {promoted} promotion(s). Logs: .airflow/logs/demo-*.log")
        return 0
    finally:
        if started:
            services.stop_all(started)


def print_summary(
    configs: dict[str, Any],
    runs: list[tuple[str, datetime, int, float]],
    ledger: Any,
    before: dict[str, list[str]],
    after: dict[str, list[str]],
) -> int:
    print()
    header = (
        f"{'model':<7} {'window':<11} {'metric':<24} {'challenger':>10} {'champion':>9}  {'decision':<9} {'run':>6}"
    )
    print(header)
    print("-" * len(header))
    promotions = 0
    for model, logical_date, code, elapsed in runs:
        config = configs[model]
        decision = next(
            (
                d
                for d in ledger.decisions(config.dag_id)
                if str(d.get("window", {}).get("start", "")).startswith(logical_date.isoformat()[:10])
            ),
            None,
        )
        verdict = decision.get("decision", {}) if decision else {}
        metric = verdict.get("metric", config.evaluation.metric)
        challenger = verdict.get("challenger", {}).get(metric)
        champion = (verdict.get("champion") or {}).get(metric)
        outcome = "FAILED" if code else ("promote" if decision and decision.get("promote") else "keep")
        print(
            f"{model:<7} {logical_date:%Y-%m-%d}  {metric[:24]:<24} {_num(challenger):>10} {_num(champion):>9}  "
            f"{outcome:<9} {elapsed:>5.0f}s"
        )
    print()
    for model, config in configs.items():
        for target in config.targets:
            records = ledger.records(target.name)
            promotions += sum(r.kind == "promotion" for r in records)
            head = records[-1].model_uri if records else "(initial model)"
            print(f"{target.name:<20} serves {head}")
        print(f"{model:<20} prediction before: {json.dumps(before[model])}")
        print(f"{'':<20} prediction after:  {json.dumps(after[model])}")
    print()
    return promotions


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


if __name__ == "__main__":
    sys.exit(main())
