"""Approval of borderline models by a person: the config's ``approval:`` block, the rule that says
whether a run's result needs one, and the decision log's ``approval`` field.

::

    approval:
      when:                          # any rule that fires makes the run wait for a person
        improvement_below: 0.01      # the primary metric beats the champion by less than this
        guard_margin: 0.02           # a guard metric is within this of its bound
        targets: [churn-retrain01]   # always, when the run promotes to one of these
      timeout_minutes: 1440          # then on_timeout decides
      on_timeout: keep               # keep (the current model) or promote

The run waits in the ``approve_promotion`` task (a human-in-the-loop branch) only when the verdict
is to promote. A backfill run never waits unless its conf sets ``approval_in_backfill``; the
``promote: force`` param is itself a person's decision, so it does not wait either.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

APPROVAL_TASK = "approve_promotion"
# The approval task's answer: the decision log's ``approval`` field.
APPROVAL_XCOM_KEY = "approval"
APPROVE_OPTION = "Promote the new model"
REJECT_OPTION = "Keep the current model"
# The HITL form's free-text field: why the person decided as they did.
COMMENT_PARAM = "comment"
BACKFILL_PARAM = "approval_in_backfill"
NOT_NEEDED = "not_needed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApprovalWhen(_Strict):
    """The rules; any one that fires makes a promoting run wait for a person."""

    improvement_below: float | None = Field(
        default=None, ge=0, description="The primary metric beats the champion by less than this (metric units)."
    )
    guard_margin: float | None = Field(default=None, ge=0, description="A guard metric is within this of its bound.")
    targets: list[str] = Field(default_factory=list, description="Always, when the run promotes to one of these.")

    @model_validator(mode="after")
    def _some_rule(self) -> ApprovalWhen:
        if self.improvement_below is None and self.guard_margin is None and not self.targets:
            raise ValueError(
                "give at least one of improvement_below, guard_margin or targets (or drop the approval block)"
            )
        return self


class ApprovalRules(_Strict):
    """A config's ``approval:`` block."""

    when: ApprovalWhen
    """The rules that make a run wait; at least one."""
    timeout_minutes: float = Field(default=1440, gt=0, description="How long the run waits for a person.")
    on_timeout: Literal["keep", "promote"] = Field(
        default="keep", description="What a time-out does: keep the current model, or promote the new one."
    )


def approval_need(
    rules: ApprovalRules | None, plan: dict[str, Any], decision: dict[str, Any], targets: list[str]
) -> tuple[bool, str]:
    """Whether this run's promotion waits for a person, and why (or why not). ``plan`` is the run's
    plan (promote mode, run type), ``decision`` the evaluation's verdict, ``targets`` the names the
    run would promote to. Pure: the same inputs always give the same answer."""
    if rules is None:
        return False, "the config asks for no approval"
    if not decision.get("promote"):
        return False, "the evaluation rejected the model"
    if plan.get("promote") != "auto":
        return False, f"the run's promote param is {plan.get('promote')!r}, itself a person's decision"
    if plan.get("run_type") == "backfill" and not plan.get(BACKFILL_PARAM):
        return False, f"backfill runs do not wait for a person unless their conf sets {BACKFILL_PARAM}"
    reasons: list[str] = []
    named = [t for t in targets if t in rules.when.targets]
    if named:
        reasons.append(f"promoting to {', '.join(named)} always needs approval")
    gain = improvement(decision)
    if rules.when.improvement_below is not None and gain is not None and gain < rules.when.improvement_below:
        reasons.append(
            f"{decision['metric']} improves on the champion by {gain:+.6g}, "
            f"below the approval margin {rules.when.improvement_below:g}"
        )
    for check in decision.get("checks") or []:
        if rules.when.guard_margin is not None and check.get("rule") in ("guard_min", "guard_max"):
            distance = abs(float(check["challenger"]) - float(check["threshold"]))
            if distance < rules.when.guard_margin:
                side = "minimum" if check["rule"] == "guard_min" else "maximum"
                reasons.append(
                    f"{check['metric']} {float(check['challenger']):.6g} is within {rules.when.guard_margin:g} "
                    f"of its {side} {float(check['threshold']):g}"
                )
    if not reasons:
        return False, "no approval rule fired"
    return True, "; ".join(reasons)


def improvement(decision: dict[str, Any]) -> float | None:
    """How much the challenger beats the champion on the primary metric (None: no champion)."""
    metric = decision.get("metric")
    champion = (decision.get("champion") or {}).get(metric)
    challenger = (decision.get("challenger") or {}).get(metric)
    if champion is None or challenger is None:
        return None
    gain = float(challenger) - float(champion)
    return gain if decision.get("higher_is_better", True) else -gain


def not_needed(why: str) -> dict[str, Any]:
    """The decision log's ``approval`` field of a run that did not wait for a person."""
    return {"outcome": NOT_NEEDED, "by": None, "comment": None, "at": None, "why_needed": why}


def approval_outcome(event: dict[str, Any], why_needed: str) -> dict[str, Any]:
    """The decision log's ``approval`` field from the HITL task's response event: approved or
    rejected by a person, or timed out."""
    chosen = list(event.get("chosen_options") or [])
    user = event.get("responded_by_user") or {}
    responded_at: Any = event.get("responded_at")
    timed_out = bool(event.get("timedout"))
    outcome = "timed_out" if timed_out else "approved" if chosen == [APPROVE_OPTION] else "rejected"
    comment = (event.get("params_input") or {}).get(COMMENT_PARAM)
    return {
        "outcome": outcome,
        "by": None if timed_out else (user.get("name") or user.get("id")),
        "comment": None if timed_out else (comment or None),
        "at": responded_at.isoformat() if isinstance(responded_at, datetime) else responded_at,
        "why_needed": why_needed,
    }


def approval_promotes(approval: dict[str, Any], rules: ApprovalRules) -> bool:
    """Whether the person's answer (or the time-out) lets the promotion go ahead."""
    return approval["outcome"] == "approved" or (approval["outcome"] == "timed_out" and rules.on_timeout == "promote")


def approval_skip_reason(approval: dict[str, Any]) -> str:
    """Why a run whose promotion waited for a person did not promote."""
    if approval["outcome"] == "timed_out":
        return "not promoted: nobody answered the approval request in time, so the current model is kept"
    comment = f": {approval['comment']}" if approval.get("comment") else ""
    return f"not promoted: {approval.get('by') or 'a user'} rejected the promotion{comment}"


def approval_body(
    decision: dict[str, Any], plan: dict[str, Any], why_needed: str, history_url: str, on_timeout: str
) -> str:
    """The Markdown the person reads: why they are asked, challenger vs champion, where the
    evaluation is (container/blob, never a SAS) and the model history."""
    challenger = decision.get("challenger") or {}
    champion = decision.get("champion") or {}
    metric = decision.get("metric")
    rows = ["| metric | challenger | champion |", "|---|---|---|"]
    for name in sorted(set(challenger) | set(champion), key=lambda n: (n != metric, n)):
        shown = f"**{name}**" if name == metric else name
        rows.append(f"| {shown} | {_cell(challenger.get(name))} | {_cell(champion.get(name))} |")
    window = plan.get("window") or {}
    timeout = "the current model is kept" if on_timeout == "keep" else "the new model is promoted"
    return "\n".join(
        [
            f"**Why you are asked:** {why_needed}.",
            "",
            f"**Evaluation:** {decision.get('reason', '')}",
            "",
            *rows,
            "",
            f"Window: {window.get('start')} to {window.get('end')}",
            "",
            f"Evaluation CSV: `{plan.get('evaluation')}`",
            "",
            f"Model history: [{history_url}]({history_url})",
            "",
            f"Without an answer in time, {timeout}.",
        ]
    )


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
