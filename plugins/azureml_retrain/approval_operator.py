"""The approval task of a retraining DAG whose config has ``approval:`` rules (imported only by those
DAGs: the standard provider's HITL module is not free to import)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator, HITLOperator

from azureml_retrain.approval import (
    APPROVAL_XCOM_KEY,
    APPROVE_OPTION,
    COMMENT_PARAM,
    REJECT_OPTION,
    approval_body,
    approval_need,
    approval_outcome,
)

if TYPE_CHECKING:
    from azureml_retrain.config import RetrainingConfig

# Where the model history plugin serves a DAG's page (plugins/model_history_plugin.py).
HISTORY_PATH = "/model-history/dags/{dag_id}"


def history_url(dag_id: str) -> str:
    """The model history page of ``dag_id`` at the API server (relative when no base_url is set)."""
    from airflow.sdk import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return base + HISTORY_PATH.format(dag_id=dag_id)


class PromotionApprovalOperator(HITLBranchOperator):
    """Waits in the UI's required actions for a person to approve or reject the evaluated model, then
    branches like ``evaluate`` would have: to the promotions, or to ``skip_promotion``. A time-out
    takes the config's ``on_timeout`` answer. The answer (the decision log's ``approval`` field) is
    pushed to XCom under ``approval``.

    :param config: the retraining config (with ``approval`` rules).
    """

    def __init__(self, *, config: RetrainingConfig, **kwargs: Any) -> None:
        from airflow.sdk import Param

        kwargs.pop("params", None)
        rules = config.approval
        if rules is None:
            raise ValueError(f"{config.model}: the config has no approval rules")
        super().__init__(
            subject=f"Promote the new {config.model} model?",
            options=[APPROVE_OPTION, REJECT_OPTION],
            defaults=[APPROVE_OPTION if rules.on_timeout == "promote" else REJECT_OPTION],
            response_timeout=timedelta(minutes=rules.timeout_minutes),
            # Airflow passes the DAG's params in too: they are not the form's (and a response must
            # name exactly the form's params), so only the comment is.
            params={
                COMMENT_PARAM: Param(
                    None,
                    type=["null", "string"],
                    title="Comment",
                    description="Why you decided so (recorded in the decision log).",
                ),
            },
            **kwargs,
        )
        self.config = config

    def _run_state(self, context: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
        from azureml_retrain.factory import plan_and_verdict

        plan, verdict = plan_and_verdict(context["ti"])
        _, why = approval_need(self.config.approval, plan, verdict, [t.name for t in self.config.targets])
        return plan, verdict, why

    def execute(self, context: Any) -> Any:
        plan, verdict, why = self._run_state(context)
        on_timeout = self.config.approval.on_timeout if self.config.approval else "keep"
        self.body = approval_body(verdict, plan, why, history_url(self.config.dag_id), on_timeout)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from azureml_retrain.factory import SKIP_TASK, choose_branches, record_skip

        # The base class checks the answer (and raises on an error event); its branching is ours.
        HITLOperator.execute_complete(self, context, event)
        plan, verdict, why = self._run_state(context)
        answer = approval_outcome(event, why)
        self.log.info("approval: %s", answer)
        context["ti"].xcom_push(key=APPROVAL_XCOM_KEY, value=answer)
        branches = choose_branches(self.config, plan, verdict, answer)
        if branches == [SKIP_TASK]:
            self.log.info(
                "not promoted: %s",
                record_skip(self.config, context["ti"], context["run_id"], plan, verdict, approval=answer),
            )
        return self.do_branch(context, branches)
