"""Helpers for end-to-end tests of the retraining DAGs built by ``azureml_retrain.factory``.

Tests build DAGs from copies of the shipped configs (``dags/retraining/*.yaml``) with a fast sensor,
their own data folder, output prefix and ledger container, so runs of different tests never see each
other's data, models or ledgers, and register them in the metadata DB for ``dag.test()``.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
import yaml

from devtools.services import ROOT
from support.emulator import RunningEmulator

CONFIG_FOLDER = ROOT / "dags" / "retraining"
DATA_CONTAINER = "training-data"


def shipped_config_data(model: str) -> dict[str, Any]:
    """The shipped YAML config of ``model`` as a mapping."""
    data = yaml.safe_load((CONFIG_FOLDER / f"{model}.yaml").read_text())
    assert isinstance(data, dict)
    return data


@dataclass
class Retraining:
    """A test copy of a shipped config: its config, DAG, and where its data/ledger live."""

    config: Any
    dag: Any
    data_root: str

    @property
    def dag_id(self) -> str:
        return str(self.config.dag_id)

    @property
    def ledger(self) -> Any:
        from azureml_retrain.ledger import PromotionLedger

        return PromotionLedger(self.config.data.wasb_conn_id, self.config.ledger_container, lock_timeout=30)

    def schedule_time(self) -> tuple[int, int]:
        minute, hour = self.config.schedule.split()[:2]
        return int(hour), int(minute)

    def run_date(self, day: datetime) -> datetime:
        """The logical date of the scheduled run (CronDataIntervalTimetable) that trains on ``day``."""
        hour, minute = self.schedule_time()
        return day.replace(hour=hour, minute=minute)


def build_retraining(model: str, /, *, register: bool = True, **overrides: Any) -> Retraining:
    """A DAG from a copy of the shipped ``model`` config with a unique name, data folder, outputs and
    ledger container, a sensor that does not wait for stability, and ``overrides`` (top-level keys;
    ``data``/``outputs`` overrides are merged)."""
    from azureml_retrain.config import parse_config
    from azureml_retrain.factory import build_dag

    suffix = uuid.uuid4().hex[:8]
    data = copy.deepcopy(shipped_config_data(model))
    data_root = f"t{suffix}"
    data["model"] = f"{model}_{suffix}"
    data["data"] = {
        **data["data"],
        "prefix": f"{data_root}/" + data["data"]["prefix"],
        "stable_for_seconds": 0,
        "poke_interval_seconds": 1,
        "timeout_hours": 0.05,
        **overrides.pop("data", {}),
    }
    data["outputs"] = {**data["outputs"], "prefix": f"t{suffix}/{model}", **overrides.pop("outputs", {})}
    data["ledger_container"] = f"ledger-{suffix}"
    data["retries"] = 0
    data["training"] = {**data["training"], "poll_interval_seconds": 0.5, **overrides.pop("training", {})}
    data.update(overrides)
    config = parse_config(data, f"{model}.yaml (test copy)")
    dag = build_dag(config)
    if register:
        from support.dags import register_dag

        register_dag(dag)
    return Retraining(config, dag, data_root)


def land_window(
    blob_service: Any,
    retraining: Retraining,
    day: datetime,
    *,
    dataset: str,
    window: int = 1,
    rows: int = 400,
    seed: int = 1,
    marker: bool = True,
    parts: int = 1,
) -> str:
    """Land one day's generated data (``part-0.csv`` ... in ``parts`` files, each with the header, then
    ``_SUCCESS``) where the config's sensor looks."""
    from emulator.datasets import generate_csv

    container = blob_service.get_container_client(DATA_CONTAINER)
    if not container.exists():
        container.create_container()
    prefix = retraining.config.data.prefix.format(window_start=day, window_end=day + timedelta(days=1))
    header, *lines = generate_csv(dataset, rows=rows, window=window, seed=seed).splitlines()
    for part in range(parts):
        text = "\n".join([header, *lines[part::parts]]) + "\n"
        container.upload_blob(f"{prefix}part-{part}.csv", text.encode(), overwrite=True)
    if marker:
        container.upload_blob(f"{prefix}_SUCCESS", b"", overwrite=True)
    return prefix


# --- reading what a run did ------------------------------------------------------------------------


def task_states(run: Any) -> dict[str, str]:
    """``{task_id or task_id[map_index]: state}`` of a finished run."""
    from airflow.utils.session import create_session

    with create_session() as session:
        states = {}
        for ti in run.get_task_instances(session=session):
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            states[key] = str(ti.state)
        return states


def started_tasks(run: Any) -> set[str]:
    """Task ids of ``run`` that were started at least once (a task skipped by a branch, or ended by
    the scheduler without a worker, never was)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id for ti in run.get_task_instances(session=session) if ti.try_number > 0}


def xcoms(run: Any, task_id: str, key: str = "return_value") -> list[Any]:
    """Values of ``task_id``'s XCom ``key`` in ``run``, by map index."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(XComModel.map_index, XComModel.value)
            .where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
            .order_by(XComModel.map_index)
        ).all()
    return [xcom_value(value) for _, value in rows]


def xcom(run: Any, task_id: str, key: str = "return_value") -> Any:
    values = xcoms(run, task_id, key)
    assert len(values) == 1, f"{task_id}/{key}: {len(values)} value(s)"
    return values[0]


def xcom_value(value: Any) -> Any:
    """An XCom row's value: JSON documents are decoded already, plain strings may still be JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def asset_events(asset_name: str, *, run: Any | None = None) -> list[dict[str, Any]]:
    """Asset events recorded for ``asset_name`` (optionally only those from ``run``)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        query = query.where(AssetModel.name == asset_name)
        if run is not None:
            query = query.where(AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id)
        return [
            {
                "extra": event.extra,
                "source_dag_id": event.source_dag_id,
                "source_run_id": event.source_run_id,
                "source_task_id": event.source_task_id,
            }
            for event in session.scalars(query)
        ]


# --- the emulator's view ----------------------------------------------------------------------------


def churn_service_id(emulator: RunningEmulator) -> str:
    return str(emulator.classic_service("predictive")["id"])


def endpoint_model(emulator: RunningEmulator, endpoint: str) -> str | None:
    """The model URI a classic endpoint serves, read from the management API (None: no endpoint)."""
    workspace = emulator.workspace
    url = f"{emulator.url}/workspaces/{workspace['id']}/webservices/{churn_service_id(emulator)}/endpoints/{endpoint}"
    response = requests.get(url, headers={"Authorization": f"Bearer {workspace['authorization_token']}"}, timeout=30)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    location = response.json()["Resources"][0]["Location"]
    return f"{location['BaseLocation']}{location['RelativeLocation'].lstrip('/')}"


def endpoint_scoring(emulator: RunningEmulator, endpoint: str) -> Any:
    """The RRS data plane of a (possibly run-created) endpoint, from the emulator's live state."""
    from support.emulator import DataPlane

    state = emulator.admin("GET", "state").json()
    service = next(s for s in state["workspaces"][0]["web_services"] if s["kind"] == "predictive")
    ep = next(e for e in service["endpoints"] if e["name"] == endpoint)
    return DataPlane(ep["api_location"], ep["primary_key"])


def arm_model(name: str = "energy-predictive") -> str:
    from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook
    from azureml_retrain.operators.promote import _asset_uri, find_trained_model_asset

    definition = AzureMLResourceManagerHook().get_web_service(name)
    return str(_asset_uri(find_trained_model_asset(definition, None)[1]))


def train_churn_model(emulator: RunningEmulator, connection_string: str, blob_service: Any, *, window: int) -> str:
    """Train a churn model with raw BES calls (no Airflow); returns its ``container/blob``."""
    from emulator.datasets import generate_csv
    from support.emulator import DataPlane, connection_reference

    container = f"trained-{uuid.uuid4().hex[:12]}"
    blob_service.create_container(container)
    blob_service.get_blob_client(container, "data.csv").upload_blob(
        generate_csv("churn", rows=200, window=window, seed=3).encode()
    )
    svc = emulator.classic_endpoint("training")
    finished = DataPlane(svc["api_location"], svc["primary_key"]).run(
        {
            "Inputs": {"input1": connection_reference(connection_string, f"{container}/data.csv")},
            "Outputs": {
                "output1": connection_reference(connection_string, f"{container}/model.ilearner"),
                "output2": connection_reference(connection_string, f"{container}/evaluation.csv"),
            },
            "GlobalParameters": {},
        }
    )
    assert finished["StatusCode"] == "Finished", finished
    return f"{container}/model.ilearner"


def run_as_backfill(monkeypatch: Any) -> None:
    """Make ``dag.test()`` create its run as a backfill run (``run_type=backfill``) instead of a manual one.

    Real backfill runs are created by ``airflow backfill create`` and run by the scheduler; this keeps
    everything else of ``dag.test()`` (the same DagRun row shape the tasks see: ``dag_run.run_type``,
    logical date, data interval) without a scheduler.
    """
    import airflow.models.dagrun as dagrun_module
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    def create(*, dag: Any, run_id: str, session: Any, **kwargs: Any) -> Any:
        existing = session.scalar(
            select(dagrun_module.DagRun).where(
                dagrun_module.DagRun.dag_id == dag.dag_id,
                dagrun_module.DagRun.logical_date == kwargs["logical_date"],
            )
        )
        if existing:
            session.delete(existing)
            session.commit()
        return dag.create_dagrun(
            run_id=run_id.replace("manual__", "backfill__", 1),
            logical_date=kwargs["logical_date"],
            data_interval=kwargs["data_interval"],
            run_after=kwargs["run_after"],
            conf=kwargs["conf"],
            run_type=DagRunType.BACKFILL_JOB,
            state=DagRunState.RUNNING,
            triggered_by=DagRunTriggeredByType.BACKFILL,
            triggering_user_name=kwargs["triggering_user_name"],
            start_date=kwargs["start_date"],
            session=session,
        )

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create)
