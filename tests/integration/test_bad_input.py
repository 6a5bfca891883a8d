"""Bad-input catalogue: each wrong input fails with a clear error that names the field, blob or
column, and where a service is involved nothing changed remotely (request log, jobs and the
serving model are compared before and after).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowSensorTimeout

from azureml_retrain.config import load_config, parse_config
from azureml_retrain.evaluation import decide, parse_evaluation_csv, parse_rules
from azureml_retrain.exceptions import (
    AzureMLServiceError,
    BesJobFailedError,
    ConfigurationError,
    EvaluationError,
)
from azureml_retrain.hooks.classic_management import AzureMLClassicManagementHook
from azureml_retrain.operators.evaluate import EvaluateModelOperator
from azureml_retrain.operators.promote import (
    PatchEndpointOperator,
    UpdateWebServiceDefinitionOperator,
    find_trained_model_asset,
)
from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator
from azureml_retrain.sensors.blob_arrival import BlobArrivalSensor
from devtools.services import ROOT
from support.airflow_api import api_client
from support.airflow_context import make_context
from support.emulator import RunningEmulator
from support.retrain import jobs, requests_log, state
from support.retraining import build_retraining

pytestmark = pytest.mark.integration

CHURN_CONFIG = ROOT / "dags" / "retraining" / "churn.yaml"
EVAL_HEADER = "Accuracy,Precision,Recall,F-Score,AUC,Average Log Loss,Training Log Loss"
EVAL_ROW = "0.81,0.78,0.74,0.76,0.88,0.41,0.22"
RULES = parse_rules({"metric": "AUC", "threshold": 0.7})


# --- helpers --------------------------------------------------------------------------------------------


def base_config() -> dict[str, Any]:
    return dict(yaml.safe_load(CHURN_CONFIG.read_text()))


def mutated(path: str, value: Any = ..., *, delete: bool = False) -> dict[str, Any]:
    """The churn config with one field (dotted path; list items by index) replaced or removed."""
    config = copy.deepcopy(base_config())
    *parents, last = path.split(".")
    node: Any = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if delete:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return config


def remote_snapshot(emulator: RunningEmulator) -> dict[str, Any]:
    """What a failed call must not have changed: jobs, serving models, mutating requests."""
    current = state(emulator)
    endpoints = {
        (s["id"], e["name"]): e["model_id"]
        for w in current["workspaces"]
        for s in w["web_services"]
        for e in s["endpoints"]
    }
    arm = {s["name"]: (s["model_id"], s["model_uri"]) for s in current["arm_web_services"]}
    mutating = [
        (r["route"], r["method"], r["status"])
        for r in requests_log(emulator)
        if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
        and not str(r["route"] or "").startswith(("admin.", "authority."))
    ]
    return {"jobs": current["jobs"], "endpoints": endpoints, "arm": arm, "mutating": mutating}


def evaluation(text: str | bytes, source: str = "evals/run1/evaluation.csv") -> dict[str, Any]:
    return decide(parse_evaluation_csv(text, source), RULES, None)


def churn_training(container: str, data: str, **kwargs: Any) -> SubmitBesJobOperator:
    kwargs.setdefault(
        "outputs", {"output1": f"{container}/out/model.ilearner", "output2": f"{container}/out/evaluation.csv"}
    )
    return SubmitBesJobOperator(
        task_id="train",
        inputs={"input1": data},
        azureml_conn_id="azureml_churn_training",
        deferrable=False,
        poll_interval=0.2,
        max_poll_interval=0.5,
        **kwargs,
    )


# --- config files ---------------------------------------------------------------------------------------

CONFIG_CASES = [
    pytest.param(mutated("training", delete=True), r"churn\.yaml: training: Field required", id="missing-training"),
    pytest.param(
        mutated("data.container", delete=True), r"churn\.yaml: data\.container: Field required", id="missing-container"
    ),
    pytest.param(mutated("retries", "many"), r"churn\.yaml: retries: .*integer", id="wrong-type-retries"),
    pytest.param(mutated("schedule", "every day"), r"churn\.yaml: schedule: 'every day' is not a cron", id="bad-cron"),
    pytest.param(
        {**base_config(), "trainnig": {}},
        r"churn\.yaml: trainnig: not a field of a retraining config; did you mean 'training'\?",
        id="typo-field",
    ),
    pytest.param(mutated("targets", []), r"churn\.yaml: targets: .*at least 1", id="no-targets"),
    pytest.param(
        mutated("data.container", "Training_Data"),
        r"churn\.yaml: data\.container: must be a blob container",
        id="bad-container",
    ),
    pytest.param(
        mutated("evaluation.metric", "precision_at_k"),
        r"churn\.yaml: evaluation\.metric: .*unknown metric 'precision_at_k'",
        id="unknown-metric",
    ),
    pytest.param(
        mutated("targets.0.endpoint_name", "default"),
        r"churn\.yaml: targets\.0\..*endpoint_name: the 'default' endpoint cannot be patched",
        id="default-endpoint-target",
    ),
    pytest.param(
        mutated("training.job_timeout_minutes", -5),
        r"churn\.yaml: training\.job_timeout_minutes: .*greater than 0",
        id="negative-timeout",
    ),
    pytest.param(["not", "a", "mapping"], r"churn\.yaml: expected a mapping", id="top-level-list"),
    # Found at load time, not after a paid job or a wait (each names the file, the field and the fix).
    pytest.param(
        mutated("evaluation.threshold", 1.5),
        r"churn\.yaml: evaluation\.threshold: 1\.5 is out of range for AUC, whose values are \[0, 1\]: a threshold",
        id="unreachable-threshold",
    ),
    pytest.param(
        mutated("schedule", "0 2 30 2 *"),
        r"churn\.yaml: schedule: '0 2 30 2 \*' never fires within a year \(no such date\); check the day",
        id="schedule-that-never-fires",
    ),
    pytest.param(
        mutated("schedule", "0 0 29 2 *"),
        r"churn\.yaml: schedule: '0 0 29 2 \*' never fires within a year",
        id="schedule-once-in-four-years",
    ),
    pytest.param(
        mutated("timezone", "Europe/Pariss"),
        r"churn\.yaml: timezone: 'Europe/Pariss' is not an IANA time zone name; did you mean 'Europe/Paris'\?",
        id="misspelt-timezone",
    ),
    pytest.param(
        mutated("ledger_container", "Model_Ledger"),
        r"churn\.yaml: ledger_container: must be a blob container name: 3-63 lowercase",
        id="bad-ledger-container",
    ),
    pytest.param(
        mutated("outputs.container", "my--models"),
        r"churn\.yaml: outputs\.container: must be a blob container name",
        id="double-hyphen-container",
    ),
    pytest.param(
        mutated("evaluation.guards", [{"metric": "gini", "min": 0.1}]),
        r"churn\.yaml: evaluation\.guards\.0\.metric: unknown metric 'gini'\. Available: binary",
        id="unknown-guard-metric",
    ),
    pytest.param(
        mutated("evaluation.guards", [{"metric": "rmse", "max": 2}]),
        r"churn\.yaml: evaluation\.guards: guard 0 \('Root Mean Squared Error'\) is a regression metric, but the "
        r"rules judge a binary model \('AUC'\)",
        id="guard-of-another-model-kind",
    ),
    pytest.param(
        mutated("evaluation.guards", [{"metric": "Accuracy", "min": 0.9, "max": 0.6}]),
        r"churn\.yaml: evaluation\.guards\.0: min 0\.9 is greater than max 0\.6 for 'Accuracy'",
        id="guard-min-above-max",
    ),
    pytest.param(
        mutated("evaluation.guards", [{"metric": "Accuracy"}]),
        r"churn\.yaml: evaluation\.guards\.0: give 'min' and/or 'max' for 'Accuracy'",
        id="guard-without-bounds",
    ),
    pytest.param(
        mutated("evaluation.guards", [{"metric": "Accuracy", "min": 60}]),
        r"churn\.yaml: evaluation\.guards\.0: 60 is out of range for Accuracy, whose values are \[0, 1\]",
        id="guard-in-percent",
    ),
    pytest.param(
        mutated("evaluation.guards", {"metric": "Accuracy", "min": 0.6}),
        r"churn\.yaml: evaluation\.guards: Input should be a valid list",
        id="guard-not-a-list",
    ),
    pytest.param(
        mutated("evaluation", {"metric": "rmse", "threshold": -1}),
        r"churn\.yaml: evaluation\.threshold: -1 is out of range for Root Mean Squared Error, whose values are >= 0",
        id="negative-error-threshold",
    ),
    pytest.param(
        mutated("evaluation", {"metric": "r2", "threshold": 1.2}),
        r"churn\.yaml: evaluation\.threshold: 1\.2 is out of range for Coefficient of Determination, whose values",
        id="r2-above-one",
    ),
    pytest.param(
        mutated("evaluation.threshold", True),
        r"churn\.yaml: evaluation\.threshold: expected a number, got True",
        id="boolean-threshold",
    ),
    pytest.param(
        mutated("data.prefix", "churn/{window_day:%Y-%m-%d}/"),
        r"churn\.yaml: data\.prefix: unknown placeholder \{window_day\} in .*only \{window_start\} and \{window_end\}",
        id="unknown-prefix-placeholder",
    ),
    pytest.param(
        mutated("data.marker", "_SUCCESS_{run_id}"),
        r"churn\.yaml: data\.marker: unknown placeholder \{run_id\}",
        id="unknown-marker-placeholder",
    ),
    pytest.param(
        mutated("data.contaner", "training-data"),
        r"churn\.yaml: data\.contaner: not a field of 'data'; did you mean 'container'\?",
        id="misspelt-nested-field",
    ),
    pytest.param(
        mutated("approval", {"when": {"targets": ["churn-retrain9"]}}),
        r"churn\.yaml: .*approval\.when\.targets: \['churn-retrain9'\] are not targets of this config; its targets",
        id="approval-unknown-target",
    ),
    pytest.param(
        mutated("approval", {"when": {"improvement_below": 0.01}, "on_timeout": "wait"}),
        r"churn\.yaml: approval\.on_timeout: .*'keep' or 'promote'",
        id="approval-bad-on-timeout",
    ),
    pytest.param(
        mutated("approval", {"when": {}}),
        r"churn\.yaml: approval\.when: .*give at least one of improvement_below, guard_margin or targets",
        id="approval-without-rules",
    ),
    pytest.param(
        mutated("max_active_runs", 0), r"churn\.yaml: max_active_runs: Input should be greater", id="no-active-runs"
    ),
    pytest.param(
        mutated("start_date", "yesterday"), r"churn\.yaml: start_date: Input should be a valid datetime", id="bad-date"
    ),
]


@pytest.mark.parametrize(("data", "message"), CONFIG_CASES)
def test_config_errors_name_the_file_and_field(data: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_config(data, "churn.yaml")


def test_config_that_is_not_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: churn\ntraining: [unclosed\n")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml: not valid YAML"):
        load_config(path)


def test_a_config_named_otherwise_than_its_model_says_which_to_rename(tmp_path: Path) -> None:
    path = tmp_path / "churn_eu.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    with pytest.raises(ConfigurationError, match=r"churn_eu\.yaml: model: 'churn' differs from the file's name"):
        load_config(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 1.5), ("on_missing_champion_metric", "ignore"), ("guards", [{"metric": "mae", "max": 1}])],
)
def test_the_trigger_forms_rules_are_checked_by_the_configs_schema(field: str, value: Any) -> None:
    """One schema: a rules override from the trigger form fails with the same message as the config."""
    rules = {"metric": "AUC", field: value}
    with pytest.raises(ConfigurationError) as in_config:
        parse_config(mutated("evaluation", rules), "churn.yaml")
    with pytest.raises(ConfigurationError) as in_override:
        parse_rules(rules)
    assert str(in_config.value).removeprefix("churn.yaml: evaluation.") == str(in_override.value).removeprefix("rules.")


def test_unknown_metric_in_rules_names_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"rules\.metric: unknown metric 'accuracy_top5'"):
        parse_rules({"metric": "accuracy_top5"})


# --- evaluation CSV -------------------------------------------------------------------------------------

EVALUATION_CASES = [
    pytest.param("", r"evaluation\.csv: the file is empty", id="empty"),
    pytest.param("\n \n", r"evaluation\.csv: the file is empty", id="blank-lines"),
    pytest.param(EVAL_HEADER + "\n", r"evaluation\.csv: header only, no data row", id="header-only"),
    pytest.param(
        EVAL_HEADER + "\n0.8,0.7\n", r"evaluation\.csv: data row 0 has 2 fields but the header has 7", id="short-row"
    ),
    pytest.param(
        "Scored Labels,Scored Probabilities\nChurner,0.9\n",
        r"evaluation\.csv: not an Evaluate Model CSV",
        id="scores-not-metrics",
    ),
    pytest.param(
        EVAL_HEADER + "\n0.81,0.78,0.74,0.76,NaN,0.41,0.22\n", r"column 'AUC' \(row 0\) is 'NaN'", id="nan-auc"
    ),
    pytest.param(
        EVAL_HEADER + "\n0.81,0.78,0.74,0.76,Infinity,0.41,0.22\n",
        r"column 'AUC' \(row 0\) is 'Infinity'",
        id="infinity-auc",
    ),
    pytest.param(
        EVAL_HEADER + "\n0.81,0.78,0.74,0.76,n/a,0.41,0.22\n",
        r"column 'AUC' \(row 0\) holds 'n/a', which is not a number",
        id="text-auc",
    ),
    pytest.param(
        "Mean Absolute Error,Root Mean Squared Error\n1.2,1.5\n",
        r"evaluation\.csv: rules\.metric 'AUC' is not a column of this regression evaluation",
        id="regression-csv-judged-on-auc",
    ),
    pytest.param(b"\xff\xfe\x00A\x00U\x00C", r"evaluation\.csv: not a UTF-8 text file", id="not-utf8"),
]


@pytest.mark.parametrize(("text", "message"), EVALUATION_CASES)
def test_evaluation_csv_errors_name_the_blob_and_column(text: str | bytes, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        evaluation(text)


def test_evaluation_operator_names_the_blob_with_a_nan_metric(azurite: str, upload: Any) -> None:
    blob = upload("run1/evaluation.csv", f"{EVAL_HEADER}\n0.81,0.78,0.74,0.76,NaN,0.41,0.22\n".encode())
    op = EvaluateModelOperator(task_id="evaluate", evaluation_results=blob, rules={"metric": "AUC", "threshold": 0.7})
    with pytest.raises(EvaluationError, match=rf"{blob}: column 'AUC' \(row 0\) is 'NaN'"):
        op.execute(make_context())


def test_evaluation_operator_refuses_a_model_blob_as_the_evaluation(azurite: str) -> None:
    op = EvaluateModelOperator(task_id="evaluate", evaluation_results="c/out/model.ilearner", rules={"metric": "AUC"})
    with pytest.raises(ConfigurationError, match=r"evaluation_results: c/out/model\.ilearner is a trained model"):
        op.execute(make_context())


# --- blob paths with the wrong extension -------------------------------------------------------------------


def test_training_input_with_a_wrong_extension(emulator: RunningEmulator, container: str, upload: Any) -> None:
    data = upload("in/churn.parquet", b"PAR1")
    before = remote_snapshot(emulator)
    with pytest.raises(ConfigurationError, match=r"inputs\['input1'\]: .*churn\.parquet must end with one of \.csv"):
        churn_training(container, data).execute(make_context())
    assert remote_snapshot(emulator) == before


def test_model_output_with_a_wrong_extension(emulator: RunningEmulator, container: str, upload: Any) -> None:
    data = upload("in/churn.csv", dataset="churn", rows=120, window=1, seed=1)
    before = remote_snapshot(emulator)
    outputs = {"output1": f"{container}/out/model.pkl", "output2": f"{container}/out/evaluation.csv"}
    with pytest.raises(ConfigurationError, match=r"outputs\['output1'\]: .*model\.pkl must end with one of"):
        churn_training(container, data, outputs=outputs).execute(make_context())
    assert remote_snapshot(emulator) == before


def test_promoting_a_blob_that_is_not_a_model(emulator: RunningEmulator, container: str) -> None:
    before = remote_snapshot(emulator)
    service = emulator.classic_service("predictive")["id"]
    op = PatchEndpointOperator(
        task_id="promote", web_service_id=service, endpoint_name="retrain01", model=f"{container}/out/evaluation.csv"
    )
    with pytest.raises(ConfigurationError, match=r"model: .*evaluation\.csv is not a trained model \(\.ilearner\)"):
        op.execute(make_context())
    assert remote_snapshot(emulator) == before


# --- promotion targets ----------------------------------------------------------------------------------------


def test_trained_model_name_that_does_not_exist(emulator: RunningEmulator, container: str) -> None:
    service = emulator.classic_service("predictive")["id"]
    before = remote_snapshot(emulator)
    op = PatchEndpointOperator(
        task_id="promote",
        web_service_id=service,
        endpoint_name="retrain01",
        model=f"{container}/out/model.ilearner",
        trained_model_name="Customer Churn [trained modle]",
    )
    with pytest.raises(
        ConfigurationError,
        match=r"trained_model_name: 'Customer Churn \[trained modle\]' is not an updatable resource .*"
        r"'Customer Churn \[trained model\]'",
    ):
        op.execute(make_context())
    assert remote_snapshot(emulator) == before


def test_patching_the_default_endpoint_is_refused_before_any_call(emulator: RunningEmulator, container: str) -> None:
    service = emulator.classic_service("predictive")["id"]
    before = remote_snapshot(emulator)
    op = PatchEndpointOperator(
        task_id="promote", web_service_id=service, endpoint_name="default", model=f"{container}/out/model.ilearner"
    )
    with pytest.raises(ConfigurationError, match=r"endpoint_name: the 'default' endpoint .* cannot be replaced"):
        op.execute(make_context())
    with pytest.raises(ConfigurationError, match=r"endpoint_name: the 'default' endpoint .* cannot be patched"):
        AzureMLClassicManagementHook().patch_endpoint_resources(service, "default", [])
    assert remote_snapshot(emulator) == before
    assert requests_log(emulator, "mgmt.endpoint.patch") == []


def test_arm_definition_without_a_trained_model_asset() -> None:
    definition = {
        "properties": {
            "assets": {
                "exp": {"name": "Energy Efficiency", "type": "Module", "locationInfo": {"uri": "aml://x"}},
                "asset2": {"name": "Some dataset", "type": "Resource", "locationInfo": {"uri": "https://a/c/d.csv"}},
            }
        }
    }
    with pytest.raises(
        ConfigurationError,
        match=r"trained_model_name: the definition has no matching trained-model asset.*Some dataset",
    ):
        find_trained_model_asset(definition, None)


def test_arm_service_with_no_asset_by_that_name(emulator: RunningEmulator, container: str) -> None:
    before = remote_snapshot(emulator)
    op = UpdateWebServiceDefinitionOperator(
        task_id="update",
        web_service_name="energy-predictive",
        model=f"{container}/out/model.ilearner",
        trained_model_name="Energy Efficiency [no such model]",
        deferrable=False,
    )
    with pytest.raises(ConfigurationError, match=r"trained_model_name: the definition has no matching trained-model"):
        op.execute(make_context())
    assert remote_snapshot(emulator) == before
    assert requests_log(emulator, "arm.webservice.patch") == []


# --- wrong keys ----------------------------------------------------------------------------------------------


def test_wrong_bes_key_is_a_clear_401(
    emulator: RunningEmulator, container: str, upload: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = upload("in/churn.csv", dataset="churn", rows=120, window=1, seed=1)
    endpoint = emulator.classic_endpoint("training")
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_CHURN_TRAINING",
        json.dumps({"conn_type": "azureml_web_service", "host": endpoint["api_location"], "password": "wrong-key-42"}),
    )
    before = remote_snapshot(emulator)
    with pytest.raises(
        AzureMLServiceError, match=r"submit BES job failed for service .*: HTTP 401 Unauthorized"
    ) as error:
        churn_training(container, data).execute(make_context())
    assert "wrong-key-42" not in str(error.value)
    assert jobs(emulator) == before["jobs"] == []


def test_wrong_management_token_is_a_clear_401(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    service = emulator.classic_service("predictive")["id"]
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_CLASSIC_MANAGEMENT_DEFAULT",
        json.dumps(
            {
                "conn_type": "azureml_classic_management",
                "host": emulator.url,
                "schema": emulator.workspace["id"],
                "password": "wrong-token-42",
            }
        ),
    )
    before = remote_snapshot(emulator)
    hook = AzureMLClassicManagementHook()
    with pytest.raises(AzureMLServiceError, match=r"get endpoint failed for endpoint retrain01 .*HTTP 401") as error:
        hook.get_endpoint(service, "retrain01")
    assert error.value.detail_codes == ("ManagementRequestUnauthorized",)
    resource = emulator.classic_service("predictive")["trained_model_resource"]
    with pytest.raises(AzureMLServiceError, match=r"patch endpoint resources failed .*HTTP 401"):
        hook.patch_endpoint_resources(
            service,
            "retrain01",
            [{"Name": resource, "Location": {"BaseLocation": "https://a/", "RelativeLocation": "c/m.ilearner"}}],
        )
    after = remote_snapshot(emulator)
    assert after["endpoints"] == before["endpoints"]
    assert [r[2] for r in after["mutating"][len(before["mutating"]) :]] == [401]


# --- the trigger form ----------------------------------------------------------------------------------------


def test_promote_param_out_of_range_is_refused() -> None:
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    from azureml_retrain.factory import build_dag

    dag = build_dag(parse_config(base_config(), "churn.yaml"))
    message = r"Invalid input for param promote: 'sometimes' is not one of \['auto', 'never', 'force'\]"
    # The trigger form's value merged into the DAG's params (what a manual run with conf does) ...
    form = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError, match=message):
        form["promote"] = "sometimes"
    # ... and a ParamsDict holding it with the DAG's own schema fails validate().
    schema = dag.params.get_param("promote").schema
    with pytest.raises(ParamValidationError, match=message):
        ParamsDict({"promote": Param("sometimes", **schema)}).validate()
    dag.params.validate()  # the defaults stay valid


@pytest.mark.parametrize("window", ["2026-11-20", "2026-11-20/", "/2026-11-21", "yesterday"])
def test_an_incomplete_window_is_refused_when_the_run_is_triggered(
    window: str, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Airflow's REST API, as a manual run without a logical date: Airflow itself checks the
    window param's schema, answers 400 naming the param, and creates no run."""
    churn = build_retraining("churn")
    api = api_client(tmp_path, monkeypatch)
    runs = f"/api/v2/dags/{churn.dag_id}/dagRuns"

    refused = api.post(runs, json={"logical_date": None, "conf": {"window": window}})

    assert refused.status_code == 400, refused.text
    assert f"Invalid input for param window: '{window}' does not match" in refused.json()["detail"]
    assert api.get(runs).json()["total_entries"] == 0

    accepted = api.post(runs, json={"logical_date": None, "conf": {"window": "2026-11-20/2026-11-21"}})

    assert accepted.status_code == 200, accepted.text
    run = accepted.json()
    assert (run["logical_date"], run["conf"]["window"]) == (None, "2026-11-20/2026-11-21")
    assert [r["dag_run_id"] for r in api.get(runs).json()["dag_runs"]] == [run["dag_run_id"]]


# --- training data -------------------------------------------------------------------------------------------


def test_training_csv_with_wrong_columns_fails_naming_them(
    emulator: RunningEmulator, container: str, upload: Any
) -> None:
    data = upload(
        "in/churn.csv",
        b"Tenure,Monthly_Charges,SupportCalls,ContractMonths,Age,Churn\n" + b"3,110,4,1,30,Churner\n" * 80,
    )
    with pytest.raises(BesJobFailedError, match=r"Failed: .*MonthlyCharges") as error:
        churn_training(container, data).execute(make_context())
    assert [j["status"] for j in jobs(emulator)] == ["Failed"]
    assert "MonthlyCharges" in str(jobs(emulator)[0]["details"])
    assert "MonthlyCharges" in str(error.value)


def test_training_csv_without_the_label_fails_naming_it(emulator: RunningEmulator, container: str, upload: Any) -> None:
    label = state(emulator)["experiments"]["churn"]["label"]
    data = upload("in/churn.csv", b"Tenure,MonthlyCharges,SupportCalls,ContractMonths,Age\n" + b"3,110,4,1,30\n" * 80)
    with pytest.raises(BesJobFailedError, match=rf"Failed: .*{label}"):
        churn_training(container, data).execute(make_context())


# --- data arrival ------------------------------------------------------------------------------------------------

WINDOW = {"window_start": "2026-11-26T00:00:00+00:00", "window_end": "2026-11-27T00:00:00+00:00"}


def arrival_sensor(container: str, **overrides: Any) -> BlobArrivalSensor:
    values: dict[str, Any] = {
        "task_id": "wait_for_data",
        "container_name": container,
        "prefix": "incoming/{window_start:%Y-%m-%d}/",
        "pattern": "*.csv",
        "stable_for": 1,
        "poke_interval": 0.2,
        "timeout": 1.5,
        "mode": "poke",
        "deferrable": False,
        **WINDOW,
    }
    values.update(overrides)
    return BlobArrivalSensor(**values)


def sensor_context() -> dict[str, Any]:
    return {"params": {}, "dag_run": None, "logical_date": None}


def test_window_with_no_data_waits_with_a_clear_reason_then_times_out(
    azurite: str, container: str, upload: Any
) -> None:
    upload("incoming/2026-11-25/old.csv", b"a,b\n1,2\n")  # the previous window's data does not count
    sensor = arrival_sensor(container)
    assessment = sensor.check(sensor.criteria(sensor_context()), previous=None)
    assert assessment is not None and not assessment.ready
    assert re.search(r"no blobs under '.*/incoming/2026-11-26/' matching '\*\.csv' yet", assessment.reason), (
        assessment.reason
    )
    with pytest.raises(AirflowSensorTimeout, match=r"(?i)timed out|timeout"):
        sensor.execute(sensor_context())


def test_zero_byte_blob_is_not_accepted(azurite: str, container: str, upload: Any) -> None:
    upload("incoming/2026-11-26/part-0.csv", b"")
    sensor = arrival_sensor(container, stable_for=0)
    assessment = sensor.check(sensor.criteria(sensor_context()), previous=None)
    assert assessment is not None and not assessment.ready, assessment.reason
    assert "blob 'incoming/2026-11-26/part-0.csv' is empty (0 bytes)" in assessment.reason, assessment.reason


def test_blob_still_changing_is_not_accepted(azurite: str, container: str, upload: Any) -> None:
    upload("incoming/2026-11-26/part-0.csv", b"a,b\n1,2\n")
    sensor = arrival_sensor(container, stable_for=30)
    assessment = sensor.check(sensor.criteria(sensor_context()), previous=None)
    assert assessment is not None and not assessment.ready, assessment.reason
    assert "stable" in assessment.reason or "changed" in assessment.reason or "modified" in assessment.reason, (
        assessment.reason
    )
