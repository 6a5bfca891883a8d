"""EvaluateModelOperator without Airflow's machinery: a fake blob reader and a minimal task instance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pendulum
import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, DownstreamTasksSkipped

from azureml_retrain.exceptions import ConfigurationError, EvaluationError
from azureml_retrain.operators.evaluate import DECISION_XCOM_KEY, EvaluateModelOperator

BLOB = "results/job-7/evaluation.csv"
BINARY_CSV = (
    b"Accuracy,Precision,Recall,F-Score,AUC,Average Log Loss,Training Log Loss\r\n"
    b"0.83,0.79,0.71,0.748,0.88,0.41,37.5\r\n"
)
PROMOTING = {"metric": "auc", "threshold": 0.75}
REJECTING = {"metric": "auc", "threshold": 0.95}


@dataclass
class FakeTI:
    """The two things the operator and Airflow's BranchMixIn use from a task instance."""

    task: Any
    map_index: int = -1
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def make(dag_id: str = "evaluate_unit", **kwargs: Any) -> EvaluateModelOperator:
    """An operator wired to two downstream tasks, with the blob read stubbed out."""
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        kwargs.setdefault("evaluation_results", BLOB)
        kwargs.setdefault("rules", PROMOTING)
        op = EvaluateModelOperator(task_id="evaluate", **kwargs)
        op >> [EmptyOperator(task_id="promote"), EmptyOperator(task_id="keep_champion")]
    return op


def run(op: EvaluateModelOperator, data: bytes = BINARY_CSV) -> tuple[Any, FakeTI]:
    ti = FakeTI(task=op)
    with mock.patch.object(EvaluateModelOperator, "read_evaluation_blob", return_value=data) as read:
        result = op.execute(context={"ti": ti})  # type: ignore[typeddict-item]
    read.assert_called_once()
    return result, ti


class TestInit:
    def test_template_fields(self):
        assert set(EvaluateModelOperator.template_fields) == {
            "evaluation_results",
            "rules",
            "champion_metrics",
            "output_name",
            "wasb_conn_id",
        }
        assert EvaluateModelOperator.template_fields_renderers == {
            "evaluation_results": "json",
            "rules": "json",
            "champion_metrics": "json",
        }

    def test_only_assigns(self):
        op = make(rules="{{ params.rules }}", champion_metrics="{{ ti.xcom_pull('ledger') }}")
        assert op.rules == "{{ params.rules }}"  # not validated before rendering
        assert "hook" not in op.__dict__  # no hook, no I/O
        assert op.promote_task_ids == [] and not op.branch_mode

    def test_task_ids_accept_a_string(self):
        op = make(promote_task_ids="promote", reject_task_ids=["keep_champion"])
        assert op.promote_task_ids == ["promote"] and op.reject_task_ids == ["keep_champion"]
        assert op.branch_mode
        assert op.inherits_from_skipmixin is True

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"reject_task_ids": "keep_champion"}, "reject_task_ids: only used in branch mode"),
            (
                {"promote_task_ids": "promote", "reject_task_ids": "keep_champion", "fail_on_reject": True},
                "reject_task_ids: cannot be followed when fail_on_reject=True",
            ),
            ({"promote_task_ids": [1]}, "promote_task_ids: expected a task id or a list of task ids"),
            ({"evaluation_row": -1}, "evaluation_row: expected a 0-based row number, got -1"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], message: str):
        with pytest.raises(ConfigurationError, match=message):
            make(**kwargs)


class TestDecisionMode:
    def test_returns_and_pushes_the_decision(self):
        result, ti = run(make())
        assert result["promote"] is True
        assert result["metric"] == "AUC"
        assert result["evaluation_blob"] == BLOB
        assert result["task"] == "binary"
        assert ti.pushed == {DECISION_XCOM_KEY: result}
        json.dumps(result, allow_nan=False)

    def test_rejection_is_just_a_decision(self):
        result, _ = run(make(rules=REJECTING))
        assert result["promote"] is False
        assert (
            result["reason"]
            == "reject: AUC 0.88 fails threshold >= 0.95; no champion recorded, judged on thresholds only"
        )

    def test_champion_and_bes_result(self):
        bes = {"job_id": "j", "outputs": {"eval": {"container": "results", "blob_name": "job-7/evaluation.csv"}}}
        op = make(
            evaluation_results=bes,
            output_name="eval",
            rules={"metric": "auc", "min_relative_improvement": 0.05},
            champion_metrics={"AUC": 0.85},
        )
        ti = FakeTI(task=op)
        with mock.patch.object(EvaluateModelOperator, "read_evaluation_blob", return_value=BINARY_CSV) as read:
            result = op.execute(context={"ti": ti})  # type: ignore[typeddict-item]
        assert str(read.call_args.args[0]) == BLOB
        assert result["promote"] is False  # +3.5% < 5%
        assert result["champion"] == {"AUC": 0.85}

    def test_no_xcom_when_disabled(self):
        _, ti = run(make(do_xcom_push=False))
        assert ti.pushed == {}

    def test_second_row(self):
        data = BINARY_CSV + b"0.70,0.6,0.6,0.6,0.72,0.6,10\r\n"
        result, _ = run(make(evaluation_row=1), data)
        assert result["evaluation_row"] == 1 and result["challenger"]["AUC"] == 0.72

    def test_bad_rules_fail_before_reading_the_blob(self):
        op = make(rules={"metric": "gini"})
        with (
            mock.patch.object(EvaluateModelOperator, "read_evaluation_blob") as read,
            pytest.raises(ConfigurationError, match=r"rules\.metric: unknown metric 'gini'"),
        ):
            op.execute(context={"ti": FakeTI(task=op)})  # type: ignore[typeddict-item]
        read.assert_not_called()

    def test_bad_file_names_the_blob(self):
        with pytest.raises(EvaluationError, match=f"{BLOB}: header only"):
            run(make(), b"Accuracy,AUC\n")


class TestGateMode:
    def test_reject_fails_without_retry_and_still_records_the_decision(self):
        op = make(rules=REJECTING, fail_on_reject=True)
        ti = FakeTI(task=op)
        with (
            mock.patch.object(EvaluateModelOperator, "read_evaluation_blob", return_value=BINARY_CSV),
            pytest.raises(AirflowFailException, match=r"Challenger rejected: reject: AUC 0.88 fails threshold >= 0.95"),
        ):
            op.execute(context={"ti": ti})  # type: ignore[typeddict-item]
        assert ti.pushed[DECISION_XCOM_KEY]["promote"] is False

    def test_promote_passes(self):
        result, _ = run(make(fail_on_reject=True))
        assert result["promote"] is True


class TestBranchMode:
    def branch(self, **kwargs: Any) -> tuple[Any, FakeTI]:
        op = make(**kwargs)
        ti = FakeTI(task=op)
        with mock.patch.object(EvaluateModelOperator, "read_evaluation_blob", return_value=BINARY_CSV):
            try:
                return op.execute(context={"ti": ti}), ti  # type: ignore[typeddict-item]
            except DownstreamTasksSkipped as skipped:
                return skipped, ti

    def test_promote_follows_promote_tasks(self):
        skipped, ti = self.branch(promote_task_ids=["promote"], reject_task_ids=["keep_champion"])
        assert isinstance(skipped, DownstreamTasksSkipped)
        assert skipped.tasks == [("keep_champion", -1)]
        assert ti.pushed["skipmixin_key"] == {"followed": ["promote"]}
        assert ti.pushed[DECISION_XCOM_KEY]["promote"] is True

    def test_reject_follows_reject_tasks(self):
        skipped, ti = self.branch(rules=REJECTING, promote_task_ids="promote", reject_task_ids="keep_champion")
        assert isinstance(skipped, DownstreamTasksSkipped)
        assert skipped.tasks == [("promote", -1)]
        assert ti.pushed["skipmixin_key"] == {"followed": ["keep_champion"]}
        assert ti.pushed[DECISION_XCOM_KEY]["promote"] is False

    def test_reject_without_reject_tasks_skips_every_downstream_task(self):
        skipped, ti = self.branch(rules=REJECTING, promote_task_ids="promote")
        assert isinstance(skipped, DownstreamTasksSkipped)
        assert sorted(skipped.tasks) == [("keep_champion", -1), ("promote", -1)]
        assert ti.pushed["skipmixin_key"] == {"followed": []}

    def test_following_every_downstream_task_returns_the_ids(self):
        result, ti = self.branch(promote_task_ids=["promote", "keep_champion"])
        assert result == ["promote", "keep_champion"]
        assert ti.pushed[DECISION_XCOM_KEY]["promote"] is True

    def test_reject_with_fail_on_reject_fails_instead_of_branching(self):
        with pytest.raises(AirflowFailException):
            self.branch(rules=REJECTING, promote_task_ids="promote", fail_on_reject=True)

    def test_unknown_task_id_is_refused_by_airflow(self):
        with pytest.raises(Exception, match="must contain only valid task_ids"):
            self.branch(promote_task_ids="no_such_task")


class TestReadBlob:
    class Downloader:
        def __init__(self, data: bytes, size: int | None = None) -> None:
            self.data, self.size = data, len(data) if size is None else size

        def readall(self) -> bytes:
            return self.data

    def test_reads_bytes_through_the_hook(self):
        op = make()
        hook = mock.Mock()
        hook.download.return_value = self.Downloader(BINARY_CSV)
        op.__dict__["hook"] = hook
        from azureml_retrain.blobs import BlobLocation

        assert op.read_evaluation_blob(BlobLocation.parse(BLOB)) == BINARY_CSV
        hook.download.assert_called_once_with("results", "job-7/evaluation.csv")

    def test_missing_blob(self):
        from azure.core.exceptions import ResourceNotFoundError

        from azureml_retrain.blobs import BlobLocation

        op = make(wasb_conn_id="wasb_results")
        op.__dict__["hook"] = mock.Mock(**{"download.side_effect": ResourceNotFoundError("The blob does not exist")})
        with pytest.raises(EvaluationError, match=f"{BLOB}: blob not found through connection 'wasb_results'"):
            op.read_evaluation_blob(BlobLocation.parse(BLOB))

    def test_oversized_blob_is_not_downloaded(self):
        from azureml_retrain.blobs import BlobLocation

        op = make()
        downloader = mock.Mock(size=500 * 1024 * 1024)
        op.__dict__["hook"] = mock.Mock(**{"download.return_value": downloader})
        with pytest.raises(EvaluationError, match=f"{BLOB}: 524288000 bytes is too large"):
            op.read_evaluation_blob(BlobLocation.parse(BLOB))
        downloader.readall.assert_not_called()

    def test_hook_uses_the_connection_id(self):
        op = make(wasb_conn_id="wasb_results")
        assert op.hook.conn_id == "wasb_results"
