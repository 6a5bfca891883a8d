"""`make demo`: a full retrain-and-promote cycle against the local emulator and Azurite.

1. Starts Azurite and the emulator if they are not running (and stops exactly those at the end),
   and resets the emulator to its seed (the predictive services serve their initial models) and the
   demo's containers to empty.
2. Takes every config in `dags/retraining/` that trains on one of the local training services (and
   says which it skips, and why: a broken config, another service); lands three days of generated
   training data that drifts day by day where each config looks for it, each day's folder closed by
   its marker.
3. Runs each retraining DAG for each of those days with `airflow dags test` (the real task runner;
   deferred waits run their triggers in-process), oldest day first, as a catch-up would. Each run is
   a manual run with its window in the run's conf; `dags test` gives it the current time as its
   logical date, not a schedule's tick (a scheduled or backfill run's logical date), so it never takes
   the place of a run the scheduler or a backfill makes for the same window
   (tests/e2e/test_demo_then_scheduler.py). Its data interval, inferred from that time, is the latest
   complete one whichever window it trains on: the window is the conf's.
4. Prints, per run: the window, the challenger's and champion's metric, the decision, and what each
   target serves now; then a prediction before/after through RRS. Exits non-zero if a run failed
   or nothing was promoted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from devtools import services
from devtools.land_data import arrival_criteria, generated_files, generated_names, land, window_of

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


def reset_local_state(containers: tuple[str, ...] = DEMO_CONTAINERS, ports: services.LocalPorts | None = None) -> None:
    """The emulator back to its seed and the demo's containers empty (``ports``: default, `make services`)."""
    _emulator("reset", "POST", ports)
    client = _blob_service(ports)
    for name in containers:
        container = client.get_container_client(name)
        if container.exists():
            for blob in container.list_blobs():
                container.delete_blob(blob.name)
        else:
            container.create_container()


@dataclass(frozen=True)
class DemoModel:
    """A config the demo runs, with the dataset its training service learns from."""

    config: Any
    dataset: str


def demo_models(folder: Path) -> tuple[list[DemoModel], list[str]]:
    """The configs in ``folder`` the demo can run, and why it skips the others."""
    from azureml_retrain.config import scan_configs

    datasets = services.training_datasets()
    scan = scan_configs(folder)
    broken = "(a broken config: fix it, or move it out of the folder)"
    skipped = [f"{'; '.join(error.splitlines())} {broken}" for error in scan.errors]
    models = []
    for config in scan.configs:
        dataset = datasets.get(config.training.azureml_conn_id)
        if dataset is None:
            skipped.append(
                f"{config.model}.yaml: trains through connection '{config.training.azureml_conn_id}', not one of the "
                f"local training services ({', '.join(sorted(datasets))})"
            )
        elif unselected := unselected_generated_names(config):
            pattern = config.data.pattern
            names = ", ".join(unselected)
            skipped.append(f"{config.model}.yaml: data.pattern {pattern!r} does not match the demo's {names}")
        else:
            models.append(DemoModel(config, dataset))
    return models, skipped


def unselected_generated_names(config: Any) -> list[str]:
    """The generated data blobs the config's sensor would not select (its pattern wants other names)."""
    from azureml_retrain.windows import Window

    criteria = arrival_criteria(config, Window(*window_of(config, datetime.now(UTC)), "schedule"))
    return [name for name in generated_names(config) if not criteria.selects(criteria.prefix + name)]


def land_data(models: list[DemoModel], days: list[datetime], ports: services.LocalPorts | None = None) -> None:
    """Each day's training data where each config looks for it (through its connection; in Azurite at
    ``ports`` when given), its marker (if any) written last."""
    from azureml_retrain.windows import Window

    client = _blob_service(ports) if ports is not None else None
    for model in models:
        for index, day in enumerate(days, start=1):
            window = Window(*window_of(model.config, day), "schedule")
            files = generated_files(model.config, model.dataset, rows=ROWS_PER_DAY, drift=index, seed=100 + index)
            land(model.config, window, files, client=client)
    names = ", ".join(m.config.model for m in models)
    print(f"demo: landed {len(days)} days of drifting training data for {names} in Azurite")


def run_dag(
    dag_id: str,
    window: tuple[datetime, datetime],
    *,
    conf: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> tuple[int, float]:
    """``airflow dags test`` of one window: a manual run (logical date: now, no schedule tick), the window in its conf.

    ``conf`` adds to the run's conf (e.g. ``{"dry_run": True}``); ``env`` is the environment of the
    Airflow installation to run in (default: the demo's), ``log_dir`` where the run's log goes.
    """
    from azureml_retrain.windows import WINDOW_PARAM, window_interval

    start, end = window
    run_conf = {**(conf or {}), WINDOW_PARAM: window_interval(start, end)}
    log_path = (log_dir or services.LOG_DIR) / f"demo-{dag_id}-{start:%Y%m%d}.log"
    began = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id, "--conf", json.dumps(run_conf)],
            cwd=services.ROOT,
            env=dict(env) if env is not None else _airflow_env(),
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
    database = (env or {}).get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if returncode == 0 and run_state(dag_id, run_conf[WINDOW_PARAM], database) != "success":
        returncode = 1
    if returncode != 0:
        print(f"demo: {dag_id} for {start:%Y-%m-%d} FAILED; the end of {log_path}:", file=sys.stderr)
        print("\n".join(log_path.read_text().splitlines()[-25:]), file=sys.stderr)
    return returncode, elapsed


def run_state(dag_id: str, window: str, database: str | None = None) -> str | None:
    """The state of the latest run of ``dag_id`` triggered with ``window`` (``<start>/<end>``) in its
    conf, in the metadata database at URL ``database`` (default: this process's)."""
    from airflow.models.dagrun import DagRun

    from azureml_retrain.windows import WINDOW_PARAM

    if database is None:
        found = DagRun.find(dag_id=dag_id)
    else:
        import sqlalchemy
        from sqlalchemy.orm import Session

        engine = sqlalchemy.create_engine(database, poolclass=sqlalchemy.NullPool)
        try:
            with Session(engine) as session:
                found = DagRun.find(dag_id=dag_id, session=session)
        finally:
            engine.dispose()
    runs = [r for r in found if (r.conf or {}).get(WINDOW_PARAM) == window]
    runs.sort(key=lambda r: r.id)
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


def scoring_endpoint(config: Any, ports: services.LocalPorts | None = None) -> tuple[str, str] | None:
    """Where the config's first target answers (RRS location and key), or None when it does not exist
    yet (a run creates it)."""
    state = _emulator("state", ports=ports)
    target = config.targets[0]
    if target.kind == "classic_endpoint":
        for workspace in state["workspaces"]:
            for service in workspace["web_services"]:
                if service["id"] == target.web_service_id:
                    for endpoint in service["endpoints"]:
                        if endpoint["name"] == target.endpoint_name:
                            return endpoint["api_location"], endpoint["primary_key"]
        return None
    arm = next((s for s in state["arm_web_services"] if s["name"] == target.web_service_name), None)
    return (arm["api_location"], arm["primary_key"]) if arm else None


def predictions(config: Any) -> list[str]:
    endpoint = scoring_endpoint(config)
    if endpoint is None or not config.smoke_test_rows:
        return []
    return score(*endpoint, config.smoke_test_rows)


def main() -> int:
    # SIGTERM (e.g. a stopped `make`) unwinds like Ctrl-C, so the services and runs we started stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Before anything imports Airflow: it reads AIRFLOW_HOME and the connections at import.
    os.environ.update(services.airflow_environment())
    import logging

    # Importing Airflow turns on azure-core's request logging; the demo's own output is the summary.
    logging.getLogger("azure").setLevel(logging.WARNING)
    models, skipped = demo_models(services.ROOT / "dags" / "retraining")
    for reason in skipped:
        print(f"demo: skipping {reason}")
    if not models:
        print("demo: FAILED: no config in dags/retraining/ that the demo can run", file=sys.stderr)
        return 1
    configs = {m.config.model: m.config for m in models}
    started = services.start_all()
    try:
        used = {name for c in configs.values() for name in (c.data.container, c.outputs.container, c.ledger_container)}
        reset_local_state(tuple(sorted(set(DEMO_CONTAINERS) | used)))
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        days = [today - timedelta(days=DAY_COUNT - i) for i in range(DAY_COUNT)]
        land_data(models, days)
        before = {m: predictions(c) for m, c in configs.items()}
        failures, runs = 0, []
        for day in days:
            for model, config in configs.items():
                window = window_of(config, day)
                print(f"demo: running {config.dag_id} for the window of {window[0]:%Y-%m-%d} ...", flush=True)
                code, elapsed = run_dag(config.dag_id, window)
                failures += code != 0
                runs.append((model, window[0], code, elapsed))
        after = {m: predictions(c) for m, c in configs.items()}
        promoted = print_summary(configs, runs, before, after)
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
    before: dict[str, list[str]],
    after: dict[str, list[str]],
) -> int:
    from azureml_retrain.ledger import PromotionLedger

    ledgers = {m: PromotionLedger(c.data.wasb_conn_id, c.ledger_container) for m, c in configs.items()}
    width = max(7, *(len(m) for m in configs))
    print()
    header = (
        f"{'model':<{width}} {'window':<11} {'metric':<24} {'challenger':>10} {'champion':>9}  {'decision':<9} "
        f"{'run':>6}"
    )
    print(header)
    print("-" * len(header))
    promotions = 0
    for model, window_start, code, elapsed in runs:
        config = configs[model]
        decision = next(
            (
                d
                for d in ledgers[model].decisions(config.dag_id)
                if str(d.get("window", {}).get("start", "")).startswith(window_start.isoformat()[:16])
            ),
            None,
        )
        verdict = decision.get("decision", {}) if decision else {}
        metric = verdict.get("metric", config.evaluation.metric)
        challenger = verdict.get("challenger", {}).get(metric)
        champion = (verdict.get("champion") or {}).get(metric)
        outcome = "FAILED" if code else ("promote" if decision and decision.get("promote") else "keep")
        print(
            f"{model:<{width}} {window_start:%Y-%m-%d}  {metric[:24]:<24} {_num(challenger):>10} {_num(champion):>9}  "
            f"{outcome:<9} {elapsed:>5.0f}s"
        )
    print()
    for model, config in configs.items():
        for target in config.targets:
            records = ledgers[model].records(target.name)
            promotions += sum(r.kind == "promotion" for r in records)
            head = records[-1].model_uri if records else "(initial model)"
            print(f"{target.name:<20} serves {head}")
        print(f"{model:<20} prediction before: {json.dumps(before[model]) if before[model] else '(no endpoint yet)'}")
        print(f"{'':<20} prediction after:  {json.dumps(after[model])}")
    print()
    return promotions


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


if __name__ == "__main__":
    sys.exit(main())
