"""The DAG factory's pure logic: branching, skip reasons, per-target arguments, promotion summaries,
rollback planning, the trigger form, and the shape of the built DAGs (no services, no database)."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from azureml_retrain.config import load_config, parse_config
from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.factory import (
    ARM_TARGETS_TASK,
    ARM_TASK,
    CLASSIC_TARGETS_TASK,
    CLASSIC_TASK,
    ROLLBACK_ARM_TASK,
    ROLLBACK_CLASSIC_TASK,
    ROLLBACK_DAG_ID,
    SKIP_TASK,
    RetrainingTrainOperator,
    attempted_targets,
    build_dag,
    choose_branches,
    model_asset,
    params_for,
    plan_ledger_rollback,
    plan_rollback,
    prepare_training,
    promotion_failure,
    retraining_dags,
    rules_param,
    run_slug,
    skip_reason,
    stop_a_dry_run,
    summarise_promotions,
    target_batches,
    target_kwargs,
    target_outcomes,
    training_input,
    window_param,
)
from azureml_retrain.ledger import NO_MODEL, LedgerRecord, PromotionLedger
from devtools.services import ROOT

CONFIG_DIR = ROOT / "dags" / "retraining"
CHURN = load_config(CONFIG_DIR / "churn.yaml")
ENERGY = load_config(CONFIG_DIR / "energy.yaml")


def mixed_config() -> Any:
    """Churn's config with an extra Resource Manager target: both promotion tasks exist."""
    data = yaml.safe_load((CONFIG_DIR / "churn.yaml").read_text())
    data["targets"].append(
        {"kind": "arm_web_service", "name": "churn-arm", "web_service_name": "churn-arm", "arm_conn_id": "arm"}
    )
    return parse_config(data, "mixed.yaml")


def plan(run_type: str = "scheduled", promote: str = "auto", promote_backfill: bool = False) -> dict[str, Any]:
    return {
        "run_type": run_type,
        "promote": promote,
        "promote_backfill": promote_backfill,
        "expected_models": {"churn-retrain01": "uri-1", "churn-retrain02": NO_MODEL, "churn-arm": "uri-3"},
    }


ACCEPT = {"promote": True, "reason": "promote: AUC 0.91 beats 0.88"}
REJECT = {"promote": False, "reason": "reject: AUC 0.80 fails threshold >= 0.9"}


# --- choose_branches / skip_reason -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_type", "promote", "promote_backfill", "decision", "branches"),
    [
        ("scheduled", "auto", False, ACCEPT, [CLASSIC_TARGETS_TASK]),
        ("manual", "auto", False, ACCEPT, [CLASSIC_TARGETS_TASK]),
        ("scheduled", "auto", False, REJECT, [SKIP_TASK]),
        ("manual", "never", False, ACCEPT, [SKIP_TASK]),
        ("manual", "force", False, REJECT, [CLASSIC_TARGETS_TASK]),
        # Backfill runs (run_type "backfill") do not promote, whatever the evaluation or promote mode says...
        ("backfill", "auto", False, ACCEPT, [SKIP_TASK]),
        ("backfill", "force", False, REJECT, [SKIP_TASK]),
        # ... unless the backfill was asked to (the ledger guard still refuses older windows).
        ("backfill", "auto", True, ACCEPT, [CLASSIC_TARGETS_TASK]),
        ("backfill", "auto", True, REJECT, [SKIP_TASK]),
        ("backfill", "force", True, REJECT, [CLASSIC_TARGETS_TASK]),
        ("backfill", "never", True, ACCEPT, [SKIP_TASK]),
    ],
)
def test_choose_branches(run_type, promote, promote_backfill, decision, branches):
    assert choose_branches(CHURN, plan(run_type, promote, promote_backfill), decision) == branches


def test_choose_branches_per_target_kind():
    assert choose_branches(ENERGY, plan(), ACCEPT) == [ARM_TARGETS_TASK]
    assert choose_branches(mixed_config(), plan(), ACCEPT) == [CLASSIC_TARGETS_TASK, ARM_TARGETS_TASK]
    assert choose_branches(mixed_config(), plan(), REJECT) == [SKIP_TASK]


def test_choose_branches_without_a_promote_key_rejects():
    assert choose_branches(CHURN, plan(), {}) == [SKIP_TASK]


@pytest.mark.parametrize(
    ("run", "decision", "reason"),
    [
        (plan(promote="never"), ACCEPT, "not promoted: the run's promote param is 'never'"),
        (
            plan("backfill"),
            ACCEPT,
            "not promoted: backfill runs only train and evaluate (set promote_backfill to let them promote)",
        ),
        (plan(), REJECT, "not promoted: reject: AUC 0.80 fails threshold >= 0.9"),
        (plan(), {}, "not promoted: the evaluation rejected the model"),
    ],
)
def test_skip_reason(run, decision, reason):
    assert skip_reason(run, decision) == reason


# --- target_kwargs / attempted_targets -------------------------------------------------------------


def test_target_kwargs_for_classic_endpoints():
    from azureml_retrain.config import ArmWebServiceTarget, ClassicEndpointTarget

    items = target_kwargs(CHURN, plan(), ClassicEndpointTarget)
    assert items == [
        {
            "target_name": "churn-retrain01",
            "trained_model_name": None,
            "expected_model_uri": "uri-1",
            "web_service_id": "3d2a6c9f1d4b4a8c0e3f5d7b9c1a2e4f",
            "endpoint_name": "retrain01",
            "create_endpoint": False,
            "management_conn_id": "azureml_classic_management_default",
        },
        {
            "target_name": "churn-retrain02",
            "trained_model_name": None,
            "expected_model_uri": NO_MODEL,
            "web_service_id": "3d2a6c9f1d4b4a8c0e3f5d7b9c1a2e4f",
            "endpoint_name": "retrain02",
            "create_endpoint": True,
            "management_conn_id": "azureml_classic_management_default",
        },
    ]
    assert target_kwargs(CHURN, plan(), ArmWebServiceTarget) == []
    assert [i["target_name"] for i in target_kwargs(CHURN, plan(), ClassicEndpointTarget, only="churn-retrain02")] == [
        "churn-retrain02"
    ]


def test_target_kwargs_for_arm_web_services():
    from azureml_retrain.config import ArmWebServiceTarget

    assert target_kwargs(mixed_config(), plan(), ArmWebServiceTarget) == [
        {
            "target_name": "churn-arm",
            "trained_model_name": None,
            "expected_model_uri": "uri-3",
            "web_service_name": "churn-arm",
            "arm_conn_id": "arm",
        }
    ]


def many_targets(count: int, **promotion: Any) -> Any:
    """Churn's config with ``count`` classic endpoint targets (and ``promotion`` settings)."""
    data = yaml.safe_load((CONFIG_DIR / "churn.yaml").read_text())
    template = data["targets"][0]
    data["targets"] = [{**template, "name": f"t{i:02d}", "endpoint_name": f"ep{i:02d}"} for i in range(count)]
    if promotion:
        data["promotion"] = promotion
    return parse_config(data, "many.yaml")


def test_target_batches_split_the_targets_in_order_by_batch_size():
    from azureml_retrain.config import ArmWebServiceTarget, ClassicEndpointTarget

    config = many_targets(50)
    expected = {f"t{i:02d}": "uri" for i in range(60)}
    run = {**plan(), "expected_models": expected}
    batches = target_batches(config, run, ClassicEndpointTarget)
    assert [len(b["targets"]) for b in batches] == [25, 25]  # the default batch size: 50 targets, 2 tasks
    assert [t for b in batches for t in b["targets"]] == target_kwargs(config, run, ClassicEndpointTarget)
    assert target_batches(config, run, ArmWebServiceTarget) == []
    assert [len(b["targets"]) for b in target_batches(many_targets(60), run, ClassicEndpointTarget)] == [25, 25, 10]
    small = many_targets(5, batch_size=2)
    assert [[t["target_name"] for t in b["targets"]] for b in target_batches(small, run, ClassicEndpointTarget)] == [
        ["t00", "t01"],
        ["t02", "t03"],
        ["t04"],
    ]


@pytest.mark.parametrize("size", [0, -1, 201])
def test_promotion_batch_size_out_of_range_is_a_clear_error(size):
    with pytest.raises(ConfigurationError, match=r"promotion\.batch_size.*must be 1 to 200 targets per promotion task"):
        many_targets(2, batch_size=size)


def test_promotion_results_flatten_batches_and_prefer_a_tasks_value_over_an_earlier_try():
    from azureml_retrain.factory import promotion_refusals, promotion_results

    class BatchTi:
        def xcom_pull(self, task_ids: str, key: str = "return_value", default: Any = None) -> Any:
            values = {
                (CLASSIC_TASK, "return_value"): [[result("a", True), result("b", False)], [result("c", True)]],
                (CLASSIC_TASK, "target_results"): [[result("c", False)]],
                (CLASSIC_TASK, "refusal"): [[{"target": "d", "reason": "changed"}], {"target": "e", "reason": "old"}],
                (ARM_TASK, "return_value"): result("f", True),
            }
            return values.get((task_ids, key), default)

    results = {r["target"]: r["changed"] for r in promotion_results(BatchTi())}
    assert results == {"a": True, "b": False, "c": True, "f": True}
    assert promotion_refusals(BatchTi()) == {"d": "changed", "e": "old"}


def test_a_target_an_earlier_try_of_the_run_promoted_counts_as_promoted():
    earlier = {"target": "churn-retrain01", "changed": False, "promoted_by_earlier_try": True}
    summary = summarise_promotions(CHURN, [earlier, result("churn-retrain02", False)])
    assert summary["promoted"] == ["churn-retrain01"] and summary["already_serving"] == ["churn-retrain02"]


@pytest.mark.parametrize(
    ("run", "decision", "attempted"),
    [
        (plan(), ACCEPT, ["churn-retrain01", "churn-retrain02", "churn-arm"]),
        (plan(), REJECT, []),
        (plan("backfill"), ACCEPT, []),
        (None, ACCEPT, []),  # failed before planning
        (plan(), None, []),  # failed before evaluating
    ],
)
def test_attempted_targets(run, decision, attempted):
    assert attempted_targets(mixed_config(), run, decision) == attempted


# --- summaries ---------------------------------------------------------------------------------------


def result(target: str, changed: bool) -> dict[str, Any]:
    return {"target": target, "changed": changed}


def test_summarise_all_promoted():
    summary = summarise_promotions(CHURN, [result("churn-retrain02", True), result("churn-retrain01", True)])
    assert summary == {
        "promoted": ["churn-retrain01", "churn-retrain02"],
        "already_serving": [],
        "refused": {},
        "failed": [],
    }
    assert promotion_failure(summary) is None


def test_summarise_one_failed_one_already_serving():
    summary = summarise_promotions(CHURN, [result("churn-retrain01", False)])
    assert summary == {
        "promoted": [],
        "already_serving": ["churn-retrain01"],
        "refused": {},
        "failed": ["churn-retrain02"],
    }
    assert promotion_failure(summary) == "promoted to ['churn-retrain01'], but not to ['churn-retrain02']"


def test_summarise_counts_only_attempted_targets_as_failed():
    empty = {"promoted": [], "already_serving": [], "refused": {}, "failed": []}
    assert summarise_promotions(CHURN, [], attempted=[]) == empty
    summary = summarise_promotions(mixed_config(), [result("churn-retrain01", True)], attempted=["churn-retrain01"])
    assert summary["failed"] == []


def test_a_target_the_ledger_refused_is_an_outcome_not_a_failure():
    refused = {"churn-retrain02": "serves a model trained on newer data", "energy-predictive": "not attempted"}
    summary = summarise_promotions(CHURN, [result("churn-retrain01", True)], refused=refused)
    assert summary["refused"] == {"churn-retrain02": "serves a model trained on newer data"}
    assert summary["failed"] == [] and promotion_failure(summary) is None
    outcomes = target_outcomes(CHURN, summary)
    assert outcomes == {
        "churn-retrain01": {"outcome": "promoted"},
        "churn-retrain02": {"outcome": "refused", "detail": "serves a model trained on newer data"},
    }


def test_promotion_failure_when_nothing_was_promoted():
    summary = summarise_promotions(CHURN, [], attempted=["churn-retrain01", "churn-retrain02"])
    assert promotion_failure(summary) == "no target was promoted; failed: ['churn-retrain01', 'churn-retrain02']"


# --- plan_rollback -----------------------------------------------------------------------------------

SEED = "aml://trainedmodel/seed.ilearner"
W1 = {"start": "2026-11-18T02:00:00+00:00", "end": "2026-11-19T02:00:00+00:00"}
W2 = {"start": "2026-11-19T02:00:00+00:00", "end": "2026-11-20T02:00:00+00:00"}


def history(target: str = "churn-retrain02") -> list[LedgerRecord]:
    return [
        LedgerRecord(kind="baseline", target=target, model_uri=SEED),
        LedgerRecord(
            kind="promotion", target=target, model_uri="m1", previous_model_uri=SEED, metrics={"AUC": 0.8}, window=W1
        ),
        LedgerRecord(
            kind="promotion", target=target, model_uri="m2", previous_model_uri="m1", metrics={"AUC": 0.9}, window=W2
        ),
    ]


@pytest.fixture
def ledger_records(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[LedgerRecord]]:
    records: dict[str, list[LedgerRecord]] = {}
    seen: list[str] = []

    def fake_records(self: PromotionLedger, target: str) -> list[LedgerRecord]:
        seen.append(self.container)
        return records.get(target, [])

    monkeypatch.setattr(PromotionLedger, "records", fake_records)
    return records


def test_plan_rollback_goes_back_to_the_previous_model(ledger_records):
    ledger_records["churn-retrain02"] = history()
    # The second of two classic targets: only its own arguments (not the first target's).
    planned = plan_rollback(CHURN, "churn-retrain02", None)
    assert planned["task_id"] == ROLLBACK_CLASSIC_TASK
    kwargs = planned["kwargs"]
    assert (kwargs["target_name"], kwargs["endpoint_name"], kwargs["create_endpoint"]) == (
        "churn-retrain02",
        "retrain02",
        True,
    )
    assert (kwargs["model"], kwargs["expected_model_uri"]) == ("m1", "m2")
    assert (kwargs["metrics"], kwargs["window"]) == ({"AUC": 0.8}, W1)
    assert kwargs["ledger_container"] == CHURN.ledger_container
    assert kwargs["smoke_test_rows"] == CHURN.smoke_test_rows


def test_plan_rollback_to_an_explicit_model(ledger_records):
    ledger_records["churn-retrain02"] = history()
    kwargs = plan_rollback(CHURN, "churn-retrain02", SEED)["kwargs"]
    assert (kwargs["model"], kwargs["metrics"], kwargs["window"]) == (SEED, {}, None)


def test_plan_rollback_of_an_arm_target(ledger_records):
    ledger_records["energy-predictive"] = history("energy-predictive")
    planned = plan_rollback(ENERGY, "energy-predictive", None)
    assert planned["task_id"] == ROLLBACK_ARM_TASK
    assert planned["kwargs"]["web_service_name"] == "energy-predictive"
    assert "endpoint_name" not in planned["kwargs"]


@pytest.mark.parametrize(
    ("records", "target", "to_model", "message"),
    [
        (history(), "nope", None, "target: 'nope' is not a target of churn"),
        ([], "churn-retrain02", None, "has no ledger yet, so there is nothing to roll back to"),
        (history()[:1], "churn-retrain02", None, "does not say what served before aml://trainedmodel/seed.ilearner"),
        (history(), "churn-retrain02", "m9", r"to_model_uri: m9 was never served by churn-retrain02"),
        (history(), "churn-retrain02", "m2", "to_model_uri: churn-retrain02 already serves m2"),
    ],
)
def test_plan_rollback_errors(ledger_records, records, target, to_model, message):
    ledger_records["churn-retrain02"] = records
    with pytest.raises(ConfigurationError, match=message):
        plan_rollback(CHURN, target, to_model)


def test_plan_ledger_rollback_finds_where_a_target_is_served_in_its_ledger(ledger_records):
    served_by = {
        "operator": "PatchEndpointOperator",
        "trained_model_name": None,
        "web_service_id": "svc",
        "endpoint_name": "handwritten",
        "management_conn_id": "azureml_classic_management_default",
    }
    *older, head = history("churn-handwritten")
    ledger_records["churn-handwritten"] = [*older, dataclasses.replace(head, served_by=served_by)]
    planned = plan_ledger_rollback(
        "churn-handwritten", None, wasb_conn_id="wasb_default", ledger_container="model-ledger"
    )
    assert planned["task_id"] == ROLLBACK_CLASSIC_TASK
    assert planned["kwargs"] == {
        "trained_model_name": None,
        "web_service_id": "svc",
        "endpoint_name": "handwritten",
        "management_conn_id": "azureml_classic_management_default",
        "target_name": "churn-handwritten",
        "expected_model_uri": "m2",
        "model": "m1",
        "metrics": {"AUC": 0.8},
        "window": W1,
        "wasb_conn_id": "wasb_default",
        "ledger_container": "model-ledger",
    }


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], r"target: 'churn-handwritten' has no ledger in container 'model-ledger' of connection 'wasb_default'"),
        (history("churn-handwritten"), "does not say where it is served"),
    ],
)
def test_plan_ledger_rollback_errors(ledger_records, records, message):
    ledger_records["churn-handwritten"] = records
    with pytest.raises(ConfigurationError, match=message):
        plan_ledger_rollback("churn-handwritten", None, wasb_conn_id="wasb_default", ledger_container="model-ledger")


# --- the trigger form and the DAGs -------------------------------------------------------------------


def test_params_form():
    params = params_for(CHURN)
    assert list(params) == [
        "data_prefix",
        "rules",
        "promote",
        "promote_backfill",
        "dry_run",
        "window",
    ]
    assert {k: p.value for k, p in params.items()} == {
        "window": None,
        "data_prefix": None,
        "rules": None,
        "promote": "auto",
        "promote_backfill": False,
        "dry_run": False,
    }
    assert params["promote"].schema["enum"] == ["auto", "never", "force"]
    # The form shows each choice with its title.
    assert set(params["promote"].schema["values_display"]) == {"auto", "never", "force"}
    assert "'training-data'" in params["data_prefix"].description


WINDOWS_THE_FORM_ACCEPTS = [
    None,
    "",
    "2026-11-20/2026-11-21",
    "2026-11-20T02:00:00Z/2026-11-21T02:00:00+00:00",
    "2026-11-20T02:00/2026-11-21T02:00",
    "2026-11-20 02:00:00.123456-05:30/2026-11-21",
    # Well-formed but not a real date, or not in order: refused when the run plans (test_windows.py).
    "2026-02-30/2026-03-01",
    "2026-11-21/2026-11-20",
]
WINDOWS_THE_FORM_REFUSES = [
    "2026-11-20",
    "2026-11-20/",
    "/2026-11-21",
    "/",
    "garbage",
    "yesterday/today",
    "2026-11-20/2026-11-21/2026-11-22",
    " 2026-11-20/2026-11-21",
    "2026-11-20 / 2026-11-21",
    "20261120/20261121",  # ISO 8601's basic format: not in the description
    "\u0662\u0660\u0662\u0666-11-20/2026-11-21",  # Arabic-Indic digits, which Python's \\d would take
    20261120,
    ["2026-11-20", "2026-11-21"],
]


def validate_as_airflow_does(value: Any, schema: dict[str, Any]) -> None:
    """What ``Param.resolve`` does with a value: jsonschema, the validator of the schema's dialect."""
    from jsonschema import FormatChecker, validate

    validate(value, schema, format_checker=FormatChecker())


@pytest.mark.parametrize("value", WINDOWS_THE_FORM_ACCEPTS)
def test_the_window_param_accepts_empty_or_a_complete_interval(value: Any):
    validate_as_airflow_does(value, window_param().schema)


@pytest.mark.parametrize("value", WINDOWS_THE_FORM_REFUSES)
def test_the_window_param_refuses_an_incomplete_interval_or_garbage(value: Any):
    from jsonschema import ValidationError

    with pytest.raises(ValidationError):
        validate_as_airflow_does(value, window_param().schema)


# The short pattern (Airflow's refusal quotes it, so it stays readable) checks the interval's shape;
# the run's plan checks each end before any job.
def test_a_zone_without_a_time_passes_the_form_and_is_refused_by_the_plan():
    from azureml_retrain.exceptions import ConfigurationError
    from azureml_retrain.windows import parse_window

    value = "2026-11-20Z/2026-11-21Z"
    validate_as_airflow_does(value, window_param().schema)
    with pytest.raises(ConfigurationError, match=r"params\['window'\].*expected an ISO 8601 date or datetime"):
        parse_window(value, "params['window']")


@pytest.mark.parametrize(
    ("value", "start"),
    [
        ("2026-11-20T02/2026-11-21T02", datetime(2026, 11, 20, 2, tzinfo=UTC)),  # ISO 8601's reduced precision
        ("2026-11-20T02:00+0100/2026-11-21", datetime(2026, 11, 20, 1, tzinfo=UTC)),  # its basic-format offset
    ],
)
def test_iso_8601_variants_pass_the_form_and_the_plan(value: str, start: datetime):
    from azureml_retrain.windows import parse_window

    validate_as_airflow_does(value, window_param().schema)
    assert parse_window(value, "params['window']")[0] == start


def test_the_window_param_is_a_draft_07_form_field_that_says_what_wins():
    from jsonschema import Draft7Validator
    from jsonschema.validators import validator_for

    param = window_param()
    assert validator_for(param.schema) is Draft7Validator
    assert (param.schema["title"], param.schema["type"]) == ("Window", ["null", "string"])
    assert "<start>/<end>" in param.description and "2026-11-20/2026-11-21" in param.description
    # In its own section of the form, pointing to the usual way (the run's data interval), saying what wins.
    assert param.schema["section"] == "Runs without a logical date"
    assert "Specify Manually" in param.description
    assert "this window, then the run's data interval, then the schedule's latest complete interval" in (
        param.description
    )


RULES_THE_FORM_REFUSES = [
    ({"threshold": 0.7}, "'metric' is a required property"),
    ({"metric": "AUC", "treshold": 0.7}, "'treshold' is not one of ['metric', 'higher_is_better', 'threshold'"),
    ("AUC", "'AUC' is not of type 'null', 'object'"),
]
# Refused when the run plans, before any job (the param's schema names fields only: see rules_param).
RULES_THE_PLAN_REFUSES = [
    ({"metric": "AUC", "threshold": "high"}, "threshold"),
    ({"metric": "AUC", "min_absolute_improvement": -0.1}, "min_absolute_improvement"),
    ({"metric": "AUC", "on_missing_champion_metric": "ignore"}, "on_missing_champion_metric"),
    ({"metric": "AUC", "guards": [{"metric": "Recall", "mni": 0.5}]}, "mni"),
]


@pytest.mark.parametrize(("value", "message"), RULES_THE_FORM_REFUSES)
def test_the_rules_param_refuses_a_wrong_override_at_trigger_time_with_a_message(value: Any, message: str):
    from jsonschema import ValidationError

    with pytest.raises(ValidationError) as refused:
        validate_as_airflow_does(value, rules_param().schema)
    assert refused.value.message.startswith(message)


@pytest.mark.parametrize(("value", "field"), RULES_THE_PLAN_REFUSES)
def test_a_wrong_rules_override_the_form_lets_through_is_refused_when_the_run_plans(value: Any, field: str):
    from azureml_retrain.evaluation import parse_rules

    validate_as_airflow_does(value, rules_param().schema)
    with pytest.raises(ConfigurationError, match=field):
        parse_rules(value)


def test_the_rules_param_accepts_what_the_model_accepts():
    for value in (None, *(t.evaluation.model_dump(mode="json", exclude_none=True) for t in (CHURN,))):
        validate_as_airflow_does(value, rules_param().schema)
    validate_as_airflow_does(
        {"metric": "auc", "threshold": 0.7, "guards": [{"metric": "recall", "min": 0.5}]}, rules_param().schema
    )


def test_the_rules_param_shows_its_fields_from_the_models_schema_without_refs():
    from azureml_retrain.evaluation import EvaluationRules

    param = rules_param()
    assert param.description is None  # the form renders description_md instead
    assert set(param.schema["propertyNames"]["enum"]) == set(EvaluationRules.model_fields)
    assert "$defs" not in json.dumps(param.schema) and "$ref" not in json.dumps(param.schema)
    for field in EvaluationRules.model_fields:
        assert f"- `{field}`:" in param.schema["description_md"]
    assert "AUC" in param.schema["description_md"]


def test_dag_params_validate_a_trigger():
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    dag = build_dag(CHURN)
    good = ParamsDict(copy.deepcopy(dag.params))
    good.update({"promote": "force", "rules": {"metric": "AUC", "threshold": 0.9}, "window": "2026-11-18/2026-11-19"})
    assert good.validate()["promote"] == "force"
    for (key, value), message in (
        (("promote", "sometimes"), "'sometimes' is not one of"),
        (("rules", "AUC > 0.9"), "is not of type"),
        # The form knows the rules model's fields (the rest is checked when the run plans).
        (
            ("rules", {"metric": "AUC", "treshold": 0.9}),
            r"'treshold' is not one of \['metric', ",
        ),
        (("rules", {"threshold": 0.9}), "'metric' is a required property"),
        (("dry_run", "yes"), "is not of type 'boolean'"),
        (("window", "2026-11-18"), "'2026-11-18' does not match"),
    ):
        params = ParamsDict(copy.deepcopy(dag.params))
        with pytest.raises(ParamValidationError, match=f"Invalid input for param {key}: .*{message}"):
            params.update({key: value})
            params.validate()


def test_a_dry_run_stops_at_train_and_other_runs_go_on():
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="dry run"):
        stop_a_dry_run({"params": {"dry_run": True}})
    assert stop_a_dry_run({"params": {"dry_run": False}}) is None
    assert stop_a_dry_run({"params": {}}) is None


def test_built_dag_shape():
    from airflow.sdk import CronDataIntervalTimetable

    dag = build_dag(CHURN)
    assert dag.dag_id == "retrain_churn"
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 2 * * *"
    assert (dag.catchup, dag.max_active_runs) == (False, 1)
    assert {"azureml", "retraining", "churn", "classic"} <= set(dag.tags)
    assert set(dag.task_dict) == {
        "wait_for_data",
        "plan",
        "train",
        "evaluate",
        "classic_targets",
        "arm_targets",
        CLASSIC_TASK,
        ARM_TASK,
        SKIP_TASK,
        "report",
        "all_targets_promoted",
    }
    # The plan is made while the sensor waits: the path from the data to serving is sensor, train,
    # evaluate (which branches), promotion.
    assert dag.task_dict["plan"].upstream_task_ids == set()
    assert dag.task_dict["train"].upstream_task_ids == {"wait_for_data", "plan"}
    # evaluate branches to the target lists or skip_promotion; every other direct downstream task
    # (the mapped promotions read its verdict; report and all_targets_promoted wait on it) is skipped
    # on the path not taken, without being started.
    assert set(dag.task_dict["evaluate"].downstream_task_ids) == {
        CLASSIC_TARGETS_TASK,
        ARM_TARGETS_TASK,
        CLASSIC_TASK,
        ARM_TASK,
        SKIP_TASK,
        "report",
        "all_targets_promoted",
    }
    train = dag.task_dict["train"]
    # prepare_training runs as the operator's pre_execute method: no callable for Airflow to serialise.
    assert isinstance(train, RetrainingTrainOperator) and train._pre_execute_hook is None
    assert train.wasb_conn_id == CHURN.data.wasb_conn_id
    assert dag.task_dict["train"].inputs == {"input1": "{{ training_input(ti) }}"}
    assert "training_input" in dag.user_defined_macros
    # The ledger records what each promoted model was trained on: the same input as ``train``'s.
    for task_id in (CLASSIC_TASK, ARM_TASK):
        assert dag.task_dict[task_id].partial_kwargs["training_inputs"] == "{{ training_input(ti) }}"
    assert dag.task_dict["report"].outlets == [model_asset(CHURN)]
    assert model_asset(CHURN).name == "azureml_model_churn"
    # The run's state follows its leaves: all_targets_promoted is the one that fails a run whose promotions failed.
    assert {t.task_id for t in dag.leaves} == {"all_targets_promoted", SKIP_TASK}


# --- the training input: the one accepted blob, or the staged concatenation of several ------------

WINDOW = {"start": "2026-11-18T02:00:00+00:00", "end": "2026-11-19T02:00:00+00:00"}
STAGED = "models/churn/20261118T0200-20261119T0200/run/input.csv"


def arrival(*names: str, window: dict[str, str] = WINDOW) -> dict[str, Any]:
    blobs = [{"name": n, "etag": f"e-{n}", "size": 10} for n in names]
    return {"container": "training-data", "prefix": "churn/", "window": window, "blobs": blobs}


class FakeTi:
    def __init__(self, **values: Any) -> None:
        self.values = values

    def xcom_pull(self, task_ids: str) -> Any:
        return self.values[task_ids]


def test_training_input_is_the_one_blob_or_the_staged_file():
    plan = {"staged_input": STAGED}
    assert training_input(arrival("churn/part-0.csv"), plan) == "training-data/churn/part-0.csv"
    assert training_input(arrival("churn/b.csv", "churn/a.csv"), plan) == STAGED
    # The sensor's XCom may come back as JSON text.
    import json

    assert training_input(json.dumps(arrival("churn/x.csv")), plan) == "training-data/churn/x.csv"


def test_prepare_training_stages_several_blobs_only(monkeypatch: pytest.MonkeyPatch):
    from azureml_retrain import factory

    staged: list[tuple[list[str], str]] = []

    def fake_stage(wasb_conn_id: str, accepted: dict[str, Any], where: Any) -> None:
        staged.append(([b["name"] for b in accepted["blobs"]], where.relative_location))

    monkeypatch.setattr(factory, "stage_training_input", fake_stage)
    plan = {"window": WINDOW, "staged_input": STAGED}
    context = {"params": {}, "ti": FakeTi(wait_for_data=arrival("churn/a.csv"), plan=plan)}
    prepare_training(CHURN.data.wasb_conn_id, context)
    assert staged == []
    context["ti"] = FakeTi(wait_for_data=arrival("churn/a.csv", "churn/b.csv"), plan=plan)
    prepare_training(CHURN.data.wasb_conn_id, context)
    assert staged == [(["churn/a.csv", "churn/b.csv"], STAGED)]


def test_prepare_training_refuses_data_of_another_window_than_the_plan():
    other = {"start": "2026-11-19T02:00:00Z", "end": "2026-11-20T02:00:00Z"}
    ti = FakeTi(wait_for_data=arrival("churn/a.csv", window=other), plan={"window": WINDOW, "staged_input": STAGED})
    with pytest.raises(ConfigurationError, match=r"window: the sensor accepted data for .* but the plan is for"):
        prepare_training(CHURN.data.wasb_conn_id, {"params": {}, "ti": ti})
    # The same instants written differently agree.
    same = {"start": "2026-11-18T02:00:00Z", "end": "2026-11-19T02:00:00Z"}
    ti = FakeTi(wait_for_data=arrival("churn/a.csv", window=same), plan={"window": WINDOW, "staged_input": STAGED})
    prepare_training(CHURN.data.wasb_conn_id, {"params": {}, "ti": ti})


def test_prepare_training_stops_a_dry_run_before_touching_the_data():
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="dry run"):
        prepare_training(CHURN.data.wasb_conn_id, {"params": {"dry_run": True}, "ti": FakeTi()})


def test_the_dag_file_builds_every_valid_config_and_the_rollback_dag_each_on_its_own(tmp_path: Path, caplog):
    from airflow.serialization.serialized_objects import DagSerialization

    for name in ("churn.yaml", "energy.yaml"):
        (tmp_path / name).write_bytes((CONFIG_DIR / name).read_bytes())
    (tmp_path / "broken.yaml").write_text("model: broken\ntraining: {}\n")
    dags = retraining_dags(tmp_path)
    assert sorted(dags) == ["retrain_churn", "retrain_energy", ROLLBACK_DAG_ID]
    rollback = dags[ROLLBACK_DAG_ID]
    assert rollback.params["target"] == "churn-retrain01"
    assert rollback.params.get_param("target").schema["examples"] == [
        "churn-retrain01",
        "churn-retrain02",
        "energy-predictive",
    ]
    assert type(rollback.timetable).__name__ == "NullTimetable"  # manual only
    # Without configs too: it rolls back hand-written DAGs' targets, found through their ledgers.
    alone = retraining_dags(tmp_path / "empty")
    assert sorted(alone) == [ROLLBACK_DAG_ID]
    for dag in (*dags.values(), *alone.values()):  # as the DAG processor does: a failure stops every DAG
        DagSerialization.to_dict(dag)


def test_a_valid_config_the_factory_cannot_build_is_left_out_alone(tmp_path: Path, caplog, monkeypatch):
    from azureml_retrain import factory

    for name in ("churn.yaml", "energy.yaml"):
        (tmp_path / name).write_bytes((CONFIG_DIR / name).read_bytes())
    real_build = factory.build_dag

    def build_dag(config):
        if config.model == "energy":
            raise RuntimeError("a defect")
        return real_build(config)

    monkeypatch.setattr(factory, "build_dag", build_dag)
    assert sorted(retraining_dags(tmp_path)) == ["retrain_churn", ROLLBACK_DAG_ID]
    assert "energy: the config is valid but its DAG could not be built" in caplog.text


def test_a_task_parse_builds_only_its_own_dag_from_only_its_config(tmp_path: Path, monkeypatch):
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID

    for name in ("churn.yaml", "energy.yaml"):
        (tmp_path / name).write_bytes((CONFIG_DIR / name).read_bytes())
    (tmp_path / "broken.yaml").write_text("model: broken\ntraining: {}\n")
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, "retrain_energy")
    assert sorted(retraining_dags(tmp_path)) == ["retrain_energy"]
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, ROLLBACK_DAG_ID)
    assert sorted(retraining_dags(tmp_path)) == ["retrain_churn", "retrain_energy", ROLLBACK_DAG_ID]


def test_the_config_errors_file_names_every_broken_config_and_nothing_else(tmp_path: Path):
    from azureml_retrain.config import raise_config_errors

    (tmp_path / "churn.yaml").write_bytes((CONFIG_DIR / "churn.yaml").read_bytes())
    raise_config_errors(tmp_path)  # nothing broken: nothing raised
    (tmp_path / "broken.yaml").write_text("model: broken\ntraining: {}\n")
    with pytest.raises(ConfigurationError, match=r"(?s)^1 retraining config left out .*\nbroken\.yaml: ") as raised:
        raise_config_errors(tmp_path)
    assert "churn" not in str(raised.value)


def test_run_slug():
    assert run_slug("manual__2026-11-27T13:38:28.203617+00:00") == "manual__2026-11-27T13-38-28.203617-00-00"
    assert run_slug("scheduled__2026-11-19T02:00:00+00:00") == "scheduled__2026-11-19T02-00-00-00-00"


def test_tasks_share_the_form_schemas_instead_of_copying_them(monkeypatch):
    """Airflow deep-copies the DAG's params into every task it builds; the schemas are shared (they
    were most of the copying), the values are each task's own, and the serialised DAG is the same as
    with plain schemas."""
    from airflow.serialization.serialized_objects import DagSerialization

    from azureml_retrain import factory

    dag = build_dag(CHURN)
    task = dag.get_task("evaluate")
    assert task.params.get_param("rules").schema is dag.params.get_param("rules").schema
    assert task.params.get_param("rules") is not dag.params.get_param("rules")
    shared = json.dumps(DagSerialization.to_dict(dag), sort_keys=True)
    monkeypatch.setattr(factory, "SharedSchema", dict)
    plain = build_dag(CHURN)
    assert plain.get_task("evaluate").params.get_param("rules").schema is not plain.params.get_param("rules").schema
    assert json.dumps(DagSerialization.to_dict(plain), sort_keys=True) == shared
