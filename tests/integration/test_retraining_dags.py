"""The retraining DAGs (``azureml_retrain.factory``) end to end: ``dag.test()`` against the emulator + Azurite.

The churn promote path runs the shipped ``retrain_churn`` DAG itself (from the DAG file, ``dags/retraining_dags.py``).
The other tests run DAGs built from copies of the shipped configs with a sensor that does not wait
for stability, and their own data folder, outputs and ledger container (``support.retraining``), so
no test sees another's data, models or ledger.

What serves is always read from the outside: the management/ARM plane's model location and
predictions through RRS; what was recorded, from the ledger's blobs.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from azureml_retrain.blobs import BlobLocation
from azureml_retrain.config import load_config
from azureml_retrain.factory import build_rollback_dag, stage_training_input
from azureml_retrain.ledger import NO_MODEL, PromotionLedger, PromotionRefusedError
from azureml_retrain.operators.promote import REFUSAL_XCOM_KEY, PatchEndpointOperator
from azureml_retrain.windows import latest_cron_interval
from support.airflow_context import make_context
from support.dags import register_dag
from support.retrain import (
    CHURN_SMOKE_ROWS,
    ENERGY_SMOKE_ROWS,
    add_fault,
    arm_scoring,
    job_fault,
    predictions,
    requests_log,
)
from support.retraining import (
    CONFIG_FOLDER,
    DATA_CONTAINER,
    Retraining,
    arm_model,
    asset_events,
    build_retraining,
    churn_service_id,
    endpoint_model,
    endpoint_scoring,
    land_window,
    run_as_backfill,
    started_tasks,
    task_states,
    train_churn_model,
    xcom,
    xcoms,
)

pytestmark = pytest.mark.integration

DAY1 = datetime(2026, 11, 18, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
SEED = "aml://trainedmodel/"
CHURN_TARGETS = ("churn-retrain01", "churn-retrain02")


def run_dag(dag: Any, **kwargs: Any) -> Any:
    began = time.monotonic()
    run = dag.test(**kwargs)
    print(f"{dag.dag_id}: {run.state} in {time.monotonic() - began:.1f}s")
    return run


def scheduled_run_of(retraining: Retraining, day: datetime) -> datetime:
    """The logical date whose (CronDataIntervalTimetable) data interval is ``day``'s window."""
    return retraining.run_date(day + timedelta(days=1))


def model_of(run: Any) -> str:
    """The ``container/blob`` of the model a run trained (from its plan)."""
    return str(xcom(run, "plan")["model"])


def verdict_of(run: Any) -> dict[str, Any]:
    """The evaluation's verdict (``evaluate`` branches, so it is in the "decision" XCom)."""
    return dict(xcom(run, "evaluate", key="decision"))


def trained_on(emulator: Any, run: Any) -> str:
    """The blob (``container/path``) the run's BES job read its training input from, as the service saw it."""
    job = emulator.admin("GET", f"state/jobs/{xcom(run, 'train')['job_id']}").json()
    (location,) = job["inputs"].values()
    return str(location).split("/devstoreaccount1/", 1)[1]


def served_models(emulator: Any) -> dict[str, str | None]:
    return {t: endpoint_model(emulator, t.removeprefix("churn-")) for t in CHURN_TARGETS}


# --- promote paths ---------------------------------------------------------------------------------


def test_shipped_churn_dag_promotes_to_both_endpoints(emulator, blob_service, airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    dag = DagBag(dag_folder=str(CONFIG_FOLDER.parent / "retraining_dags.py")).dags["retrain_churn"]
    register_dag(dag)
    shipped = Retraining(load_config(CONFIG_FOLDER / "churn.yaml"), dag, "")
    land_window(blob_service, shipped, DAY1, dataset="churn", window=1)
    seed_model = endpoint_model(emulator, "retrain01")
    assert seed_model is not None and seed_model.startswith(SEED)
    assert endpoint_model(emulator, "retrain02") is None  # the run creates it
    before = predictions(endpoint_scoring(emulator, "retrain01"), CHURN_SMOKE_ROWS)

    run = run_dag(dag, logical_date=scheduled_run_of(shipped, DAY1))

    assert run.state == DagRunState.SUCCESS, task_states(run)
    states = task_states(run)
    # Both endpoints in one batch: one task instance promotes them.
    assert states["promote_classic_endpoints[0]"] == "success" and "promote_classic_endpoints[1]" not in states
    assert states["skip_promotion"] == "skipped"
    plan = xcom(run, "plan")
    window = {"start": "2026-11-18T02:00:00+00:00", "end": "2026-11-19T02:00:00+00:00"}
    assert plan["window"] == window
    assert trained_on(emulator, run) == "training-data/churn/2026-11-18/part-0.csv"  # the one blob, not a copy
    model_uri = endpoint_model(emulator, "retrain01")
    assert model_uri is not None and model_uri.endswith(model_of(run))
    assert served_models(emulator) == dict.fromkeys(CHURN_TARGETS, model_uri)
    # Serving really changed: RRS answers with the new model on both endpoints.
    after = predictions(endpoint_scoring(emulator, "retrain01"), CHURN_SMOKE_ROWS)
    assert after != before
    assert predictions(endpoint_scoring(emulator, "retrain02"), CHURN_SMOKE_ROWS) == after
    # The ledger: the model found serving, then this run's promotion with its metrics, window and run.
    metrics = verdict_of(run)["challenger"]
    ledger = PromotionLedger(container=shipped.config.ledger_container)
    for target in CHURN_TARGETS:
        baseline, promotion = ledger.records(target)
        assert (baseline.kind, baseline.model_uri) == ("baseline", seed_model)
        assert (promotion.kind, promotion.model_uri, promotion.previous_model_uri) == (
            "promotion",
            model_uri,
            seed_model,
        )
        assert promotion.metrics == metrics and metrics["AUC"] > 0.7
        assert promotion.window == window
        assert (promotion.dag_id, promotion.run_id) == ("retrain_churn", run.run_id)
        assert promotion.inputs == [trained_on(emulator, run)]  # what the model history view links
    report = xcom(run, "report")
    assert report == {"promoted": list(CHURN_TARGETS), "already_serving": [], "refused": {}, "failed": []}
    (event,) = asset_events("azureml_model_churn", run=run)
    assert event["source_task_id"] == "report"
    assert event["extra"]["promoted"] == list(CHURN_TARGETS)


def test_energy_dag_updates_the_arm_web_service(emulator, blob_service, airflow_db):
    from airflow.utils.state import DagRunState

    energy = build_retraining("energy")
    land_window(blob_service, energy, DAY1, dataset="energy", window=2)
    seed_model = arm_model()
    scoring = arm_scoring(emulator)
    before = predictions(scoring, ENERGY_SMOKE_ROWS)

    run = run_dag(energy.dag, logical_date=scheduled_run_of(energy, DAY1))

    assert run.state == DagRunState.SUCCESS, task_states(run)
    ((promoted,),) = xcoms(run, "promote_arm_web_services")  # one batch of one target
    assert promoted["changed"] is True and promoted["previous_uri"] == seed_model
    assert arm_model() == promoted["current_uri"] and promoted["current_uri"].endswith(model_of(run))
    assert predictions(scoring, ENERGY_SMOKE_ROWS) != before
    baseline, promotion = energy.ledger.records("energy-predictive")
    assert baseline.model_uri == seed_model
    assert promotion.model_uri == promoted["current_uri"]
    assert promotion.window == {"start": "2026-11-18T03:00:00+00:00", "end": "2026-11-19T03:00:00+00:00"}
    assert "Root Mean Squared Error" in promotion.metrics
    report = {"promoted": ["energy-predictive"], "already_serving": [], "refused": {}, "failed": []}
    assert xcom(run, "report") == report
    assert len(asset_events(f"azureml_model_{energy.config.model}", run=run)) == 1


def test_energy_manual_run_without_logical_date(emulator, blob_service, airflow_db):
    """The shipped energy config's templated global parameter renders in a run without a logical date."""
    from airflow.utils.state import DagRunState

    energy = build_retraining("energy")
    start, end = latest_cron_interval(energy.config.schedule, datetime.now(UTC))
    land_window(blob_service, energy, start, dataset="energy", window=2)

    run = run_dag(energy.dag, logical_date=None)

    assert run.logical_date is None
    assert run.state == DagRunState.SUCCESS, task_states(run)
    assert xcom(run, "plan")["window"] == {"start": start.isoformat(), "end": end.isoformat()}
    assert xcom(run, "report")["promoted"] == ["energy-predictive"]


def test_a_window_in_several_files_trains_on_their_concatenation(emulator, blob_service, airflow_db):
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn")
    prefix = land_window(blob_service, churn, DAY1, dataset="churn", window=1, parts=3)

    run = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY1))

    assert run.state == DagRunState.SUCCESS, task_states(run)
    staged = xcom(run, "plan")["staged_input"]
    assert trained_on(emulator, run) == staged
    container, _, name = staged.partition("/")
    text = blob_service.get_blob_client(container, name).download_blob().readall().decode()
    parts = [
        blob_service.get_blob_client(DATA_CONTAINER, f"{prefix}part-{i}.csv").download_blob().readall().decode()
        for i in range(3)
    ]
    header = parts[0].splitlines()[0]
    assert text.splitlines() == [header, *(line for part in parts for line in part.splitlines()[1:])]
    assert len(text.splitlines()) == 401  # the header once, every row of the window
    assert xcom(run, "report")["promoted"] == list(CHURN_TARGETS)
    # A retry finds the input staged from the same blobs and leaves it alone (its job may be reading it);
    # staged from other blobs (the sensor accepted again after a clear), it is replaced.
    staged_blob = blob_service.get_blob_client(container, name)
    etag = staged_blob.get_blob_properties().etag
    accepted = xcom(run, "wait_for_data")
    stage_training_input(churn.config.data.wasb_conn_id, accepted, BlobLocation.parse(staged))
    assert staged_blob.get_blob_properties().etag == etag
    first_two = [b for b in accepted["blobs"] if b["name"].endswith(("part-0.csv", "part-1.csv"))]
    stage_training_input(churn.config.data.wasb_conn_id, {**accepted, "blobs": first_two}, BlobLocation.parse(staged))
    assert staged_blob.get_blob_properties().etag != etag
    assert len(staged_blob.download_blob().readall().decode().splitlines()) == 1 + 267  # rows of parts 0 and 1


# --- no-promotion paths, manual runs without a logical date ----------------------------------------


def assert_nothing_promoted(emulator: Any, retraining: Retraining, run: Any, seed_model: str | None) -> None:
    states = task_states(run)
    assert states["skip_promotion"] == "success"
    assert states["promote_classic_endpoints"] == "skipped"
    assert states["report"] == states["all_targets_promoted"] == "skipped"
    # The branch not taken costs no task start: the promotion path, report and all_targets_promoted
    # are skipped by the branching task itself (what keeps a backfill run cheap, measurement 8).
    not_started = {"classic_targets", "arm_targets", "promote_classic_endpoints", "report", "all_targets_promoted"}
    assert not started_tasks(run) & not_started, started_tasks(run)
    assert served_models(emulator) == {"churn-retrain01": seed_model, "churn-retrain02": None}
    assert all(retraining.ledger.records(t) == [] for t in CHURN_TARGETS)
    assert asset_events(f"azureml_model_{retraining.config.model}") == []
    assert requests_log(emulator, "mgmt.endpoint.patch") == []


def test_rules_override_rejects_in_a_manual_run_without_logical_date(emulator, blob_service, airflow_db):
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn")
    land_window(blob_service, churn, DAY2, dataset="churn", window=1)
    seed_model = endpoint_model(emulator, "retrain01")
    conf = {
        "window": "2026-11-19T02:00:00Z/2026-11-20T02:00:00Z",
        "rules": {"metric": "AUC", "threshold": 0.999},
    }

    run = run_dag(churn.dag, logical_date=None, run_conf=conf)

    assert (run.logical_date, run.data_interval_start, run.data_interval_end) == (None, None, None)
    assert run.state == DagRunState.SUCCESS, task_states(run)
    plan = xcom(run, "plan")
    assert plan["window"] == {"start": "2026-11-19T02:00:00+00:00", "end": "2026-11-20T02:00:00+00:00"}
    # The override as the schema resolved it: the metric's direction inferred, defaults spelt out.
    assert plan["rules"] == {
        "metric": "AUC",
        "threshold": 0.999,
        "higher_is_better": True,
        "on_missing_champion_metric": "error",
        "guards": [],
    }
    assert_nothing_promoted(emulator, churn, run, seed_model)
    (decision,) = churn.ledger.decisions(churn.dag_id)
    assert decision["promote"] is False and decision["run_id"] == run.run_id
    assert "AUC" in decision["reason"] and "threshold >= 0.999" in decision["reason"]
    # Written by evaluate as it chose the branch: the verdict it judged with.
    assert decision["decision"]["reason"] == xcom(run, "evaluate", key="decision")["reason"]


def test_a_bad_rules_override_fails_the_plan_before_any_job(emulator, blob_service, airflow_db):
    """The trigger form's rules are checked by the config's schema when the run plans: an AUC
    threshold no model can reach costs no BES job, and the plan is not retried."""
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn", retries=2)
    land_window(blob_service, churn, DAY2, dataset="churn", window=1)
    conf = {"window": "2026-11-19/2026-11-20", "rules": {"metric": "AUC", "threshold": 1.5}}

    run = run_dag(churn.dag, logical_date=None, run_conf=conf)

    assert run.state == DagRunState.FAILED
    plan = next(ti for ti in run.get_task_instances() if ti.task_id == "plan")
    assert (plan.state, plan.try_number) == ("failed", 1), (plan.state, plan.try_number)
    assert task_states(run)["train"] in ("upstream_failed", None), task_states(run)
    assert not [r for r in requests_log(emulator) if r["route"] == "bes.submit"]


def test_promote_never_trains_on_the_latest_complete_interval(emulator, blob_service, airflow_db):
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn")
    start, end = latest_cron_interval(churn.config.schedule, datetime.now(UTC))
    land_window(blob_service, churn, start, dataset="churn", window=1)
    seed_model = endpoint_model(emulator, "retrain01")

    run = run_dag(churn.dag, logical_date=None, run_conf={"promote": "never"})

    assert run.logical_date is None
    assert run.state == DagRunState.SUCCESS, task_states(run)
    assert xcom(run, "plan")["window"] == {"start": start.isoformat(), "end": end.isoformat()}
    assert task_states(run)["train"] == "success"
    assert_nothing_promoted(emulator, churn, run, seed_model)
    (decision,) = churn.ledger.decisions(churn.dag_id)
    assert decision["promote"] is False
    assert decision["reason"] == "not promoted: the run's promote param is 'never'"


def test_dry_run_stops_before_training(emulator, blob_service, airflow_db):
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn")
    land_window(blob_service, churn, DAY1, dataset="churn", window=1)

    run = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY1), run_conf={"dry_run": True})

    assert run.state == DagRunState.SUCCESS, task_states(run)
    states = task_states(run)
    assert states["plan"] == "success" and xcom(run, "plan")["dry_run"] is True
    assert {states[t] for t in ("train", "evaluate", "report", "all_targets_promoted")} == {"skipped"}
    assert requests_log(emulator, "bes.submit") == []
    assert requests_log(emulator, "mgmt.endpoint.patch") == []


def test_failed_training_fails_the_run_without_reporting_promotions(emulator, blob_service, airflow_db):
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn")
    land_window(blob_service, churn, DAY1, dataset="churn", window=1)
    job_fault(emulator, "fail", details="Training data rejected by the test", count=1)

    run = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY1))

    assert run.state == DagRunState.FAILED
    states = task_states(run)
    assert states["train"] == "failed"
    assert {states[t] for t in ("evaluate", "promote_classic_endpoints", "skip_promotion")} == {"upstream_failed"}
    # Nothing was attempted, so nothing is reported as a failed promotion (and no Asset event).
    assert states["report"] == states["all_targets_promoted"] == "skipped"
    assert asset_events(f"azureml_model_{churn.config.model}") == []
    assert requests_log(emulator, "mgmt.endpoint.patch") == []


# --- fan-out with one target failing ---------------------------------------------------------------


def test_one_failing_endpoint_does_not_stop_the_other(emulator, blob_service, airflow_db):
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn")
    land_window(blob_service, churn, DAY1, dataset="churn", window=1)
    seed_model = endpoint_model(emulator, "retrain01")
    emulator.admin(
        "POST",
        "faults",
        json={
            "route": "mgmt.endpoint.patch",
            "path": ".*/endpoints/retrain02",
            "action": {"kind": "status", "status": 500},
        },
    )

    run = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY1))

    assert run.state == DagRunState.FAILED
    states = task_states(run)
    # One batch: its task fails, naming retrain02, after promoting retrain01.
    assert states["promote_classic_endpoints[0]"] == "failed"
    assert states["report"] == "success"
    assert states["all_targets_promoted"] == "failed"
    assert xcom(run, "report") == {
        "promoted": ["churn-retrain01"],
        "already_serving": [],
        "refused": {},
        "failed": ["churn-retrain02"],
    }
    # The decision log, written after the attempt, says what happened to each target.
    (decision,) = churn.ledger.decisions(churn.dag_id)
    assert decision["promote"] is True
    assert decision["reason"] == "promoted to ['churn-retrain01'], but not to ['churn-retrain02']"
    assert decision["targets"]["churn-retrain01"] == {"outcome": "promoted"}
    assert decision["targets"]["churn-retrain02"]["outcome"] == "failed"
    new_model = endpoint_model(emulator, "retrain01")
    assert new_model is not None and new_model.endswith(model_of(run))
    assert endpoint_model(emulator, "retrain02") == seed_model  # created by the run, never patched
    assert [r.kind for r in churn.ledger.records("churn-retrain01")] == ["baseline", "promotion"]
    assert churn.ledger.records("churn-retrain02") == []
    # retrain01 does serve the new model: the Asset event says so, and which target failed.
    (event,) = asset_events(f"azureml_model_{churn.config.model}", run=run)
    assert event["extra"]["failed"] == ["churn-retrain02"]


# --- history: older windows, rollbacks -------------------------------------------------------------


def test_older_window_never_replaces_newer_and_rollbacks(emulator, blob_service, airflow_db, capfd, monkeypatch):
    """Newer window promoted; a backfill run of an older window trains and evaluates but does not
    promote; the older window forced afterwards is refused by the ledger guard; a newer one is
    promoted; then roll back to the previous model, and to the seed."""
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn")
    for day, drift in ((DAY1, 1), (DAY2, 2), (DAY3, 3)):
        land_window(blob_service, churn, day, dataset="churn", window=drift)
    seed_model = endpoint_model(emulator, "retrain01")

    newer = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY2))
    assert newer.state == DagRunState.SUCCESS, task_states(newer)
    newer_model = endpoint_model(emulator, "retrain01")
    assert newer_model is not None and newer_model.endswith(model_of(newer))

    with monkeypatch.context() as patch:
        run_as_backfill(patch)
        backfill = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY1))
    assert (str(backfill.run_type), backfill.run_id.startswith("backfill__")) == ("backfill", True)
    assert backfill.state == DagRunState.SUCCESS, task_states(backfill)
    states = task_states(backfill)
    assert (states["train"], states["evaluate"], states["skip_promotion"]) == ("success", "success", "success")
    assert states["promote_classic_endpoints"] == states["report"] == "skipped"
    assert xcom(backfill, "plan")["run_type"] == "backfill"
    decision = churn.ledger.decisions(churn.dag_id)[-1]
    assert decision["run_id"] == backfill.run_id and decision["promote"] is False
    assert decision["reason"].startswith("not promoted: backfill runs only train and evaluate")
    assert served_models(emulator) == dict.fromkeys(CHURN_TARGETS, newer_model)

    # A refusal by the no-demotion guard is an outcome of the run, not a failure: the run succeeds,
    # the promotions are skipped, and the decision log says each target refused, and why.
    older = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY1), run_conf={"promote": "force"})
    assert older.state == DagRunState.SUCCESS, task_states(older)
    states = task_states(older)
    assert states["promote_classic_endpoints[0]"] == "skipped"  # the batch: every target refused
    assert (states["report"], states["all_targets_promoted"]) == ("skipped", "success")
    decision = churn.ledger.decisions(churn.dag_id)[-1]
    assert decision["run_id"] == older.run_id and decision["promote"] is False
    for target in CHURN_TARGETS:
        assert decision["targets"][target] == {
            "outcome": "refused",
            "detail": f"{target} serves a model trained on data up to 2026-11-20T02:00:00+00:00; a model trained "
            "on an older window (up to 2026-11-19T02:00:00+00:00) does not replace it",
        }
    assert decision["reason"].startswith("not promoted: churn-retrain01 serves a model trained on data up to")
    assert served_models(emulator) == dict.fromkeys(CHURN_TARGETS, newer_model)
    assert [r.model_uri for r in churn.ledger.records("churn-retrain01")] == [seed_model, newer_model]
    # Refused by the guard, under the lock, before any PATCH: the endpoints were patched once (by `newer`).
    assert len(requests_log(emulator, "mgmt.endpoint.patch")) == 2

    latest = run_dag(churn.dag, logical_date=scheduled_run_of(churn, DAY3), run_conf={"promote": "force"})
    assert latest.state == DagRunState.SUCCESS, task_states(latest)
    latest_model = endpoint_model(emulator, "retrain01")
    assert latest_model is not None and latest_model.endswith(model_of(latest))

    rollback = build_rollback_dag([churn.config])
    register_dag(rollback)
    back = run_dag(rollback, logical_date=None, run_conf={"target": "churn-retrain01"})
    assert back.state == DagRunState.SUCCESS, task_states(back)
    assert served_models(emulator) == {"churn-retrain01": newer_model, "churn-retrain02": latest_model}
    head = churn.ledger.records("churn-retrain01")[-1]
    assert (head.kind, head.model_uri, head.previous_model_uri) == ("rollback", newer_model, latest_model)
    assert head.window == {"start": "2026-11-19T02:00:00+00:00", "end": "2026-11-20T02:00:00+00:00"}
    assert head.metrics == verdict_of(newer)["challenger"]  # the champion is the restored model again

    to_seed = run_dag(rollback, logical_date=None, run_conf={"target": "churn-retrain01", "to_model_uri": seed_model})
    assert to_seed.state == DagRunState.SUCCESS, task_states(to_seed)
    assert endpoint_model(emulator, "retrain01") == seed_model
    assert [r.kind for r in churn.ledger.records("churn-retrain01")] == [
        "baseline",
        "promotion",
        "promotion",
        "rollback",
        "rollback",
    ]


# --- operator-level: rollback after one promotion, concurrent promotions -------------------------


@pytest.fixture
def trained(emulator, azurite, blob_service) -> dict[str, str]:
    return {w: train_churn_model(emulator, azurite, blob_service, window=i) for i, w in ((1, "w1"), (2, "w2"))}


def ledgered_patch(emulator: Any, ledger: PromotionLedger, model: str, **kwargs: Any) -> PatchEndpointOperator:
    return PatchEndpointOperator(
        task_id=kwargs.pop("task_id", "promote"),
        web_service_id=churn_service_id(emulator),
        endpoint_name="retrain01",
        target_name="churn-retrain01",
        model=model,
        ledger_container=ledger.container,
        verify_poll_interval=0.1,
        **kwargs,
    )


def test_rollback_after_the_first_promotion_goes_back_to_the_seed(emulator, trained, airflow_db):
    from airflow.utils.state import DagRunState

    churn = build_retraining("churn", register=False)
    seed_model = endpoint_model(emulator, "retrain01")
    ledgered_patch(emulator, churn.ledger, trained["w1"], expected_model_uri=NO_MODEL).execute(
        make_context(run_id="first")  # type: ignore[arg-type]
    )
    assert endpoint_model(emulator, "retrain01") != seed_model
    rollback = build_rollback_dag([churn.config])
    register_dag(rollback)

    run = run_dag(rollback, logical_date=None, run_conf={"target": "churn-retrain01"})

    assert run.state == DagRunState.SUCCESS, task_states(run)
    assert endpoint_model(emulator, "retrain01") == seed_model
    assert [(r.kind, r.model_uri) for r in churn.ledger.records("churn-retrain01")][-1] == ("rollback", seed_model)


def test_concurrent_promotions_to_one_target_are_serialised(emulator, trained):
    """Two runs evaluated against the same (empty) ledger promote at once: the second waits for the
    first's lock, then its compare-and-set sees the target changed and refuses."""
    ledger = PromotionLedger(container=f"ledger-concurrent-{time.monotonic_ns() % 10**8}")
    # Slow the first PATCH down, so the second promotion certainly arrives while the first holds the lock.
    add_fault(emulator, "mgmt.endpoint.patch", {"kind": "delay", "delay_seconds": 3})
    outcomes: dict[str, Any] = {}

    def promote(name: str, model: str) -> None:
        op = ledgered_patch(emulator, ledger, model, task_id=name, expected_model_uri=NO_MODEL)
        context = make_context(run_id=name)
        try:
            outcomes[name] = op.execute(context)  # type: ignore[arg-type]
        except Exception as error:  # recorded for the assertions
            outcomes[name] = error
        outcomes[f"{name}_refusal"] = context["ti"].xcom.get(REFUSAL_XCOM_KEY)
        outcomes[f"{name}_done"] = time.monotonic()

    first = threading.Thread(target=promote, args=("first", trained["w1"]))
    first.start()
    deadline = time.monotonic() + 10
    while ledger._client.get_blob_client("records/churn-retrain01.jsonl").exists() is False or (
        ledger._client.get_blob_client("records/churn-retrain01.jsonl").get_blob_properties().lease.state != "leased"
    ):
        assert time.monotonic() < deadline, "the first promotion never took the lock"
        time.sleep(0.05)
    second_started = time.monotonic()
    second = threading.Thread(target=promote, args=("second", trained["w2"]))
    second.start()
    first.join(60)
    second.join(60)

    assert isinstance(outcomes["first"], dict) and outcomes["first"]["changed"] is True
    # Refused: the task skips itself (an outcome, not a failure) and says why.
    assert isinstance(outcomes["second"], AirflowSkipException), outcomes["second"]
    assert outcomes["second_refusal"]["target"] == "churn-retrain01"
    assert "changed since this run evaluated against it" in outcomes["second_refusal"]["reason"]
    # The second waited for the first's lock (held for the whole delayed PATCH) and only failed once
    # the first was done (a little slack: the first thread records its end after releasing the lock).
    assert outcomes["second_done"] - second_started > 1.0
    assert outcomes["second_done"] + 0.1 >= outcomes["first_done"] > second_started
    assert str(endpoint_model(emulator, "retrain01")).endswith(trained["w1"])
    assert [r.kind for r in ledger.records("churn-retrain01")] == ["baseline", "promotion"]
    assert len(requests_log(emulator, "mgmt.endpoint.patch")) == 1


@pytest.mark.parametrize("on_refusal", ["skip", "fail"])
def test_a_refused_promotion_skips_or_fails_as_asked_and_changes_nothing(emulator, trained, on_refusal):
    ledger = PromotionLedger(container=f"ledger-refusal-{time.monotonic_ns() % 10**8}")
    before = endpoint_model(emulator, "retrain01")
    op = ledgered_patch(
        emulator, ledger, trained["w1"], expected_model_uri="aml://evaluated/against.ilearner", on_refusal=on_refusal
    )
    context = make_context(run_id="refused")
    expected = AirflowSkipException if on_refusal == "skip" else PromotionRefusedError
    with pytest.raises(expected, match="changed since this run evaluated against it"):
        op.execute(context)  # type: ignore[arg-type]
    refusal = context["ti"].xcom.get(REFUSAL_XCOM_KEY)
    assert (refusal is not None) == (on_refusal == "skip")
    assert endpoint_model(emulator, "retrain01") == before
    assert not requests_log(emulator, "mgmt.endpoint.patch")
