"""A storage key the account refuses (Azurite checks shared-key signatures) fails every storage caller
with an error that names the connection and the field holding the key, never the key, and that
Airflow does not retry."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from azureml_retrain.blobs import BlobLocation
from azureml_retrain.config import load_config
from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.factory import build_plan, stage_training_input
from azureml_retrain.ledger import LedgerRecord, PromotionLedger
from azureml_retrain.operators.evaluate import EvaluateModelOperator
from azureml_retrain.sensors.blob_arrival import BlobArrivalSensor
from azureml_retrain.triggers.blob_arrival import BlobArrivalTrigger
from devtools.services import AZURITE_ACCOUNT, AZURITE_KEY, ROOT, LocalPorts, azurite_blob_endpoint
from support.retrain import run_trigger

pytestmark = pytest.mark.integration

WRONG_KEY = base64.b64encode(b"not the account's key, but shaped like one: 64 bytes long......").decode()
CONN_ID = "wasb_wrong_key"
WINDOW = {"window_start": "2026-11-26T00:00:00+00:00", "window_end": "2026-11-27T00:00:00+00:00"}


def connection(shape: str, ports: LocalPorts) -> dict[str, Any]:
    """A wasb connection to the test's Azurite whose key is wrong, in one of the shapes WasbHook reads."""
    endpoint = azurite_blob_endpoint(ports.azurite)
    if shape == "connection_string":
        value = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={WRONG_KEY};"
            f"BlobEndpoint={endpoint};"
        )
        return {"conn_type": "wasb", "extra": {"connection_string": value}}
    if shape == "password":
        return {"conn_type": "wasb", "host": endpoint, "login": AZURITE_ACCOUNT, "password": WRONG_KEY}
    if shape == "shared_access_key":
        return {
            "conn_type": "wasb",
            "host": endpoint,
            "login": AZURITE_ACCOUNT,
            "extra": {"shared_access_key": WRONG_KEY},
        }
    raise AssertionError(shape)


FIELDS = {
    "connection_string": f"the extra connection_string of connection '{CONN_ID}'",
    "password": f"the Password (the storage account key) of connection '{CONN_ID}'",
    "shared_access_key": f"the extra shared_access_key of connection '{CONN_ID}'",
}


@pytest.fixture(params=sorted(FIELDS))
def shape(
    request: pytest.FixtureRequest, azurite: str, local_ports: LocalPorts, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection(request.param, local_ports)))
    return str(request.param)


@pytest.fixture
def connection_string_shape(azurite: str, local_ports: LocalPorts, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection("connection_string", local_ports)))
    return "connection_string"


def assert_names_the_credential(error: BaseException, shape: str, action: str) -> None:
    message = str(error)
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, AirflowFailException)  # Airflow does not retry it
    assert action in message
    assert FIELDS[shape] in message
    # Azurite's code for a wrong shared key (Azure answers AuthenticationFailed).
    assert re.search(r"HTTP 403 (AuthorizationFailure|AuthenticationFailed);", message), message
    for secret in (WRONG_KEY, AZURITE_KEY, "AccountKey", "sig="):
        assert secret not in message
    # Nothing quoting the request is chained to it.
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_the_wrong_key_is_refused_by_azurite(container: str, local_ports: LocalPorts):
    """The premise: Azurite refuses the wrong key (the tests below would prove nothing otherwise)."""
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient(
        azurite_blob_endpoint(local_ports.azurite),
        credential={"account_name": AZURITE_ACCOUNT, "account_key": WRONG_KEY},
    )
    with pytest.raises(HttpResponseError) as refused:
        list(client.get_container_client(container).list_blobs())
    assert refused.value.status_code == 403


def sensor(container: str, **overrides: Any) -> BlobArrivalSensor:
    values: dict[str, Any] = {
        "task_id": "wait_for_data",
        "container_name": container,
        "prefix": "incoming/{window_start:%Y-%m-%d}/",
        "wasb_conn_id": CONN_ID,
        "poke_interval": 0.1,
        "timeout": 30,
        **WINDOW,
    }
    values.update(overrides)
    return BlobArrivalSensor(**values)


def context() -> dict[str, Any]:
    return {"params": {}, "dag_run": None, "logical_date": None}


def test_poke_sensor_fails_at_once_naming_the_connection(container: str, shape: str):
    with pytest.raises(ConfigurationError) as refused:
        sensor(container, deferrable=False).execute(context())
    assert_names_the_credential(refused.value, shape, f"listing {container}/incoming/2026-11-26/")


def test_deferrable_sensor_fails_in_its_first_poke_naming_the_connection(container: str, connection_string_shape: str):
    with pytest.raises(ConfigurationError) as refused:
        sensor(container).execute(context())
    assert_names_the_credential(refused.value, connection_string_shape, "listing")


def test_trigger_ends_with_a_fatal_error_the_sensor_turns_into_a_failure(container: str, shape: str):
    trigger = BlobArrivalTrigger(
        container=container,
        prefix="incoming/2026-11-26/",
        end_time=time.time() + 60,
        poll_interval=0.1,
        wasb_conn_id=CONN_ID,
        finish_task=True,
        **WINDOW,
    )
    event = run_trigger(trigger)
    assert event["status"] == "error" and event["fatal"] is True
    assert FIELDS[shape] in event["message"]
    for secret in (WRONG_KEY, AZURITE_KEY):
        assert secret not in event["message"]
    with pytest.raises(ConfigurationError) as refused:
        sensor(container).execute_complete(context(), event)
    assert_names_the_credential(refused.value, shape, f"listing {container}/incoming/2026-11-26/")


@pytest.mark.parametrize(
    ("operation", "action"),
    [
        (lambda ledger: ledger.head("ws/retrain01"), "reading the ledger of ws/retrain01"),
        (lambda ledger: ledger.decisions("retrain_churn"), "reading the decision log of retrain_churn"),
        (lambda ledger: ledger.note_decision("retrain_churn", {"promote": False}), "writing the decision log"),
        (
            lambda ledger: ledger.append(LedgerRecord("promotion", "ws/retrain01", "m1"), etag=None),
            "writing the ledger of ws/retrain01",
        ),
        (lambda ledger: ledger.lock("ws/retrain01").__enter__(), "taking the lock of ws/retrain01"),
    ],
    ids=["head", "decisions", "note_decision", "append", "lock"],
)
def test_ledger_names_the_connection(
    container: str, connection_string_shape: str, operation: Callable[[PromotionLedger], Any], action: str
):
    with pytest.raises(ConfigurationError) as refused:
        operation(PromotionLedger(CONN_ID, container, lock_timeout=5))
    assert_names_the_credential(refused.value, connection_string_shape, action)


def test_ledger_names_each_shape_of_connection(container: str, shape: str):
    with pytest.raises(ConfigurationError) as refused:
        PromotionLedger(CONN_ID, container).head("ws/retrain01")
    assert_names_the_credential(refused.value, shape, "reading the ledger of ws/retrain01")


def churn_config(container: str) -> Any:
    config = load_config(ROOT / "dags" / "retraining" / "churn.yaml")
    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"wasb_conn_id": CONN_ID}),
            "outputs": config.outputs.model_copy(update={"container": container}),
        }
    )


def test_plan_step_names_the_connection(container: str, shape: str):
    plan_context = {
        "params": {"window": f"{WINDOW['window_start']}/{WINDOW['window_end']}"},
        "dag_run": SimpleNamespace(run_id=f"manual__{uuid.uuid4().hex[:8]}", run_type="manual", run_after=None),
        "logical_date": None,
        "data_interval_start": None,
        "data_interval_end": None,
    }
    with pytest.raises(ConfigurationError) as refused:
        build_plan(churn_config(container), plan_context)
    assert_names_the_credential(refused.value, shape, f"creating container {container}")


def test_staging_the_training_input_names_the_connection(container: str, connection_string_shape: str):
    arrival = {"container": container, "blobs": [{"name": "incoming/a.csv", "etag": "0x1"}]}
    with pytest.raises(ConfigurationError) as refused:
        staged = BlobLocation(container, "staged/input.csv")
        stage_training_input(churn_config(container).data.wasb_conn_id, arrival, staged)
    assert_names_the_credential(refused.value, connection_string_shape, "staging the training input")


def test_evaluation_read_names_the_connection(container: str, connection_string_shape: str):
    op = EvaluateModelOperator(
        task_id="evaluate",
        evaluation_results=f"{container}/evaluation.csv",
        rules={"metric": "AUC", "threshold": 0.5},
        wasb_conn_id=CONN_ID,
    )
    with pytest.raises(ConfigurationError) as refused:
        op.read_evaluation_blob(BlobLocation(container, "evaluation.csv"))
    assert_names_the_credential(refused.value, connection_string_shape, "reading the evaluation results")


def test_bes_job_claims_name_the_connection(container: str, connection_string_shape: str):
    """The claim blob a triggerer-started SubmitBesJob reads and writes beside its first output."""
    from azureml_retrain.bes import Claim, JobClaims
    from azureml_retrain.storage import StorageAccount

    claims = JobClaims(StorageAccount(CONN_ID))
    location = BlobLocation(container, "out/model.ilearner.bes-job.json")
    with pytest.raises(ConfigurationError) as refused:
        claims.read(location)
    assert_names_the_credential(refused.value, connection_string_shape, "reading the BES job claim")
    with pytest.raises(ConfigurationError) as refused:
        claims.write(location, {"claimed_at": 1.0}, replacing=Claim(None, None))
    assert_names_the_credential(refused.value, connection_string_shape, "writing the BES job claim")


def test_no_path_is_left_out():
    """Every module that builds a storage client does it through storage.wasb_hook/wasb_async_hook."""
    sources = Path(ROOT / "plugins" / "azureml_retrain").rglob("*.py")
    building = [p.name for p in sources if re.search(r"\bWasb(Async)?Hook\(", p.read_text()) and p.name != "storage.py"]
    assert building == []
