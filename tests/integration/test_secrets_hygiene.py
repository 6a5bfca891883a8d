"""No secret value reaches an XCom or a log line of the operators, hooks and triggers.

What counts as a secret (collected, not guessed):

* every key and token the emulator holds, from its admin state: endpoint primary/secondary keys,
  the workspace authorization token, ARM service keys, the service principal's client secret, and
  the storage account keys (Azurite's development key, which is the key of ``wasb_default``);
* everything that travelled on the wire during the runs, captured by a spy on
  ``requests.Session.send`` (the transport of our hooks and of azure-identity): bearer values of
  ``Authorization`` headers (endpoint keys, workspace token, the Azure AD access token), the
  ``access_token`` the authority returned, the ``sig=`` of every SAS the operators minted (request
  bodies) and of every SAS the service handed back in BES job results (response bodies),
  ``AccountKey=`` values of connection strings;
* plus the result SAS of the jobs as fetched afterwards with raw HTTP.

Where we look: operator return values and ``xcom_push``-ed values of direct runs, the XCom rows a
``dag.test()`` run wrote to the metadata DB, the text of the exceptions of failure paths, and the logs:
``caplog`` at DEBUG (standard logging: azure-core, azure-identity, msal, urllib3) and ``capfd``
(Airflow's structlog logger, behind ``self.log`` of operators, hooks and triggers, writes to stdout at
Airflow's configured level, INFO as in real runs; the plugin code has no debug-level log calls), and
any task log file under the test ``AIRFLOW_HOME/logs``. In Airflow 3.3 ``dag.test()`` writes no task
log files here (the folder stays empty): its task log lines go to stdout, which ``capfd`` holds.

Why a verbatim search is the honest assertion: Airflow's secrets masker would turn a *registered*
secret into ``***`` in a real task log, which would hide a leak, and in this in-process setting
(like ``airflow dags test``, notes §4e) nothing is masked at all. The first test proves the latter
(a ``mask_secret``-ed canary logged through an operator's logger shows up verbatim in what we
capture), so a secret that any of our code logged — masked in production or not — would be found
here verbatim. The requirement checked is therefore "never log it", not "it gets masked".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
import requests

from azureml_retrain.exceptions import AzureMLServiceError, BesJobFailedError, PromotionVerificationError
from azureml_retrain.operators.evaluate import EvaluateModelOperator
from azureml_retrain.operators.promote import PatchEndpointOperator, UpdateWebServiceDefinitionOperator
from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator
from support.airflow_context import make_context
from support.dags import register_dag
from support.retrain import CHURN_SMOKE_ROWS, ENERGY_SMOKE_ROWS, add_fault, job_fault, run_deferrable, status
from support.secrets import WireSecrets, assert_no_secret, emulator_secrets, result_sas_signatures

pytestmark = pytest.mark.integration


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> WireSecrets:
    secrets = WireSecrets()
    original = requests.Session.send

    def spy(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = original(self, request, **kwargs)
        secrets.record(request, response)
        return response

    monkeypatch.setattr(requests.Session, "send", spy)
    return secrets


def task_log_files(dag_id: str) -> Iterator[Path]:
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    if logs.is_dir():
        yield from (p for p in logs.rglob("*") if p.is_file() and dag_id in str(p))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Callable[[], str]:
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        out, err = capfd.readouterr()
        return "\n".join([caplog.text, out, err])

    return text


def test_capture_sees_what_operators_log_unmasked(logs):
    """The canary: what an operator logs reaches our capture, and nothing is masked in-process."""
    from airflow.sdk.log import mask_secret

    canary = "canary-secret-value-0123456789"
    mask_secret(canary)
    op = SubmitBesJobOperator(task_id="canary", outputs={"output1": "c/m.ilearner"})
    op.log.info("canary %s", canary)
    logging.getLogger("azureml_retrain.hooks.base").info("canary %s", canary)
    assert logs().count(canary) >= 2


def churn_submit(container: str, data: str, task_id: str = "train", **kwargs: Any) -> SubmitBesJobOperator:
    return SubmitBesJobOperator(
        task_id=task_id,
        inputs={"input1": data},
        outputs={"output1": f"{container}/{task_id}/model.ilearner", "output2": f"{container}/{task_id}/eval.csv"},
        azureml_conn_id="azureml_churn_training",
        poll_interval=0.2,
        **kwargs,
    )


def test_direct_runs_keep_secrets_out_of_xcom_and_logs(emulator, upload, container, wire, logs):
    churn = upload("in/churn.csv", dataset="churn", rows=200, window=2, seed=2)
    energy = upload("in/energy.csv", dataset="energy", rows=200, window=2, seed=2)
    web_service_id = emulator.classic_service("predictive")["id"]
    xcoms: list[Any] = []

    def run(op: Any, deferrable_run: bool = False) -> Any:
        context = make_context()
        result = run_deferrable(op, context) if deferrable_run else op.execute(context)
        xcoms.extend([result, context["ti"].xcom])
        return result

    # defer_after=0: the trigger's path (and its logging) however fast the job is.
    trained = run(churn_submit(container, churn, deferrable=True, defer_after=0), deferrable_run=True)
    run(churn_submit(container, churn, task_id="train_cs", deferrable=False, reference_mode="connection_string"))
    run(EvaluateModelOperator(task_id="evaluate", evaluation_results=trained, rules={"metric": "auc"}))
    run(
        PatchEndpointOperator(
            task_id="promote",
            web_service_id=web_service_id,
            endpoint_name="retrain01",
            model=trained,
            smoke_test_rows=CHURN_SMOKE_ROWS,
            verify_poll_interval=0.1,
        )
    )
    energy_trained = run(
        SubmitBesJobOperator(
            task_id="train_energy",
            inputs={"input1": energy},
            outputs={"output1": f"{container}/e/model.ilearner", "output2": f"{container}/e/eval.csv"},
            global_parameters={"Training window": "w2"},
            azureml_conn_id="azureml_energy_training",
            deferrable=False,
            poll_interval=0.2,
        )
    )
    update = UpdateWebServiceDefinitionOperator(
        task_id="update",
        web_service_name="energy-predictive",
        model=energy_trained,
        smoke_test_rows=ENERGY_SMOKE_ROWS,
        poll_interval=0.1,
        export_to=f"{container}/exports",
    )
    run(update, deferrable_run=True)
    wire.add(update.hook.credential.get_token("https://management.azure.com/.default").token)

    # Failure paths: their exception texts are what the task log shows.
    errors: list[str] = []
    add_fault(emulator, "rrs.execute", status(400))
    with pytest.raises(PromotionVerificationError) as smoke:
        PatchEndpointOperator(
            task_id="promote_again",
            web_service_id=web_service_id,
            endpoint_name="retrain01",
            model={"container": container, "blob_name": "train_cs/model.ilearner"},
            smoke_test_rows=CHURN_SMOKE_ROWS,
            verify_poll_interval=0.1,
        ).execute(make_context())
    errors.append(str(smoke.value))
    job_fault(emulator, "fail", details="Error 0018: invalid data", count=1)
    with pytest.raises(BesJobFailedError) as failed:
        churn_submit(container, churn, task_id="train_failing", deferrable=False).execute(make_context())
    errors.append(str(failed.value))

    secrets = emulator_secrets(emulator) | wire.values | result_sas_signatures(emulator)
    assert any(len(s) > 40 for s in wire.values), "the AAD token and SAS signatures were captured"
    assert_no_secret(
        secrets,
        xcom=json.dumps(xcoms, default=str),
        errors="\n".join(errors),
        logs=logs(),
    )


def test_wrong_credentials_errors_do_not_echo_them(emulator, upload, container, wire, logs, monkeypatch):
    churn = upload("in/churn.csv", dataset="churn", rows=200, window=1, seed=2)
    wrong_key = "wrong-endpoint-key-should-not-leak-123"
    endpoint = emulator.classic_endpoint("training")
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_CHURN_TRAINING",
        json.dumps({"conn_type": "azureml_web_service", "host": endpoint["api_location"], "password": wrong_key}),
    )
    wrong_secret = "wrong-client-secret-should-not-leak-456"
    arm = json.loads(os.environ["AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT", json.dumps({**arm, "password": wrong_secret}))

    errors = []
    with pytest.raises(AzureMLServiceError) as unauthorized:
        churn_submit(container, churn, deferrable=False).execute(make_context())
    errors.append(str(unauthorized.value))
    with pytest.raises(AzureMLServiceError) as unauthenticated:
        UpdateWebServiceDefinitionOperator(
            task_id="update", web_service_name="energy-predictive", model=f"{container}/x/model.ilearner"
        ).execute(make_context())
    errors.append(str(unauthenticated.value))
    assert_no_secret(
        emulator_secrets(emulator) | wire.values | {wrong_key, wrong_secret}, errors="\n".join(errors), logs=logs()
    )


def test_dag_test_run_keeps_secrets_out_of_xcom_rows_and_task_logs(emulator, upload, container, airflow_db, wire, logs):
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    data = upload("in/churn.csv", dataset="churn", rows=200, window=2, seed=4)
    dag_id = "secrets_hygiene_chain"
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        train = churn_submit(container, data, deferrable=True, defer_after=0)  # deferred, however fast the job
        evaluate = EvaluateModelOperator(task_id="evaluate", evaluation_results=train.output, rules={"metric": "auc"})
        promote = PatchEndpointOperator(
            task_id="promote",
            web_service_id=emulator.classic_service("predictive")["id"],
            endpoint_name="retrain01",
            model=train.output,
            smoke_test_rows=CHURN_SMOKE_ROWS,
            verify_poll_interval=0.1,
        )
        train >> evaluate >> promote
    register_dag(dag)
    run = dag.test()
    assert run.state == DagRunState.SUCCESS

    with create_session() as session:
        rows = session.scalars(
            select(XComModel.value).where(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id)
        ).all()
    assert len(rows) >= 4  # train: return_value + bes_job_id; evaluate: return_value + decision; promote
    files = {str(p): p.read_text(errors="replace") for p in task_log_files(dag_id)}
    assert_no_secret(
        emulator_secrets(emulator) | wire.values | result_sas_signatures(emulator),
        xcom=json.dumps(rows, default=str),
        logs=logs(),
        log_files="\n".join(files.values()),
    )


def metadata_db_text() -> str:
    """Every row of every table of the metadata DB, as text (XCom, rendered fields, logs, conf ...)."""
    from airflow.settings import engine
    from sqlalchemy import MetaData, select

    metadata = MetaData()
    metadata.reflect(bind=engine)
    parts = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                parts.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(parts)


def test_full_cycle_leaves_no_secret_in_the_metadata_db_or_any_log(
    emulator, blob_service, airflow_db, wire, logs, azurite
):
    """Both shipped retraining DAGs end to end (deferred waits run by dag.test's inline triggerer),
    then every table of the metadata DB, every file under AIRFLOW_HOME/logs, the emulator's log and
    everything captured are searched for every secret in play."""
    from datetime import UTC, datetime, timedelta

    from airflow.utils.state import DagRunState

    from support.retraining import build_retraining, land_window, task_states

    day = datetime(2026, 11, 10, tzinfo=UTC)
    runs = []
    for model in ("churn", "energy"):
        retraining = build_retraining(model)
        land_window(blob_service, retraining, day, dataset=model, window=2)
        run = retraining.dag.test(logical_date=retraining.run_date(day + timedelta(days=1)))
        assert run.state == DagRunState.SUCCESS, task_states(run)
        runs.append(run)

    secrets = emulator_secrets(emulator) | result_sas_signatures(emulator) | wire.values
    assert any(s in wire.values for s in secrets if len(s) > 20), "the runs sent no secret at all"
    places = {"metadata DB": metadata_db_text(), "captured logs": logs()}
    for path in (Path(os.environ["AIRFLOW_HOME"]) / "logs").rglob("*"):
        if path.is_file():
            places[f"log file {path.name}"] = path.read_text(errors="replace")
    emulator_log = emulator.log_path.read_text(errors="replace")
    places["emulator log"] = emulator_log
    # The scan must have read what the runs wrote: XComs (return values, SubmitBesJob's job id and
    # link) and the rendered template fields of the operators.
    for written in ("xcom: ", "bes_job_id", "rendered_task_instance_fields: ", "model.ilearner"):
        assert written in places["metadata DB"], f"the DB scan did not read {written!r}"
    assert_no_secret(secrets, **places)
