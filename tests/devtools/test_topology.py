"""docker-compose.yaml and `make e2e-distributed` cannot drift: the local run is derived from the
compose file, and these checks pin what the derivation may change (hosts, ports, paths) and what it
may not (commands, settings, connections)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from devtools import distributed, services
from devtools.cluster import CELERY_WORKER
from devtools.topology import ComposeTopology, Placement, interpolate, read_env_file

ENV_FILE = services.ROOT / "deploy" / "airflow.env"


@pytest.fixture
def plan(tmp_path: Path) -> distributed.Plan:
    return distributed.plan(tmp_path)


def compose_names(topology: ComposeTopology) -> list[str]:
    return list(topology.services)


def options(argv: list[str]) -> dict[str, str | None]:
    """``--name value`` pairs and bare ``--flag``s of a command line."""
    found: dict[str, str | None] = {}
    for index, arg in enumerate(argv):
        if arg.startswith("--"):
            following = argv[index + 1] if index + 1 < len(argv) else None
            found[arg] = None if following is None or following.startswith("--") else following
    return found


def test_every_airflow_service_of_the_compose_file_is_started_with_its_command(plan):
    commands = plan.topology.airflow_services()
    assert sorted(commands.values()) == sorted(["api-server", "scheduler", "dag-processor", "triggerer", CELERY_WORKER])
    assert [*plan.components, plan.worker_command] == [c for c in commands.values() if c != CELERY_WORKER] + [
        CELERY_WORKER
    ]
    # airflow-init's job (migrating the database) is what AirflowCluster.start does first.
    assert plan.topology.environment("airflow-init")["_AIRFLOW_DB_MIGRATE"] == "true"
    cluster = plan.cluster()
    assert (cluster.executor, cluster.worker_command, cluster.celery_workers) == (
        "CeleryExecutor",
        CELERY_WORKER,
        distributed.WORKERS,
    )


def test_airflow_settings_are_the_compose_files(plan):
    """Every setting of deploy/airflow.env and of the compose environment reaches every local
    component unchanged (host names placed), and the run adds settings but overrides none."""
    shared = read_env_file(ENV_FILE)
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in plan.topology.airflow_services():
        assert plan.topology.env_files(name) == [ENV_FILE]
    compose_env = plan.topology.environment("airflow-scheduler", plan.placement)
    assert shared.items() <= compose_env.items()
    assert not set(distributed.E2E_SETTINGS) & set(compose_env)

    plan.cluster().home.mkdir(parents=True)
    environment = plan.cluster().environment()
    assert {k: environment[k] for k in compose_env} == compose_env
    for name, command in plan.topology.airflow_services().items():
        extra = {k: v for k, v in plan.topology.environment(name, plan.placement).items() if k not in compose_env}
        assert plan.component_env.get(command, {}) == extra


def test_compose_connections_are_the_local_development_connections(plan):
    """The compose file defines every connection the DAGs use, equal to `devtools.services`' once placed:
    same ids, types, seeded keys, and the emulator's certificate where the emulator writes it."""
    compose_env = plan.topology.environment("airflow-scheduler", plan.placement)
    compose_connections = {k: json.loads(v) for k, v in compose_env.items() if k.startswith("AIRFLOW_CONN_")}
    local = {k: json.loads(v) for k, v in services.airflow_connections(plan.local_ports).items()}
    assert compose_connections == local


def test_the_emulator_is_told_the_names_other_containers_use(plan):
    compose_options = options(plan.topology.command("azureml-emulator"))
    assert compose_options["--public-url"] == "http://azureml-emulator:8765"
    assert compose_options["--tls-hostname"] == "azureml-emulator"
    resource_manager = json.loads(
        plan.topology.environment("airflow-worker")["AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT"]
    )
    assert resource_manager["extra"]["authority_host"] == "https://azureml-emulator:8766"
    # Placed, the emulator listens and names itself on loopback, and writes its certificate where
    # the connection reads it.
    placed = plan.service_argv["azureml-emulator"]
    assert placed[:3] == [distributed.default_executables()["python"], "-m", "emulator"]
    placed_options = options(placed)
    assert placed_options["--tls-hostname"] == services.HOST
    assert placed_options["--public-url"] == services.emulator_url(plan.local_ports.emulator)
    assert Path(str(placed_options["--data-dir"])) == plan.local_ports.emulator_data_dir


def test_no_compose_host_name_is_left_after_placement(plan):
    names = "|".join(re.escape(n) for n in compose_names(plan.topology))
    leftover = re.compile(rf"(//|@)({names})\b")
    values = [
        *plan.settings.values(),
        *(v for env in plan.component_env.values() for v in env.values()),
        *(a for argv in plan.service_argv.values() for a in argv),
    ]
    assert [v for v in values if leftover.search(v)] == []
    assert [v for v in values if "/opt/" in v] == []


def test_interpolation_follows_compose():
    variables = {"SET": "value", "EMPTY": ""}
    assert (
        interpolate("${SET} ${SET:-x} ${EMPTY:-d} ${EMPTY-d} ${UNSET:-d} $$HOME", variables) == "value value d  d $HOME"
    )
    with pytest.raises(KeyError, match=r"UNSET: put it in \.env"):
        interpolate("${UNSET:?put it in .env}", variables)


def test_placement_rewrites_hosts_in_urls_only():
    placement = Placement(ports={"postgres": {5432: 6001}, "redis": {6379: 6002}}, volumes={})
    assert placement.url_hosts("postgresql+psycopg2://airflow:airflow@postgres/airflow") == (
        "postgresql+psycopg2://airflow:airflow@127.0.0.1:6001/airflow"
    )
    assert placement.url_hosts("redis://:@redis:6379/0") == "redis://:@127.0.0.1:6002/0"
    assert placement.url_hosts("http://postgresx:1/ and redis alone") == "http://postgresx:1/ and redis alone"
    with pytest.raises(ValueError, match="no local port"):
        placement.url_hosts("redis://redis:1234/0")
