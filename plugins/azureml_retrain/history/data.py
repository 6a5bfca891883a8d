"""What the model history view shows, read from the retraining configs and the promotion ledgers.

The configs in ``<dags folder>/retraining/`` (each built into its DAG by the DAG file of the same name)
say which targets exist and where their ledgers are; the ledgers are read with
:class:`~azureml_retrain.ledger.PromotionLedger`. Everything here is safe to show: model URIs lose
their query string (a SAS token would be there) and free text is passed through
:func:`~azureml_retrain.redaction.redact`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azureml_retrain.config import RetrainingConfig, scan_configs
from azureml_retrain.evaluation import KNOWN_METRICS
from azureml_retrain.ledger import LedgerRecord, PromotionLedger
from azureml_retrain.redaction import redact, strip_query

CONFIG_SUBFOLDER = "retraining"
# The plot's x axis: each model at the end of its data window (spans drawn), or when it was recorded.
AXES = ("window", "recorded")
DEFAULT_AXIS = "window"
# Approval outcomes drawn on the plot ("not_needed" draws nothing).
APPROVAL_OUTCOMES = ("approved", "rejected", "timed_out")


def config_folder() -> Path:
    """Where the retraining configs are: ``retraining/`` in Airflow's DAGs folder."""
    from airflow.configuration import conf

    return Path(conf.get("core", "dags_folder")).expanduser() / CONFIG_SUBFOLDER


@dataclass(frozen=True)
class Catalog:
    """The retraining configs (and the files that failed to load, with why)."""

    configs: tuple[RetrainingConfig, ...]
    errors: tuple[str, ...] = ()

    def config_of_target(self, target: str) -> RetrainingConfig | None:
        return next((c for c in self.configs if any(t.name == target for t in c.targets)), None)

    def config_of_dag(self, dag_id: str) -> RetrainingConfig | None:
        return next((c for c in self.configs if c.dag_id == dag_id), None)


def load_catalog(folder: Path | None = None) -> Catalog:
    """Every config in ``folder`` (default: :func:`config_folder`); a broken file does not hide the others."""
    folder = folder or config_folder()
    if not folder.is_dir():
        return Catalog((), (f"{folder.name}: no such folder of retraining configs",))
    scan = scan_configs(folder)
    return Catalog(scan.configs, scan.errors)


def safe_uri(uri: str | None) -> str | None:
    """A model URI fit to show: no query string (SAS), nothing that looks like a key."""
    return strip_query(redact(uri)) if uri else uri


def _numbers(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        return {}
    return {
        str(name): float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _timestamp(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _window(value: Any) -> tuple[str, str] | None:
    if isinstance(value, Mapping) and value.get("start") and value.get("end"):
        return str(value["start"]), str(value["end"])
    return None


def window_moments(window: tuple[str, str] | None) -> tuple[datetime, datetime] | None:
    """The window's start and end as moments (None: no window, or one that does not parse)."""
    if window is None:
        return None
    start, end = _timestamp(window[0]), _timestamp(window[1])
    return (start, end) if start and end else None


def _text(value: Any) -> str | None:
    return redact(str(value)) if value else None


@dataclass(frozen=True)
class Change:
    """One ledger record: the target started serving ``model_uri``."""

    kind: str
    at: datetime
    model_uri: str
    previous_model_uri: str | None
    metrics: dict[str, float]
    window: tuple[str, str] | None
    dag_id: str | None
    run_id: str | None
    reason: str | None
    # What the model was trained on (``container/blob``), and the run that trained it (its ``train``
    # task shows the inputs too): from this record, or from an earlier record of the same model.
    inputs: tuple[str, ...] = ()
    trained_by: tuple[str, str] | None = None

    @classmethod
    def from_record(cls, record: LedgerRecord) -> Change:
        trained = record.kind == "promotion" and record.dag_id and record.run_id
        return cls(
            kind=record.kind,
            at=_timestamp(record.recorded_at) or datetime.fromtimestamp(0, UTC),
            model_uri=safe_uri(record.model_uri) or "",
            previous_model_uri=safe_uri(record.previous_model_uri),
            metrics=_numbers(record.metrics),
            window=_window(record.window),
            dag_id=record.dag_id,
            run_id=record.run_id,
            reason=redact(record.reason) if record.reason else None,
            inputs=tuple(safe_uri(str(i)) or "" for i in record.inputs or () if i),
            trained_by=(str(record.dag_id), str(record.run_id)) if trained else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "recorded_at": self.at.isoformat(),
            "model_uri": self.model_uri,
            "previous_model_uri": self.previous_model_uri,
            "metrics": self.metrics,
            "window": {"start": self.window[0], "end": self.window[1]} if self.window else None,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "reason": self.reason,
            "inputs": list(self.inputs),
            "trained_by": {"dag_id": self.trained_by[0], "run_id": self.trained_by[1]} if self.trained_by else None,
        }


@dataclass(frozen=True)
class Evaluation:
    """A challenger a run evaluated that did not change this target (from the DAG's decision log)."""

    at: datetime
    run_id: str | None
    promote: bool
    reason: str | None
    metrics: dict[str, float]
    window: tuple[str, str] | None

    @classmethod
    def from_decision(cls, entry: Mapping[str, Any]) -> Evaluation | None:
        at = _timestamp(entry.get("recorded_at"))
        verdict = entry.get("decision")
        if at is None or not isinstance(verdict, Mapping):
            return None
        reason = entry.get("reason")
        return cls(
            at=at,
            run_id=str(entry["run_id"]) if entry.get("run_id") else None,
            promote=bool(entry.get("promote")),
            reason=redact(str(reason)) if reason else None,
            metrics=_numbers(verdict.get("challenger")),
            window=_window(entry.get("window")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "recorded_at": self.at.isoformat(),
            "run_id": self.run_id,
            "promote": self.promote,
            "reason": self.reason,
            "metrics": self.metrics,
            "window": {"start": self.window[0], "end": self.window[1]} if self.window else None,
        }


@dataclass(frozen=True)
class Approval:
    """A run's approval step that decided something: approved, rejected or timed out (decision log)."""

    outcome: str
    at: datetime
    by: str | None
    comment: str | None
    why_needed: str | None
    run_id: str | None
    window: tuple[str, str] | None

    @classmethod
    def from_decision(cls, entry: Mapping[str, Any]) -> Approval | None:
        approval = entry.get("approval")
        if not isinstance(approval, Mapping) or approval.get("outcome") not in APPROVAL_OUTCOMES:
            return None
        # A time-out has no one who decided, maybe no time: the run's log entry is then the moment.
        at = _timestamp(approval.get("at")) if approval.get("at") else _timestamp(entry.get("recorded_at"))
        if at is None:
            return None
        return cls(
            outcome=str(approval["outcome"]),
            at=at,
            by=_text(approval.get("by")),
            comment=_text(approval.get("comment")),
            why_needed=_text(approval.get("why_needed")),
            run_id=str(entry["run_id"]) if entry.get("run_id") else None,
            window=_window(entry.get("window")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "at": self.at.isoformat(),
            "by": self.by,
            "comment": self.comment,
            "why_needed": self.why_needed,
            "run_id": self.run_id,
            "window": {"start": self.window[0], "end": self.window[1]} if self.window else None,
        }


@dataclass(frozen=True)
class TargetHistory:
    """Everything the view shows for one target, with ``metric`` the one plotted."""

    config: RetrainingConfig
    target: str
    changes: tuple[Change, ...]
    evaluations: tuple[Evaluation, ...]
    metric: str
    metrics: tuple[str, ...] = field(default=())
    approvals: tuple[Approval, ...] = ()
    axis: str = DEFAULT_AXIS

    @property
    def dag_id(self) -> str:
        return self.config.dag_id

    @property
    def target_kind(self) -> str:
        return next(t.kind for t in self.config.targets if t.name == self.target)

    @property
    def serving(self) -> Change | None:
        return self.changes[-1] if self.changes else None

    @property
    def higher_is_better(self) -> bool | None:
        if self.metric == self.config.evaluation.metric and self.config.evaluation.higher_is_better is not None:
            return self.config.evaluation.higher_is_better
        return KNOWN_METRICS.get(self.metric)

    def position(self, at: datetime, window: tuple[str, str] | None) -> datetime | None:
        """Where an item recorded ``at`` for ``window`` sits on the x axis (None: nowhere on the
        window axis, for an item without a window)."""
        if self.axis == "recorded":
            return at
        moments = window_moments(window)
        return moments[1] if moments else None

    @property
    def threshold(self) -> float | None:
        """The config's promotion threshold, when it is about the plotted metric."""
        return self.config.evaluation.threshold if self.metric == self.config.evaluation.metric else None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "dag_id": self.dag_id,
            "target": self.target,
            "target_kind": self.target_kind,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "threshold": self.threshold,
            "metrics": list(self.metrics),
            "axis": self.axis,
            "changes": [c.to_json() for c in self.changes],
            "evaluations": [e.to_json() for e in self.evaluations],
            "approvals": [a.to_json() for a in self.approvals],
        }


def build_history(
    config: RetrainingConfig,
    target: str,
    records: Iterable[LedgerRecord],
    decisions: Iterable[Mapping[str, Any]] = (),
    metric: str | None = None,
    *,
    axis: str | None = None,
) -> TargetHistory:
    """The view of ``target`` from its ledger ``records`` and its DAG's ``decisions``.

    ``metric`` picks the plotted metric among those recorded (default: the config's evaluation metric);
    ``axis`` one of :data:`AXES` (default: the data window).
    Evaluations are the runs of the DAG that did not change this target (rejected, not promoted, or
    refused by the ledger's guard); promoted runs are already in the ledger. Approvals are the runs'
    approval steps that approved, rejected or timed out, whichever target they were for.
    """
    decisions = list(decisions)
    changes = _with_training(sorted((Change.from_record(r) for r in records), key=lambda c: c.at))
    changed_by = {c.run_id for c in changes if c.run_id}
    evaluations = tuple(
        sorted(
            (
                e
                for e in (Evaluation.from_decision(d) for d in decisions)
                if e is not None and e.metrics and e.run_id not in changed_by
            ),
            key=lambda e: e.at,
        )
    )
    default = config.evaluation.metric
    available = sorted(
        {default, *(m for c in changes for m in c.metrics), *(m for e in evaluations for m in e.metrics)}
    )
    chosen = metric if metric in available else default
    approvals = tuple(sorted((a for a in map(Approval.from_decision, decisions) if a is not None), key=lambda a: a.at))
    return TargetHistory(
        config,
        target,
        changes,
        evaluations,
        chosen,
        tuple(available),
        approvals,
        axis if axis in AXES else DEFAULT_AXIS,
    )


def _with_training(changes: list[Change]) -> tuple[Change, ...]:
    """``changes``, each that does not say what its model was trained on (a rollback, the baseline of
    a model promoted before) taking it from an earlier change of the same model that does."""
    known: dict[str, Change] = {}
    result = []
    for recorded in changes:
        source = known.get(recorded.model_uri)
        change = recorded
        if source is not None and not change.inputs and change.trained_by is None:
            change = replace(change, inputs=source.inputs, trained_by=source.trained_by)
        if change.inputs or change.trained_by:
            known[change.model_uri] = change
        result.append(change)
    return tuple(result)


def read_history(
    config: RetrainingConfig, target: str, metric: str | None = None, axis: str | None = None
) -> TargetHistory:
    """:func:`build_history` from the ledger in blob storage."""
    ledger = PromotionLedger(config.data.wasb_conn_id, config.ledger_container)
    return build_history(config, target, ledger.records(target), ledger.decisions(config.dag_id), metric, axis=axis)
