"""When a promoting run waits for a person (a pure function of the verdict and the run), the approval
task's answer as the decision log records it, and what the person reads."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from azureml_retrain.approval import (
    APPROVAL_TASK,
    APPROVE_OPTION,
    REJECT_OPTION,
    ApprovalRules,
    approval_body,
    approval_need,
    approval_outcome,
)
from azureml_retrain.config import parse_config
from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.factory import CLASSIC_TARGETS_TASK, SKIP_TASK, choose_branches, skip_reason
from devtools.services import ROOT

CHURN = yaml.safe_load((ROOT / "dags" / "retraining" / "churn.yaml").read_text())
TARGETS = ["churn-retrain01", "churn-retrain02"]
PLAN = {"promote": "auto", "run_type": "manual", "window": {"start": "s", "end": "e"}, "evaluation": "models/x.csv"}


def verdict(
    auc: float = 0.88, champion: float | None = 0.86, accuracy: float = 0.81, promote: bool = True
) -> dict[str, Any]:
    checks: list[dict[str, Any]] = [
        {"rule": "guard_min", "metric": "Accuracy", "challenger": accuracy, "threshold": 0.6, "passed": True}
    ]
    return {
        "promote": promote,
        "reason": "promote: ...",
        "metric": "AUC",
        "higher_is_better": True,
        "challenger": {"AUC": auc, "Accuracy": accuracy},
        "champion": None if champion is None else {"AUC": champion},
        "checks": checks,
    }


def rules(**when: Any) -> ApprovalRules:
    return ApprovalRules.model_validate({"when": when})


@pytest.mark.parametrize(
    ("when", "decision", "needed", "why"),
    [
        ({"improvement_below": 0.05}, verdict(auc=0.88, champion=0.86), True, "AUC improves on the champion by +0.02"),
        ({"improvement_below": 0.01}, verdict(auc=0.88, champion=0.86), False, "no approval rule fired"),
        ({"improvement_below": 0.05}, verdict(champion=None), False, "no approval rule fired"),
        ({"guard_margin": 0.25}, verdict(accuracy=0.81), True, "Accuracy 0.81 is within 0.25 of its minimum 0.6"),
        ({"guard_margin": 0.1}, verdict(accuracy=0.81), False, "no approval rule fired"),
        ({"targets": ["churn-retrain02"]}, verdict(), True, "promoting to churn-retrain02 always needs approval"),
        ({"targets": ["churn-retrain02"]}, verdict(promote=False), False, "the evaluation rejected the model"),
    ],
)
def test_the_need_for_approval_follows_the_rules(
    when: dict[str, Any], decision: dict[str, Any], needed: bool, why: str
) -> None:
    got_needed, got_why = approval_need(rules(**when), PLAN, decision, TARGETS)
    assert got_needed is needed and why in got_why


def test_lower_is_better_metrics_improve_downwards() -> None:
    decision = verdict() | {"metric": "RMSE", "higher_is_better": False, "challenger": {"RMSE": 9.0}}
    decision["champion"] = {"RMSE": 10.0}
    assert approval_need(rules(improvement_below=2), PLAN, decision, TARGETS)[0]
    assert not approval_need(rules(improvement_below=0.5), PLAN, decision, TARGETS)[0]


@pytest.mark.parametrize(
    ("plan", "why"),
    [
        (PLAN | {"promote": "force"}, "promote param is 'force'"),
        (PLAN | {"run_type": "backfill"}, "backfill runs do not wait"),
    ],
)
def test_forced_and_backfill_runs_do_not_wait(plan: dict[str, Any], why: str) -> None:
    needed, got_why = approval_need(rules(targets=TARGETS), plan, verdict(), TARGETS)
    assert not needed and why in got_why


def test_a_backfill_run_waits_when_its_conf_asks() -> None:
    plan = PLAN | {"run_type": "backfill", "approval_in_backfill": True}
    assert approval_need(rules(targets=TARGETS), plan, verdict(), TARGETS)[0]


def test_no_rules_never_wait() -> None:
    assert approval_need(None, PLAN, verdict(), TARGETS) == (False, "the config asks for no approval")


def churn_with(approval: Any) -> Any:
    data = copy.deepcopy(CHURN)
    data["approval"] = approval
    return parse_config(data, "churn.yaml")


def test_the_evaluation_branches_to_the_approval_task_then_the_answer_decides() -> None:
    config = churn_with({"when": {"targets": ["churn-retrain01"]}, "on_timeout": "keep"})
    decision = verdict()
    assert choose_branches(config, PLAN, decision) == [APPROVAL_TASK]
    approved = {"outcome": "approved", "by": "admin", "comment": None, "at": "t", "why_needed": "w"}
    assert choose_branches(config, PLAN, decision, approved) == [CLASSIC_TARGETS_TASK]
    rejected = approved | {"outcome": "rejected", "comment": "too close"}
    assert choose_branches(config, PLAN, decision, rejected) == [SKIP_TASK]
    assert skip_reason(PLAN, decision, rejected) == "not promoted: admin rejected the promotion: too close"
    timed_out = approved | {"outcome": "timed_out", "by": None}
    assert choose_branches(config, PLAN, decision, timed_out) == [SKIP_TASK]
    promoting = churn_with({"when": {"targets": ["churn-retrain01"]}, "on_timeout": "promote"})
    assert choose_branches(promoting, PLAN, decision, timed_out) == [CLASSIC_TARGETS_TASK]
    # Without approval rules the branches are what they always were.
    assert choose_branches(parse_config(copy.deepcopy(CHURN), "churn.yaml"), PLAN, decision) == [CLASSIC_TARGETS_TASK]


def test_the_answer_says_who_decided_when_and_why() -> None:
    at = datetime(2026, 11, 27, 10, tzinfo=UTC)
    answer = approval_outcome(
        {
            "chosen_options": [REJECT_OPTION],
            "params_input": {"comment": "too close"},
            "responded_by_user": {"id": "admin", "name": "admin"},
            "responded_at": at,
        },
        "why",
    )
    assert answer == {
        "outcome": "rejected",
        "by": "admin",
        "comment": "too close",
        "at": at.isoformat(),
        "why_needed": "why",
    }
    approved = approval_outcome({"chosen_options": [APPROVE_OPTION], "responded_by_user": {"id": "u"}}, "why")
    assert (approved["outcome"], approved["by"]) == ("approved", "u")
    timed_out = approval_outcome(
        {"chosen_options": [REJECT_OPTION], "responded_by_user": None, "responded_at": at, "timedout": True}, "why"
    )
    assert (timed_out["outcome"], timed_out["by"], timed_out["comment"]) == ("timed_out", None, None)


def test_the_body_shows_the_metrics_the_evaluation_and_the_history() -> None:
    body = approval_body(verdict(), PLAN, "AUC improves by +0.02", "/model-history/dags/retrain_churn", "keep")
    assert "| **AUC** | 0.88 | 0.86 |" in body and "| Accuracy | 0.81 | - |" in body
    assert "`models/x.csv`" in body and "sig=" not in body
    assert "(/model-history/dags/retrain_churn)" in body and "the current model is kept" in body


@pytest.mark.parametrize(
    ("approval", "message"),
    [
        ({"when": {}}, r"approval\.when: .*give at least one of improvement_below, guard_margin or targets"),
        ({"when": {"targets": ["nope"]}}, r"approval\.when\.targets: \['nope'\] are not targets of this config"),
        ({"when": {"improvement_below": -1}}, r"approval\.when\.improvement_below: .*greater than or equal to 0"),
        ({"when": {"targets": TARGETS}, "on_timeout": "wait"}, r"approval\.on_timeout: .*'keep' or 'promote'"),
        ({"when": {"targets": TARGETS}, "timeout_minutes": 0}, r"approval\.timeout_minutes: .*greater than 0"),
    ],
)
def test_bad_approval_blocks_name_the_field_and_the_fix(approval: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        churn_with(approval)


def test_a_guard_margin_needs_guards() -> None:
    data = copy.deepcopy(CHURN)
    data["evaluation"]["guards"] = []
    data["approval"] = {"when": {"guard_margin": 0.1}}
    with pytest.raises(ConfigurationError, match=r"approval\.when\.guard_margin: the evaluation has no guards"):
        parse_config(data, "churn.yaml")
