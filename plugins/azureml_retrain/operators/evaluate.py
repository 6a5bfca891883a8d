"""EvaluateModelOperator: read Studio's evaluation CSV and decide whether the challenger is promoted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, BranchMixIn
from airflow.sdk.exceptions import AirflowFailException

from azureml_retrain.evaluation import (
    MAX_EVALUATION_BYTES,
    decide,
    parse_champion_metrics,
    parse_evaluation_csv,
    parse_rules,
    resolve_evaluation_location,
)
from azureml_retrain.exceptions import ConfigurationError, EvaluationError
from azureml_retrain.lazy import cached_property
from azureml_retrain.storage import storage_call, wasb_hook

if TYPE_CHECKING:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
    from airflow.sdk import Context

    from azureml_retrain.blobs import BlobLocation
    from azureml_retrain.lineage import Lineage

DECISION_XCOM_KEY = "decision"


def _task_ids(value: str | Sequence[str] | None, field_name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ConfigurationError(f"{field_name}: expected a task id or a list of task ids, got {value!r}")


class EvaluateModelOperator(BaseOperator, BranchMixIn):
    """Decide whether the model a BES training job produced (challenger) replaces the serving one (champion).

    Reads the Evaluate Model CSV (``output2`` of the training web service, by default) through
    ``WasbHook``, judges **data row 0** (Studio's left input: the scored model just trained; a second
    row is the "scored dataset to compare" and is ignored unless ``evaluation_row`` picks it), applies
    ``rules`` and compares with ``champion_metrics``. See :mod:`azureml_retrain.evaluation` for the rule
    format, aliases (``f1``, ``rmse``, ``r2``, ``auc`` ...) and champion semantics.

    Modes (pick by arguments; they combine):

    * **Decision only** (default): returns the decision (also the ``return_value`` XCom); downstream
      tasks branch or promote on ``decision["promote"]`` themselves.
    * **Gate**: ``fail_on_reject=True`` fails the task with ``AirflowFailException`` (no retry: the
      numbers will not change) carrying the reason, so nothing downstream promotes.
    * **Branch**: ``promote_task_ids`` makes it a branch operator (Airflow's ``BranchMixIn``, as in
      ``BaseBranchOperator``): on promote it follows ``promote_task_ids``, on reject it follows
      ``reject_task_ids`` (may be empty); every other *direct* downstream task is skipped. It returns
      the followed task ids, like ``BranchPythonOperator`` (Airflow keeps that ``return_value`` only
      when no task had to be skipped, so read the ``"decision"`` key, not ``return_value``). With
      ``fail_on_reject=True`` a rejection fails instead of branching (then ``reject_task_ids`` must be
      empty). Subclasses may override :meth:`choose_branch` to apply a run policy on top of the verdict.

    :param evaluation_results: where the CSV is: ``"container/path.csv"``, ``{"container", "blob_name"}``
        or the SubmitBesJob result ``{"job_id", "outputs": {...}}`` (e.g. ``submit.output``). (templated)
    :param rules: the rules dict (or its JSON text, e.g. from a DAG param). (templated)
    :param champion_metrics: the serving model's metrics; ``None``/``{}`` means no champion, and the
        first model is judged on ``threshold`` and ``guards`` only. (templated)
    :param output_name: which BES output holds the evaluation CSV when ``evaluation_results`` is a
        SubmitBesJob result. (templated)
    :param wasb_conn_id: the wasb connection of the storage account. (templated)
    :param evaluation_row: 0-based data row to judge (default 0, the scored model).
    :param promote_task_ids: task id(s) to follow when the challenger is promoted; enables branching.
    :param reject_task_ids: task id(s) to follow when it is rejected (branch mode only).
    :param fail_on_reject: fail the task when the challenger is rejected.
    :returns: the decision (without ``promote_task_ids``); in branch mode the followed task ids,
        which Airflow keeps only when no task had to be skipped: read the ``decision`` key instead.
    :xcom decision: the decision (:data:`DECISION_XCOM_KEY`), in every mode: a JSON-safe dict
        ``{"promote", "reason", "metric", "higher_is_better", "challenger", "champion", "checks",
        "task", "evaluation_blob", "evaluation_row"}``; each check is ``{"rule", "metric", "challenger",
        "threshold" | "champion", "passed", "detail", ...}``. Not pushed with ``do_xcom_push=False``.
    :raises AirflowFailException: ``fail_on_reject=True`` and the challenger was rejected; no retries.
    :raises ConfigurationError: ``rules``, ``champion_metrics`` or ``evaluation_results`` are invalid
        (the task ids and ``evaluation_row`` are checked when the DAG is parsed); no retries.
    :raises EvaluationError: the CSV is missing, too large or not an Evaluate Model CSV with the
        rules' metrics (no data row, a missing column, NaN), or the champion lacks the rules' metric
        (unless the rules skip that comparison); retried.
    """

    template_fields: Sequence[str] = (
        "evaluation_results",
        "rules",
        "champion_metrics",
        "output_name",
        "wasb_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "evaluation_results": "json",
        "rules": "json",
        "champion_metrics": "json",
    }
    ui_color = "#e8f0d8"
    # Like BaseBranchOperator: tells the scheduler this task may skip its downstream tasks (read by
    # NotPreviouslySkippedDep when tasks are cleared).
    inherits_from_skipmixin = True

    def __init__(
        self,
        *,
        evaluation_results: Any,
        rules: dict[str, Any] | str,
        champion_metrics: dict[str, Any] | str | None = None,
        output_name: str = "output2",
        wasb_conn_id: str = "wasb_default",
        evaluation_row: int = 0,
        promote_task_ids: str | Sequence[str] | None = None,
        reject_task_ids: str | Sequence[str] | None = None,
        fail_on_reject: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.evaluation_results = evaluation_results
        self.rules = rules
        self.champion_metrics = champion_metrics
        self.output_name = output_name
        self.wasb_conn_id = wasb_conn_id
        self.evaluation_row = evaluation_row
        self.promote_task_ids = _task_ids(promote_task_ids, "promote_task_ids")
        self.reject_task_ids = _task_ids(reject_task_ids, "reject_task_ids")
        self.fail_on_reject = fail_on_reject
        #: This execution's decision, for the OpenLineage events.
        self._decision: dict[str, Any] | None = None
        if self.reject_task_ids and not self.promote_task_ids:
            raise ConfigurationError("reject_task_ids: only used in branch mode; also set promote_task_ids")
        if self.reject_task_ids and fail_on_reject:
            raise ConfigurationError("reject_task_ids: cannot be followed when fail_on_reject=True fails the task")
        if isinstance(evaluation_row, bool) or not isinstance(evaluation_row, int) or evaluation_row < 0:
            raise ConfigurationError(f"evaluation_row: expected a 0-based row number, got {evaluation_row!r}")

    @property
    def branch_mode(self) -> bool:
        return bool(self.promote_task_ids)

    @cached_property
    def hook(self) -> WasbHook:
        return wasb_hook(self.wasb_conn_id)

    def read_evaluation_blob(self, location: BlobLocation) -> bytes:
        """Download the evaluation CSV; a missing blob or an oversized one is an EvaluationError."""
        from azure.core.exceptions import ResourceNotFoundError

        with storage_call(self.wasb_conn_id, f"reading the evaluation results {location}"):
            try:
                downloader = self.hook.download(location.container, location.blob_name)
            except ResourceNotFoundError:
                raise EvaluationError(
                    f"{location}: blob not found through connection {self.wasb_conn_id!r}; did the training job "
                    f"write its evaluation output there (output_name={self.output_name!r})?"
                ) from None
            size = int(downloader.size or 0)
            if size > MAX_EVALUATION_BYTES:
                raise EvaluationError(
                    f"{location}: {size} bytes is too large for an Evaluate Model CSV; is this the right output?"
                )
            data: bytes = downloader.readall()
        return data

    def evaluate(self) -> dict[str, Any]:
        """Validate the rules, read the CSV and return the decision (no XCom, no branching)."""
        rules = parse_rules(self.rules)
        champion = parse_champion_metrics(self.champion_metrics)
        location = resolve_evaluation_location(self.evaluation_results, self.output_name)
        self.log.info(
            "Judging %s (row %d) on %s (%s is better); champion %s",
            location,
            self.evaluation_row,
            rules.metric,
            "higher" if rules.higher_is_better else "lower",
            "recorded" if champion else "none: thresholds only",
        )
        results = parse_evaluation_csv(self.read_evaluation_blob(location), str(location), self.evaluation_row)
        if results.row_count > 1:
            self.log.info("%s has %d data rows; judging row %d", location, results.row_count, results.row)
        return decide(results, rules, champion)

    def execute(self, context: Context) -> Any:
        decision = self.evaluate()
        self._decision = decision
        self.log.info("Decision: %s", decision["reason"])
        if self.do_xcom_push:
            context["ti"].xcom_push(key=DECISION_XCOM_KEY, value=decision)
        if not decision["promote"] and self.fail_on_reject:
            raise AirflowFailException(f"Challenger rejected: {decision['reason']}")
        if not self.branch_mode:
            return decision
        return self.do_branch(context, self.choose_branch(context, decision) or None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """The evaluation CSV as input; the challenger's and champion's metrics and the verdict in the
        ``azuremlModelEvaluation`` run facet (also when ``fail_on_reject`` fails the task)."""
        from azureml_retrain.lineage import EVALUATION_FACET, blob_dataset, evaluation_facet, operator_lineage
        from azureml_retrain.storage import StorageAccount

        location = resolve_evaluation_location(self.evaluation_results, self.output_name)
        facets = {EVALUATION_FACET: evaluation_facet(self._decision)} if self._decision else {}
        return operator_lineage(
            inputs=[blob_dataset(StorageAccount(self.wasb_conn_id).account_name, location)], run_facets=facets
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage:
        return self.get_openlineage_facets_on_complete(task_instance)

    def choose_branch(self, context: Context, decision: dict[str, Any]) -> list[str]:
        """The task ids to follow in branch mode: ``promote_task_ids`` on promote, else ``reject_task_ids``.

        Override it to put a policy of the run (a manual override, a backfill rule) on top of the verdict.
        """
        return self.promote_task_ids if decision["promote"] else self.reject_task_ids
