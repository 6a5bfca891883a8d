"""`make e2e-distributed`: the `docker-compose.yaml` topology as local processes, end to end.

No Docker engine needed. It

1. installs PostgreSQL and Redis with apt-get if they are missing (idempotent), and starts a private
   PostgreSQL cluster and a Redis server on free 127.0.0.1 ports as child processes;
2. starts Azurite, the emulator and every Airflow service of `docker-compose.yaml` (api-server,
   scheduler, dag-processor, triggerer, and the Celery worker scaled to two) with the commands and
   environment that file gives them (``deploy/airflow.env`` included), placed on this machine by
   :mod:`devtools.topology` (host names, ports and volume paths; nothing else is changed);
3. lands a day of training data for each shipped model, triggers ``retrain_churn`` through the REST
   API for the interval the scheduler would run next, and SIGKILLs the Celery worker (its whole
   process tree) that is running churn's ``train`` task after the BES job was submitted, before the
   task could defer (an emulator delay on the job's start holds it there): the surviving worker
   retries the task, which reattaches to the submitted job. ``retrain_energy`` is triggered then;
4. checks both runs succeed, each training task submitted exactly one BES job, the endpoints serve
   the new models (management/ARM plane and RRS predictions) and the ledger recorded them;
5. stops everything it started, by pid, whatever happened.

Settings that differ from the compose file are in :data:`E2E_SETTINGS`, to fit a test's time budget.
Logs of every process stay in ``.airflow/distributed/run-*/`` when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import requests

from devtools import demo, services
from devtools.cluster import (
    CELERY_WORKER,
    AirflowCluster,
    PostgresServer,
    RedisServer,
    descendants,
    ensure_system_packages,
)
from devtools.topology import COMPOSE_FILE, ComposeTopology, Placement, default_executables

RUNS_DIR = services.AIRFLOW_HOME / "distributed"
WORKERS = 2
SIGNING_SETTING = "AIRFLOW__API_AUTH__JWT_SECRET"
# What differs from docker-compose.yaml, and why: a killed worker's task is retried after at most
# 5 s instead of the DAGs' 30-60 s backoff. (The cluster also notices a dead worker after 30 s
# instead of Airflow's 5 min: AirflowCluster's TASK_INSTANCE_HEARTBEAT_TIMEOUT.) A task the killed
# worker had taken from the queue but not started yet (with the plan beside the sensor, the small
# per-target tasks run beside `train`) stays queued: it is requeued after 45 s instead of 10 min.
E2E_SETTINGS = {
    "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "5",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "45",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
}
# Container ports of images whose compose service does not list them.
IMAGE_PORTS = {"postgres": (5432,), "redis": (6379,)}
LOCAL_SERVICES = ("azurite", "azureml-emulator")
KILLED_TASK = "train"
KILLED_DAG = "retrain_churn"
# Long enough to find the task's worker and kill it while the task waits for the job to start.
START_DELAY_SECONDS = 30


@dataclass
class Plan:
    """Everything the run starts, derived from the compose file; nothing is started yet."""

    run_dir: Path
    topology: ComposeTopology
    placement: Placement
    settings: dict[str, str]
    component_env: dict[str, dict[str, str]]
    components: list[str]
    worker_command: str
    local_ports: services.LocalPorts
    postgres: PostgresServer
    redis: RedisServer
    service_argv: dict[str, list[str]]

    def cluster(self) -> AirflowCluster:
        return AirflowCluster(
            home=self.run_dir / "airflow",
            ports=self.local_ports,
            settings=self.settings,
            api_port=self.placement.local_port("airflow-apiserver", 8080),
            executor=self.settings["AIRFLOW__CORE__EXECUTOR"],
            celery_workers=WORKERS,
            worker_command=self.worker_command,
            component_env=self.component_env,
            database=self.postgres,
            broker=self.redis,
        )


def container_ports(spec: Mapping[str, Any]) -> list[int]:
    """The ports a compose service listens on in its container (``expose``, ``ports``, or the image's)."""
    found = [int(str(port).split("/")[0]) for port in spec.get("expose") or []]
    for mapping in spec.get("ports") or []:
        found.append(int(str(mapping).split(":")[-1].split("/")[0]))
    image = str(spec.get("image", "")).split(":")[0].rsplit("/", 1)[-1]
    return sorted(set(found) or set(IMAGE_PORTS.get(image, ())))


def plan(run_dir: Path, compose_file: Path | None = None) -> Plan:
    """Read the compose file and place its services on free local ports under ``run_dir``."""
    # The compose file requires the secret from the environment (.env); the local run makes its own.
    variables = {**os.environ, SIGNING_SETTING: secrets.token_urlsafe(32)}
    topology = ComposeTopology(compose_file or COMPOSE_FILE, variables=variables)
    ports = {
        name: {port: services.free_port() for port in container_ports(spec)} for name, spec in topology.services.items()
    }
    volumes = {name: run_dir / "volumes" / name for name in topology.data.get("volumes") or {}}
    placement = Placement(ports=ports, volumes=volumes, executables=default_executables())

    airflow_services = topology.airflow_services()
    environments = {name: topology.environment(name, placement) for name in airflow_services}
    first = next(iter(environments.values()))
    # What all Airflow services share goes to every component; the rest to its own service only.
    common = {k: v for k, v in first.items() if all(env.get(k) == v for env in environments.values())}
    worker_service = next(name for name, cmd in airflow_services.items() if cmd.startswith(CELERY_WORKER))
    component_env = {
        airflow_services[name]: {k: v for k, v in env.items() if k not in common} for name, env in environments.items()
    }
    postgres_env = topology.environment("postgres")
    emulator_dir = volumes[_volume_of(topology, "azureml-emulator")]
    return Plan(
        run_dir=run_dir,
        topology=topology,
        placement=placement,
        settings={**common, **E2E_SETTINGS},
        component_env={k: v for k, v in component_env.items() if v},
        components=[cmd for name, cmd in airflow_services.items() if name != worker_service],
        worker_command=airflow_services[worker_service],
        local_ports=services.LocalPorts(
            azurite=placement.local_port("azurite", None),
            emulator=placement.local_port("azureml-emulator", 8765),
            emulator_tls=placement.local_port("azureml-emulator", 8766),
            emulator_data_dir=emulator_dir,
        ),
        postgres=PostgresServer(
            run_dir / "postgres",
            port=placement.local_port("postgres", None),
            user=postgres_env["POSTGRES_USER"],
            password=postgres_env["POSTGRES_PASSWORD"],
            database=postgres_env["POSTGRES_DB"],
        ),
        redis=RedisServer(run_dir / "redis", port=placement.local_port("redis", None)),
        service_argv={name: topology.argv(name, placement) for name in LOCAL_SERVICES},
    )


def _volume_of(topology: ComposeTopology, service: str) -> str:
    """The named volume a service writes its data to (its first named volume)."""
    for volume in topology.service(service).get("volumes") or []:
        source = str(volume).split(":")[0]
        if not source.startswith((".", "/", "$")):
            return source
    raise ValueError(f"{service} has no named volume")


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    next_runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # dag id → DAG (REST), before the runs
    runs: dict[str, str] = field(default_factory=dict)  # dag id → run id
    states: dict[str, str] = field(default_factory=dict)
    bes_submits: dict[str, int] = field(default_factory=dict)  # dag id → jobs submitted
    killed_worker: str | None = None
    killed_try: int | None = None
    final_try: int | None = None
    served_before: dict[str, str | None] = field(default_factory=dict)
    served_after: dict[str, str | None] = field(default_factory=dict)
    predictions_before: dict[str, list[str]] = field(default_factory=dict)
    predictions_after: dict[str, list[str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    leftover_pids: list[int] = field(default_factory=list)


def run(*, kill_worker: bool = True, keep: bool = False, log: Callable[[str], None] = print) -> Outcome:
    """The whole end-to-end run (see the module docstring); raises AssertionError when a check fails."""
    import logging

    began = time.monotonic()
    outcome = Outcome()
    # Importing Airflow turns on azure-core's request logging; this run's own output is the summary.
    logging.getLogger("azure").setLevel(logging.WARNING)

    def stamped(message: str) -> None:
        log(f"[{time.monotonic() - began:4.0f}s] {message}")

    installed = ensure_system_packages()
    if installed:
        stamped(f"e2e: installed {', '.join(installed)}")
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=RUNS_DIR))
    # PostgreSQL runs as the postgres user when we are root: it must reach its directory.
    run_dir.chmod(0o755)
    the_plan = plan(run_dir)
    succeeded = False
    with _started(the_plan, outcome, stamped) as cluster:
        outcome.timings["start"] = time.monotonic() - began
        stamped(f"e2e: {len(cluster.processes)} Airflow processes up in {outcome.timings['start']:.0f}s")
        exercise(cluster, the_plan, outcome, kill_worker=kill_worker, log=stamped)
        succeeded = True
    outcome.timings["total"] = time.monotonic() - began
    if outcome.leftover_pids:
        raise AssertionError(f"processes left running after the stop: {outcome.leftover_pids}")
    if succeeded and not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return outcome


@contextmanager
def _started(the_plan: Plan, outcome: Outcome, log: Callable[[str], None]) -> Iterator[AirflowCluster]:
    """Start the local services and the cluster; stop all of it (and check nothing is left) on exit."""
    started: list[subprocess.Popen[bytes]] = []
    cluster = the_plan.cluster()
    tree: set[int] = set()
    # Azurite and the emulator start while Airflow does: nothing needs them before the runs.
    pool = ThreadPoolExecutor(max_workers=1)
    local = pool.submit(_start_local_services, the_plan, started)
    try:
        log(f"e2e: starting PostgreSQL, Redis, Azurite, the emulator and Airflow in {the_plan.run_dir}")
        cluster.start(components=the_plan.components, timeout=300)
        local.result()
        yield cluster
    except BaseException:
        log(f"e2e: FAILED; logs in {the_plan.run_dir}")
        raise
    finally:
        # Let a start in progress finish, so what it started is stopped below.
        with suppress(Exception):
            local.result()
        pool.shutdown()
        roots = [p.pid for p in started] + [p.pid for p in cluster.processes.values()]
        for backend in (cluster.database, cluster.broker):
            if backend is not None and backend.process is not None:
                roots.append(backend.process.pid)
        for pid in roots:
            tree.update([pid, *descendants(pid)])
        cluster.stop()
        for process in reversed(started):
            services.stop_process(process.pid)
        outcome.leftover_pids = sorted(pid for pid in tree if _running(pid))


def _start_local_services(the_plan: Plan, started: list[subprocess.Popen[bytes]]) -> None:
    for name in LOCAL_SERVICES:
        argv = the_plan.service_argv[name]
        ports = list(the_plan.placement.ports[name].values())
        service = services.Service(name, ports[0], argv, also_wait_for=tuple(ports[1:]))
        started.append(service.start(the_plan.run_dir / "logs" / f"{name}.log"))


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its exit status is left to collect)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def exercise(
    cluster: AirflowCluster,
    the_plan: Plan,
    outcome: Outcome,
    *,
    kill_worker: bool,
    log: Callable[[str], None],
) -> None:
    """Land data, trigger both DAGs (killing a worker mid-run), wait, and check what they did."""
    from azureml_retrain.config import load_configs

    ports = the_plan.local_ports
    configs = {c.dag_id: c for c in load_configs(services.ROOT / "dags" / "retraining")}
    endpoints = prepare(cluster, configs, outcome, ports)
    training_paths = training_job_paths(ports)
    churn_training = training_paths[configs[KILLED_DAG].training.azureml_conn_id]
    if kill_worker:
        # Holds the task between "job submitted (id stored)" and "job started", on its worker.
        fault = {"kind": "delay", "delay_seconds": START_DELAY_SECONDS}
        path = f"{re.escape(churn_training)}/.*"
        _emulator_post(ports, "faults", {"route": "bes.start", "path": path, "action": fault, "count": 1})

    triggered = time.monotonic()
    # With a kill, the other DAG starts only after it: the killed worker then ran exactly one task,
    # and no other task can be caught between submitting a job and storing its id.
    for batch in ([KILLED_DAG], [d for d in configs if d != KILLED_DAG]) if kill_worker else (list(configs),):
        trigger(cluster, outcome, batch)
        log(f"e2e: triggered {', '.join(f'{d} ({outcome.runs[d]})' for d in batch)} through the REST API")
        if kill_worker and outcome.killed_worker is None:
            outcome.killed_worker, outcome.killed_try = kill_training_worker(
                cluster, outcome.runs[KILLED_DAG], churn_training, ports
            )
            log(
                f"e2e: SIGKILLed {outcome.killed_worker} (and its task processes) while it ran "
                f"{KILLED_DAG}.{KILLED_TASK} try {outcome.killed_try}, after the BES job was submitted"
            )
    for dag_id, run_id in outcome.runs.items():
        outcome.states[dag_id] = cluster.wait_for_run(dag_id, run_id, timeout=420)
    outcome.timings["runs"] = time.monotonic() - triggered
    log(f"e2e: runs ended {outcome.states} in {outcome.timings['runs']:.0f}s")
    failed = {d: s for d, s in outcome.states.items() if s != "success"}
    assert not failed, f"runs did not succeed: {failed}; {_task_states(cluster, outcome.runs)}"
    check(
        cluster,
        configs,
        outcome,
        endpoints=endpoints,
        training_paths=training_paths,
        ports=ports,
        kill_worker=kill_worker,
    )


def prepare(
    cluster: AirflowCluster, configs: Mapping[str, Any], outcome: Outcome, ports: services.LocalPorts
) -> dict[str, tuple[str, str]]:
    """Wait for the DAGs, land the data of the interval each would run next, note what serves now."""
    for dag_id in configs:
        cluster.wait_for_dag(dag_id, timeout=180)
    # The interval the scheduler would run next: a manual run for it also keeps the scheduler from
    # starting its own when the DAGs are unpaused (one run per logical date).
    outcome.next_runs = {dag_id: cluster.api("GET", f"dags/{dag_id}") for dag_id in configs}
    demo.reset_local_state(ports=ports)
    days = sorted({str(dag["next_dagrun_data_interval_start"])[:10] for dag in outcome.next_runs.values()})
    models, _ = demo.demo_models(services.ROOT / "dags" / "retraining")
    landing = [m for m in models if m.config.dag_id in configs]
    demo.land_data(landing, [datetime.fromisoformat(day) for day in days], ports)
    endpoints = {}
    for config in configs.values():
        endpoint = demo.scoring_endpoint(config, ports)
        if endpoint is None:
            raise RuntimeError(f"{config.model}: its first target does not serve yet")
        endpoints[config.model] = endpoint
    outcome.served_before = served_models(configs, _emulator_get(ports, "state"), ports)
    outcome.predictions_before = {c.model: demo.score(*endpoints[c.model], c.smoke_test_rows) for c in configs.values()}
    return endpoints


def trigger(cluster: AirflowCluster, outcome: Outcome, dag_ids: list[str]) -> None:
    """Trigger each DAG for its next interval through the REST API, then unpause it."""
    for dag_id in dag_ids:
        dag = outcome.next_runs[dag_id]
        body = {
            "logical_date": dag["next_dagrun_logical_date"],
            "data_interval_start": dag["next_dagrun_data_interval_start"],
            "data_interval_end": dag["next_dagrun_data_interval_end"],
            "conf": {"promote": "auto"},
        }
        outcome.runs[dag_id] = str(cluster.api("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"])
        cluster.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})


def check(
    cluster: AirflowCluster,
    configs: Mapping[str, Any],
    outcome: Outcome,
    *,
    endpoints: Mapping[str, tuple[str, str]],
    training_paths: Mapping[str, str],
    ports: services.LocalPorts,
    kill_worker: bool,
) -> None:
    """One BES job per training task; the killed task reattached; the endpoints serve the new models."""
    from azureml_retrain.config import ClassicEndpointTarget

    submits = _emulator_get(ports, "requests", params={"route": "bes.submit"})["requests"]
    for dag_id, config in configs.items():
        path = training_paths[config.training.azureml_conn_id]
        outcome.bes_submits[dag_id] = sum(1 for r in submits if _under(r["path"], path))
    assert outcome.bes_submits == dict.fromkeys(configs, 1), f"BES jobs submitted per run: {outcome.bes_submits}"

    if kill_worker:
        ti = cluster.task_instance(KILLED_DAG, outcome.runs[KILLED_DAG], KILLED_TASK)
        outcome.final_try = int(ti["try_number"])
        assert outcome.killed_try is not None and outcome.final_try > outcome.killed_try, ti
        retry_log = cluster.task_log(KILLED_DAG, outcome.runs[KILLED_DAG], KILLED_TASK, outcome.final_try)
        assert "Reattaching to BES job" in retry_log, retry_log[-3000:]

    outcome.served_after = served_models(configs, _emulator_get(ports, "state"), ports)
    outcome.predictions_after = {c.model: demo.score(*endpoints[c.model], c.smoke_test_rows) for c in configs.values()}
    ledger = ledger_heads(configs, ports)
    for dag_id, config in configs.items():
        for target in config.targets:
            before, after = outcome.served_before[target.name], outcome.served_after[target.name]
            assert after is not None and after != before, f"{target.name} still serves {before}"
            head = ledger[target.name]
            assert head.get("kind") == "promotion" and head.get("run_id") == outcome.runs[dag_id], head
            if isinstance(target, ClassicEndpointTarget):
                assert head["model_uri"] == after, (head, after)
        model = config.model
        assert outcome.predictions_after[model] != outcome.predictions_before[model], f"{model}: same predictions"


def kill_training_worker(
    cluster: AirflowCluster, run_id: str, training_path: str, ports: services.LocalPorts, timeout: float = 240.0
) -> tuple[str, int]:
    """SIGKILL the process tree of the Celery worker running the churn ``train`` task once the task
    has submitted its BES job (it then waits on the delayed start, before it can defer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        submits = _emulator_get(ports, "requests", params={"route": "bes.submit"})["requests"]
        if any(_under(r["path"], training_path) for r in submits):
            break
        ti = cluster.task_instance(KILLED_DAG, run_id, KILLED_TASK)
        if ti["state"] in ("success", "failed", "upstream_failed", "skipped", "deferred"):
            raise AssertionError(f"{KILLED_TASK} got to {ti['state']} before it could be killed on its worker")
        time.sleep(0.5)
    else:
        raise TimeoutError(f"{KILLED_DAG}.{KILLED_TASK} submitted no BES job in {timeout:.0f}s")
    ti = cluster.task_instance(KILLED_DAG, run_id, KILLED_TASK)
    assert ti["state"] == "running" and ti["pid"], f"{KILLED_TASK} is not running on a worker: {ti}"
    worker = cluster.component_running(int(ti["pid"]))
    assert worker in cluster.worker_names, f"task process {ti['pid']} belongs to no worker but {worker!r}"
    cluster.kill_component(worker, tree=True)
    return worker, int(ti["try_number"])


# -- reading the services ------------------------------------------------------------------------


def training_job_paths(ports: services.LocalPorts) -> dict[str, str]:
    """Connection id → the URL path of its training service's BES jobs."""
    connections = services.airflow_connections(ports)
    paths = {}
    for variable, value in connections.items():
        connection = json.loads(value)
        if connection["conn_type"] == "azureml_web_service":
            conn_id = variable.removeprefix("AIRFLOW_CONN_").lower()
            paths[conn_id] = f"{urlparse(connection['host']).path}/jobs"
    return paths


def served_models(configs: Mapping[str, Any], state: Mapping[str, Any], ports: services.LocalPorts) -> dict[str, Any]:
    """Target name → the model it serves: a classic endpoint's trained-model resource (management
    API), a Resource Manager service's model (the emulator's state)."""
    from azureml_retrain.config import ClassicEndpointTarget

    workspace = state["workspaces"][0]
    arm = {s["name"]: s for s in state["arm_web_services"]}
    served: dict[str, Any] = {}
    for config in configs.values():
        for target in config.targets:
            if isinstance(target, ClassicEndpointTarget):
                url = (
                    f"{services.emulator_url(ports.emulator)}/workspaces/{workspace['id']}/webservices/"
                    f"{target.web_service_id}/endpoints/{target.endpoint_name}"
                )
                headers = {"Authorization": f"Bearer {workspace['authorization_token']}"}
                response = requests.get(url, headers=headers, timeout=30)
                if response.status_code == 404:
                    served[target.name] = None
                    continue
                response.raise_for_status()
                location = response.json()["Resources"][0]["Location"]
                served[target.name] = f"{location['BaseLocation']}{location['RelativeLocation'].lstrip('/')}"
            else:
                served[target.name] = arm[target.web_service_name]["model_uri"]
    return served


def ledger_heads(configs: Mapping[str, Any], ports: services.LocalPorts) -> dict[str, dict[str, Any]]:
    """Target name → its latest ledger record (read from the blob, as the DAGs write it)."""
    from azure.storage.blob import BlobServiceClient

    from azureml_retrain.ledger import target_blob_stem

    client = BlobServiceClient.from_connection_string(services.azurite_connection_string(ports.azurite))
    heads = {}
    for config in configs.values():
        container = client.get_container_client(config.ledger_container)
        for target in config.targets:
            text = container.download_blob(f"records/{target_blob_stem(target.name)}.jsonl").readall().decode()
            heads[target.name] = json.loads(text.strip().splitlines()[-1])
    return heads


def _emulator_get(ports: services.LocalPorts, path: str, **kwargs: Any) -> Any:
    response = requests.get(f"{services.emulator_url(ports.emulator)}/_emulator/{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def _emulator_post(ports: services.LocalPorts, path: str, body: Mapping[str, Any]) -> None:
    response = requests.post(f"{services.emulator_url(ports.emulator)}/_emulator/{path}", json=body, timeout=30)
    response.raise_for_status()


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


def _task_states(cluster: AirflowCluster, runs: Mapping[str, str]) -> dict[str, dict[str, str]]:
    states: dict[str, dict[str, str]] = {}
    for dag_id, run_id in runs.items():
        for ti in cluster.task_instances(dag_id, run_id):
            index = ti["map_index"]
            states.setdefault(dag_id, {})[ti["task_id"] + (f"[{index}]" if index >= 0 else "")] = str(ti["state"])
    return states


def summary(outcome: Outcome) -> str:
    lines = [f"{'run':<16} {'state':<8} {'BES jobs':>8}"]
    lines += [f"{d:<16} {s:<8} {outcome.bes_submits.get(d, 0):>8}" for d, s in outcome.states.items()]
    lines.append("")
    for target, before in outcome.served_before.items():
        lines.append(f"{target:<18} before {before}")
        lines.append(f"{'':<18} now    {outcome.served_after.get(target)}")
    for model, predicted in outcome.predictions_before.items():
        lines.append(f"{model:<18} predictions before {json.dumps(predicted)}")
        lines.append(f"{'':<18} predictions now    {json.dumps(outcome.predictions_after.get(model))}")
    if outcome.killed_worker:
        lines.append(
            f"\nkilled {outcome.killed_worker} during {KILLED_DAG}.{KILLED_TASK} try {outcome.killed_try}; "
            f"the task succeeded on try {outcome.final_try}, reattached to its BES job"
        )
    timings = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in outcome.timings.items())
    lines.append(f"timings: {timings}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.distributed", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--no-kill", action="store_true", help="do not kill a Celery worker mid-run")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, databases)")
    args = parser.parse_args(argv)
    # SIGTERM (a stopped `make`) unwinds like Ctrl-C, so everything started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    outcome = run(kill_worker=not args.no_kill, keep=args.keep)
    print(f"\n{summary(outcome)}\ne2e-distributed: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
