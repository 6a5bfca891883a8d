"""PatchEndpointOperator and UpdateWebServiceDefinitionOperator against the emulator + Azurite, and the
whole retraining chain (SubmitBesJob -> EvaluateModel -> promote), directly and through ``dag.test()``.

"Serving" is always checked from the outside: predictions through the service's RRS data plane with
raw HTTP, and the management/ARM plane's view of the model location, before and after.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from typing import Any

import pendulum
import pytest
import requests

from azureml_retrain.exceptions import (
    AzureMLServiceError,
    ConfigurationError,
    EvaluationError,
    PromotionVerificationError,
)
from azureml_retrain.operators.evaluate import DECISION_XCOM_KEY, EvaluateModelOperator
from azureml_retrain.operators.promote import PatchEndpointOperator, UpdateWebServiceDefinitionOperator
from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator
from support.airflow_context import make_context
from support.dags import register_dag
from support.emulator import DataPlane, RunningEmulator, connection_reference
from support.retrain import (
    CHURN_SMOKE_ROWS,
    ENERGY_SMOKE_ROWS,
    add_fault,
    arm_scoring,
    classic_scoring,
    predictions,
    requests_log,
    route_count,
    run_deferrable,
    status,
)
from support.retraining import xcom_value

pytestmark = pytest.mark.integration

RETRAIN01 = "retrain01"


# --- models trained once per module (raw BES), stored in Azurite ------------------------------------


@pytest.fixture(scope="module")
def models(azurite: str, blob_service: Any, emulator_session: RunningEmulator) -> dict[str, str]:
    """``container/blob`` of trained models: churn windows 1 and 2, energy window 2, and junk."""
    container = f"promote-{uuid.uuid4().hex[:12]}"
    blob_service.create_container(container)
    from emulator.datasets import generate_csv

    def train(kind: str, window: int, **parameters: str) -> str:
        data = f"{kind}-w{window}.csv"
        blob_service.get_blob_client(container, data).upload_blob(
            generate_csv(kind, rows=200, window=window, seed=3).encode(), overwrite=True
        )
        svc = (
            emulator_session.classic_endpoint("training")
            if kind == "churn"
            else emulator_session.arm_service("training")
        )
        plane = DataPlane(svc["api_location"], svc["primary_key"])
        model = f"{kind}-w{window}/model.ilearner"
        finished = plane.run(
            {
                "Inputs": {"input1": connection_reference(azurite, f"{container}/{data}")},
                "Outputs": {
                    "output1": connection_reference(azurite, f"{container}/{model}"),
                    "output2": connection_reference(azurite, f"{container}/{kind}-w{window}/evaluation.csv"),
                },
                "GlobalParameters": parameters,
            }
        )
        assert finished["StatusCode"] == "Finished", finished
        return f"{container}/{model}"

    junk = "junk/not-a-model.ilearner"
    blob_service.get_blob_client(container, junk).upload_blob(b"this is not a zip", overwrite=True)
    return {
        "churn1": train("churn", 1),
        "churn2": train("churn", 2),
        "energy2": train("energy", 2, **{"Training window": "w2"}),
        "junk": f"{container}/{junk}",
        "missing": f"{container}/nope/model.ilearner",
    }


def churn_service_id(emulator: RunningEmulator) -> str:
    return str(emulator.classic_service("predictive")["id"])


def patch_op(emulator: RunningEmulator, model: Any, **kwargs: Any) -> PatchEndpointOperator:
    return PatchEndpointOperator(
        task_id=kwargs.pop("task_id", "promote"),
        web_service_id=churn_service_id(emulator),
        endpoint_name=kwargs.pop("endpoint_name", RETRAIN01),
        model=model,
        verify_poll_interval=0.1,
        verify_timeout=timedelta(seconds=10),
        **kwargs,
    )


def update_op(model: Any, **kwargs: Any) -> UpdateWebServiceDefinitionOperator:
    kwargs.setdefault("deferrable", False)
    return UpdateWebServiceDefinitionOperator(
        task_id=kwargs.pop("task_id", "update"),
        web_service_name="energy-predictive",
        model=model,
        poll_interval=0.1,
        **kwargs,
    )


def endpoint_location(emulator: RunningEmulator, name: str = RETRAIN01) -> dict[str, Any]:
    ep = emulator.classic_endpoint("predictive", name)  # only for the management URL; fetch live below
    workspace = emulator.workspace
    url = f"{emulator.url}/workspaces/{workspace['id']}/webservices/{churn_service_id(emulator)}/endpoints/{name}"
    response = requests.get(url, headers={"Authorization": f"Bearer {workspace['authorization_token']}"}, timeout=30)
    assert response.status_code == 200, (ep, response.text)
    return dict(response.json()["Resources"][0]["Location"])


def arm_asset_uri(emulator: RunningEmulator) -> str:
    from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook
    from azureml_retrain.operators.promote import _asset_uri, find_trained_model_asset

    definition = AzureMLResourceManagerHook().get_web_service("energy-predictive")
    return str(_asset_uri(find_trained_model_asset(definition, None)[1]))


# --- PatchEndpointOperator --------------------------------------------------------------------------


def test_patch_endpoint_swaps_the_model_and_smoke_tests_it(emulator, models):
    scoring = classic_scoring(emulator)
    before = predictions(scoring, CHURN_SMOKE_ROWS)
    result = patch_op(emulator, models["churn2"], smoke_test_rows=CHURN_SMOKE_ROWS).execute(make_context())

    assert result["changed"] is True
    assert result["previous"]["base_location"] == "aml://trainedmodel/"
    assert result["current"]["relative_location"] == models["churn2"]
    assert result["smoke_test"]["predictions"] == predictions(scoring, CHURN_SMOKE_ROWS) != before
    assert endpoint_location(emulator)["RelativeLocation"] == models["churn2"]
    assert "sig=" not in json.dumps(result)
    # The default endpoint keeps the experiment's model.
    assert predictions(classic_scoring(emulator, "default"), CHURN_SMOKE_ROWS) == before


def test_patch_endpoint_twice_with_the_same_model_patches_once(emulator, models):
    first = patch_op(emulator, models["churn2"]).execute(make_context())
    second = patch_op(emulator, models["churn2"]).execute(make_context())
    assert (first["changed"], second["changed"]) == (True, False)
    assert second["previous"] == second["current"] == first["current"]
    assert route_count(emulator, "mgmt.endpoint.patch") == 1


def test_patch_default_endpoint_is_refused_before_any_call(emulator, models):
    emulator.admin("DELETE", "requests")
    with pytest.raises(ConfigurationError, match="'default' endpoint"):
        patch_op(emulator, models["churn2"], endpoint_name="default").execute(make_context())
    assert [r for r in requests_log(emulator) if not r["route"].startswith("admin.")] == []

    # What the service itself says to a raw PATCH of the default endpoint.
    workspace = emulator.workspace
    response = requests.patch(
        f"{emulator.url}/workspaces/{workspace['id']}/webservices/{churn_service_id(emulator)}/endpoints/default",
        json={"Resources": [{"Name": "Customer Churn [trained model]", "Location": {}}]},
        headers={"Authorization": f"Bearer {workspace['authorization_token']}"},
        timeout=30,
    )
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["details"][0]["code"]) == (
        400,
        "BadArgument",
        "InvalidWebServiceResources",
    )


@pytest.mark.parametrize(
    ("model", "code"), [("junk", "IncompatibleModel"), ("energy2", "IncompatibleModel"), ("missing", "BlobNotFound")]
)
def test_patch_with_an_unusable_model_fails_and_the_old_model_keeps_serving(emulator, models, model, code):
    scoring = classic_scoring(emulator)
    before_location, before = endpoint_location(emulator), predictions(scoring, CHURN_SMOKE_ROWS)
    with pytest.raises(AzureMLServiceError) as error:
        patch_op(emulator, models[model], smoke_test_rows=CHURN_SMOKE_ROWS).execute(make_context())
    assert error.value.status == 400
    assert code in error.value.detail_codes
    assert endpoint_location(emulator) == before_location
    assert predictions(scoring, CHURN_SMOKE_ROWS) == before


def test_patch_is_retried_on_503_and_429(emulator, models):
    add_fault(emulator, "mgmt.endpoint.patch", status(503), status(429, retry_after=0))
    add_fault(emulator, "mgmt.endpoint.get", None, status(503))  # the verification read-back
    result = patch_op(emulator, models["churn1"]).execute(make_context())
    assert result["changed"] is True
    assert [r["status"] for r in requests_log(emulator, "mgmt.endpoint.patch")] == [503, 429, 200]
    assert endpoint_location(emulator)["RelativeLocation"] == models["churn1"]


def test_patch_with_a_wrong_workspace_token_is_a_clear_401(emulator, models, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_CLASSIC_MANAGEMENT_DEFAULT",
        json.dumps(
            {
                "conn_type": "azureml_classic_management",
                "host": emulator.url,
                "schema": emulator.workspace["id"],
                "password": "not-the-workspace-token",
            }
        ),
    )
    with pytest.raises(AzureMLServiceError) as error:
        patch_op(emulator, models["churn1"]).execute(make_context())
    assert (error.value.status, error.value.code) == (401, "Unauthorized")
    assert "ManagementRequestUnauthorized" in error.value.detail_codes
    assert "of connection 'azureml_classic_management_default'" in str(error.value)  # where to fix it
    assert "not-the-workspace-token" not in str(error.value)
    assert route_count(emulator, "mgmt.endpoint.patch") == 0


def test_smoke_test_failure_puts_the_previous_blob_model_back(emulator, models):
    scoring = classic_scoring(emulator)
    patch_op(emulator, models["churn1"]).execute(make_context())
    serving_churn1 = predictions(scoring, CHURN_SMOKE_ROWS)

    add_fault(emulator, "rrs.execute", status(400))
    with pytest.raises(PromotionVerificationError, match=rf"previous model http://\S+/{models['churn1']} was put back"):
        patch_op(emulator, models["churn2"], smoke_test_rows=CHURN_SMOKE_ROWS).execute(make_context())
    assert endpoint_location(emulator)["RelativeLocation"] == models["churn1"]
    assert predictions(scoring, CHURN_SMOKE_ROWS) == serving_churn1
    assert route_count(emulator, "mgmt.endpoint.patch") == 3  # churn1, churn2, churn1 again


def test_smoke_test_failure_puts_the_seed_model_back(emulator, models):
    scoring = classic_scoring(emulator)
    before_location, before = endpoint_location(emulator), predictions(scoring, CHURN_SMOKE_ROWS)
    assert before_location["BaseLocation"] == "aml://trainedmodel/"

    add_fault(emulator, "rrs.execute", status(400))
    with pytest.raises(PromotionVerificationError, match="was put back"):
        patch_op(emulator, models["churn2"], smoke_test_rows=CHURN_SMOKE_ROWS).execute(make_context())
    assert endpoint_location(emulator) == before_location
    assert predictions(scoring, CHURN_SMOKE_ROWS) == before


# --- UpdateWebServiceDefinitionOperator -------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True])
def test_update_definition_swaps_the_model(emulator, models, container, deferrable):
    emulator.admin("PATCH", "settings", json={"operation_min_duration_seconds": 0.3})
    scoring = arm_scoring(emulator)
    before = predictions(scoring, ENERGY_SMOKE_ROWS)
    result = run_deferrable(
        update_op(
            models["energy2"],
            deferrable=deferrable,
            smoke_test_rows=ENERGY_SMOKE_ROWS,
            export_to=f"{container}/exports",
        )
    )
    assert result["changed"] is True
    assert result["previous_uri"].startswith("aml://trainedmodel/")
    assert result["current_uri"].endswith(f"/devstoreaccount1/{models['energy2']}")
    assert result["operation"]["status"] == "Succeeded"
    assert arm_asset_uri(emulator) == result["current_uri"]
    assert result["smoke_test"]["predictions"] == predictions(scoring, ENERGY_SMOKE_ROWS) != before
    assert set(result["exported"]) == {"before", "after"}
    assert route_count(emulator, "arm.webservice.patch") == 1


def test_update_definition_twice_with_the_same_model_patches_once(emulator, models):
    first = update_op(models["energy2"]).execute(make_context())
    second = update_op(models["energy2"]).execute(make_context())
    assert (first["changed"], second["changed"]) == (True, False)
    assert route_count(emulator, "arm.webservice.patch") == 1


@pytest.mark.parametrize("deferrable", [False, True])
@pytest.mark.parametrize(("model", "code"), [("junk", "IncompatibleModel"), ("missing", "BlobNotFound")])
def test_update_definition_failed_operation_keeps_the_old_model(emulator, models, deferrable, model, code):
    scoring = arm_scoring(emulator)
    before_uri, before = arm_asset_uri(emulator), predictions(scoring, ENERGY_SMOKE_ROWS)
    with pytest.raises(PromotionVerificationError, match=f"ended Failed: {code}"):
        run_deferrable(update_op(models[model], deferrable=deferrable, smoke_test_rows=ENERGY_SMOKE_ROWS))
    assert route_count(emulator, "rrs.execute") == 1  # only ours above: no smoke test ran
    assert arm_asset_uri(emulator) == before_uri
    assert predictions(scoring, ENERGY_SMOKE_ROWS) == before


def test_update_definition_retries_throttling_and_unavailability(emulator, models):
    add_fault(emulator, "arm.webservice.patch", status(429, retry_after=1))
    add_fault(emulator, "arm.asyncop.get", status(503))
    add_fault(emulator, "arm.webservice.get", None, status(500))
    result = run_deferrable(update_op(models["energy2"], deferrable=True))
    assert result["operation"]["status"] == "Succeeded"
    assert [r["status"] for r in requests_log(emulator, "arm.webservice.patch")] == [429, 200]


def test_update_definition_smoke_failure_puts_the_previous_uri_back(emulator, models):
    scoring = arm_scoring(emulator)
    before_uri, before = arm_asset_uri(emulator), predictions(scoring, ENERGY_SMOKE_ROWS)
    add_fault(emulator, "rrs.execute", status(400))
    with pytest.raises(PromotionVerificationError, match="was put back"):
        update_op(models["energy2"], smoke_test_rows=ENERGY_SMOKE_ROWS).execute(make_context())
    assert arm_asset_uri(emulator) == before_uri
    assert predictions(scoring, ENERGY_SMOKE_ROWS) == before
    assert route_count(emulator, "arm.webservice.patch") == 2


def test_update_definition_with_a_wrong_client_secret_is_a_clear_error(emulator, models, monkeypatch):
    current = json.loads(os.environ["AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT"])
    current["password"] = "wrong-client-secret-value"
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT", json.dumps(current))
    with pytest.raises(AzureMLServiceError, match="AuthenticationFailed") as error:
        update_op(models["energy2"]).execute(make_context())
    assert "wrong-client-secret-value" not in str(error.value)
    assert route_count(emulator, "arm.webservice.get") == 0


# --- the chain ---------------------------------------------------------------------------------------


def test_classic_chain_train_evaluate_patch(emulator, upload, container):
    data = upload("in/churn.csv", dataset="churn", rows=200, window=2, seed=5)
    scoring = classic_scoring(emulator)
    before = predictions(scoring, CHURN_SMOKE_ROWS)

    trained = SubmitBesJobOperator(
        task_id="train",
        inputs={"input1": data},
        outputs={"output1": f"{container}/run/model.ilearner", "output2": f"{container}/run/evaluation.csv"},
        azureml_conn_id="azureml_churn_training",
        deferrable=False,
        poll_interval=0.2,
    ).execute(make_context())
    decision = EvaluateModelOperator(
        task_id="evaluate", evaluation_results=trained, rules={"metric": "AUC", "threshold": 0.6}
    ).execute(make_context())
    assert decision["promote"] is True, decision["reason"]
    assert decision["evaluation_blob"] == f"{container}/run/evaluation.csv"
    promoted = patch_op(emulator, trained, smoke_test_rows=CHURN_SMOKE_ROWS).execute(make_context())

    assert promoted["current"]["relative_location"] == f"{container}/run/model.ilearner"
    assert predictions(scoring, CHURN_SMOKE_ROWS) == promoted["smoke_test"]["predictions"] != before


def test_evaluate_unknown_metric_on_a_real_evaluation_lists_the_available_ones(emulator, models):
    container, _ = models["churn2"].split("/", 1)
    op = EvaluateModelOperator(
        task_id="evaluate",
        evaluation_results=f"{container}/churn-w2/evaluation.csv",
        rules={"metric": "Coefficient of Determination", "threshold": 0.5},
    )
    with pytest.raises(EvaluationError, match="available columns: Accuracy, Precision, Recall, F-Score, AUC"):
        op.execute(make_context())


def test_arm_chain_train_evaluate_update_deferrable(emulator, upload, container):
    data = upload("in/energy.csv", dataset="energy", rows=200, window=2, seed=5)
    scoring = arm_scoring(emulator)
    before = predictions(scoring, ENERGY_SMOKE_ROWS)

    trained = run_deferrable(
        SubmitBesJobOperator(
            task_id="train",
            inputs={"input1": data},
            outputs={"output1": f"{container}/run/model.ilearner", "output2": f"{container}/run/evaluation.csv"},
            global_parameters={"Training window": "2026-W47"},
            azureml_conn_id="azureml_energy_training",
            deferrable=True,
            defer_after=0,  # the trigger's path, however fast the job is
            poll_interval=0.2,
        )
    )
    decision = EvaluateModelOperator(
        task_id="evaluate", evaluation_results=trained, rules={"metric": "r2", "threshold": 0.5}
    ).execute(make_context())
    assert decision["promote"] is True, decision["reason"]
    assert decision["task"] == "regression"
    promoted = run_deferrable(update_op(trained, deferrable=True, smoke_test_rows=ENERGY_SMOKE_ROWS))

    assert promoted["changed"] is True
    assert predictions(scoring, ENERGY_SMOKE_ROWS) == promoted["smoke_test"]["predictions"] != before


def test_dag_test_deferrable_chain(emulator, upload, container, airflow_db):
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    data = upload("in/churn.csv", dataset="churn", rows=200, window=2, seed=9)
    scoring = classic_scoring(emulator)
    before = predictions(scoring, CHURN_SMOKE_ROWS)
    dag_id = "integration_retrain_chain"
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        train = SubmitBesJobOperator(
            task_id="train",
            inputs={"input1": data},
            outputs={"output1": f"{container}/dag/model.ilearner", "output2": f"{container}/dag/evaluation.csv"},
            azureml_conn_id="azureml_churn_training",
            deferrable=True,
            defer_after=0,  # deferred, however fast the job is
            poll_interval=0.2,
        )
        evaluate = EvaluateModelOperator(
            task_id="evaluate",
            evaluation_results=train.output,
            rules={"metric": "auc", "threshold": 0.6},
            fail_on_reject=True,
        )
        promote = PatchEndpointOperator(
            task_id="promote",
            web_service_id=churn_service_id(emulator),
            endpoint_name=RETRAIN01,
            model=train.output,
            smoke_test_rows=CHURN_SMOKE_ROWS,
            verify_poll_interval=0.1,
        )
        train >> evaluate >> promote

    register_dag(dag)
    run = dag.test()
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}
        rows = session.execute(
            select(XComModel.task_id, XComModel.key, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id
            )
        ).all()
    xcoms = {(task_id, key): xcom_value(value) for task_id, key, value in rows}
    assert states == dict.fromkeys(("train", "evaluate", "promote"), TaskInstanceState.SUCCESS)
    trained = xcoms[("train", "return_value")]
    assert trained["status"] == "Finished"
    assert xcoms[("train", "bes_job_id")] == trained["job_id"]
    assert xcoms[("evaluate", DECISION_XCOM_KEY)]["promote"] is True
    promoted = xcoms[("promote", "return_value")]
    assert promoted["current"]["relative_location"] == f"{container}/dag/model.ilearner"
    assert predictions(scoring, CHURN_SMOKE_ROWS) == promoted["smoke_test"]["predictions"] != before
    assert route_count(emulator, "bes.submit") == 1


def test_a_retry_after_the_first_promotion_of_a_target_landed_unrecorded_records_it(emulator, models, blob_service):
    """The try that PATCHed died before writing the (still empty) ledger; its retry finds the
    endpoint already serving the model and records the promotion instead of losing it."""
    from azureml_retrain.ledger import PromotionLedger

    ledger_container = f"ledger-{uuid.uuid4().hex[:10]}"
    common = {"ledger_container": ledger_container, "target_name": "churn-retrain01"}
    patch_op(emulator, models["churn2"]).execute(make_context())  # the dead try: PATCH, no ledger
    assert PromotionLedger("wasb_default", ledger_container).records("churn-retrain01") == []

    retry = patch_op(emulator, models["churn2"], **common).execute(make_context(run_id="manual__1"))

    assert retry["changed"] is False
    (record,) = PromotionLedger("wasb_default", ledger_container).records("churn-retrain01")
    assert (record.kind, record.model_uri, record.run_id) == ("promotion", retry["model_uri"], "manual__1")
    assert record.reason == "found already serving; recorded late"
    assert route_count(emulator, "mgmt.endpoint.patch") == 1
