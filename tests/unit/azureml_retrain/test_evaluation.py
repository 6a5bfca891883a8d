"""Pure evaluation logic: CSV parsing, rule validation, decisions."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from azureml_retrain.blobs import BlobLocation
from azureml_retrain.evaluation import (
    EvaluationResults,
    decide,
    parse_champion_metrics,
    parse_evaluation_csv,
    parse_rules,
    resolve_evaluation_location,
    resolve_metric_name,
)
from azureml_retrain.exceptions import ConfigurationError, EvaluationError

SOURCE = "retrain/job-1/evaluation.csv"
BINARY_HEADER = "Accuracy,Precision,Recall,F-Score,AUC,Average Log Loss,Training Log Loss"
BINARY_CSV = f"{BINARY_HEADER}\n0.83,0.79,0.71,0.748,0.88,0.41,37.5\n"
REGRESSION_HEADER = (
    "Negative Log Likelihood,Mean Absolute Error,Root Mean Squared Error,Relative Absolute Error,"
    "Relative Squared Error,Coefficient of Determination"
)
REGRESSION_CSV = f"{REGRESSION_HEADER}\nInfinity,2.5,3.25,0.41,0.22,0.78\n"


def binary(**metrics: float | str) -> EvaluationResults:
    values = {"Accuracy": 0.83, "Precision": 0.79, "Recall": 0.71, "F-Score": 0.748, "AUC": 0.88}
    values |= {"Average Log Loss": 0.41, "Training Log Loss": 37.5}
    values |= {resolve_metric_name(k.replace("_", " ")): v for k, v in metrics.items()}
    text = ",".join(values) + "\n" + ",".join(str(v) for v in values.values())
    return parse_evaluation_csv(text, SOURCE)


def regression(**metrics: float | str) -> EvaluationResults:
    values: dict[str, Any] = {"Negative Log Likelihood": "Infinity", "Mean Absolute Error": 2.5}
    values |= {"Root Mean Squared Error": 3.25, "Relative Absolute Error": 0.41, "Relative Squared Error": 0.22}
    values |= {"Coefficient of Determination": 0.78}
    values |= {resolve_metric_name(k.replace("_", " ")): v for k, v in metrics.items()}
    text = ",".join(values) + "\n" + ",".join(str(v) for v in values.values())
    return parse_evaluation_csv(text, SOURCE)


def judge(results: EvaluationResults, rules: dict[str, Any], champion: dict[str, Any] | None = None) -> dict[str, Any]:
    return decide(results, parse_rules(rules), parse_champion_metrics(champion))


def check(decision: dict[str, Any], rule: str, metric: str | None = None) -> dict[str, Any]:
    matches = [c for c in decision["checks"] if c["rule"] == rule and (metric is None or c["metric"] == metric)]
    assert len(matches) == 1, decision["checks"]
    return matches[0]


# ---------------------------------------------------------------------------------------------- parsing


class TestParseCsv:
    def test_binary(self):
        results = parse_evaluation_csv(BINARY_CSV.encode(), SOURCE)
        assert results.task == "binary"
        assert results.row == 0 and results.row_count == 1
        assert results.metrics() == {
            "Accuracy": 0.83,
            "Precision": 0.79,
            "Recall": 0.71,
            "F-Score": 0.748,
            "AUC": 0.88,
            "Average Log Loss": 0.41,
            "Training Log Loss": 37.5,
        }
        assert results.value("AUC") == 0.88

    def test_regression_with_infinite_nll_in_an_unjudged_column(self):
        results = parse_evaluation_csv(REGRESSION_CSV.encode(), SOURCE)
        assert results.task == "regression"
        metrics = results.metrics()
        assert metrics["Negative Log Likelihood"] == "Infinity"
        assert metrics["Root Mean Squared Error"] == 3.25
        decision = decide(results, parse_rules({"metric": "rmse", "threshold": 4}), None)
        assert decision["promote"] is True
        json.dumps(decision, allow_nan=False)  # strict JSON: no bare Infinity

    def test_two_rows_judges_the_first_by_default(self):
        text = f"{BINARY_HEADER}\n0.83,0.79,0.71,0.748,0.88,0.41,37.5\n0.80,0.75,0.70,0.72,0.85,0.45,30.1\n"
        first = parse_evaluation_csv(text, SOURCE)
        second = parse_evaluation_csv(text, SOURCE, row=1)
        assert first.row_count == 2
        assert first.value("AUC") == 0.88
        assert second.value("AUC") == 0.85

    def test_row_out_of_range(self):
        with pytest.raises(EvaluationError, match=rf"{SOURCE}: row 2 requested but the file has 1 data row"):
            parse_evaluation_csv(BINARY_CSV, SOURCE, row=2)

    def test_bom_crlf_quotes_and_padding(self):
        header = ", ".join(f'"{c}"' for c in BINARY_HEADER.split(",")) + "  "
        text = f"{header}\r\n 0.83 ,0.79,0.71,0.748,  0.88 ,0.41,37.5 \r\n\r\n"
        results = parse_evaluation_csv(b"\xef\xbb\xbf" + text.encode(), SOURCE)
        assert results.columns == tuple(BINARY_HEADER.split(","))
        assert results.value("AUC") == 0.88
        assert results.value("Accuracy") == 0.83

    def test_bom_in_text(self):
        assert parse_evaluation_csv("\ufeff" + BINARY_CSV, SOURCE).columns[0] == "Accuracy"

    def test_tab_separated(self):
        text = BINARY_CSV.replace(",", "\t")
        assert parse_evaluation_csv(text, SOURCE).value("F-Score") == 0.748

    def test_non_numeric_text_column_is_left_out_of_metrics(self):
        results = parse_evaluation_csv(f"{BINARY_HEADER},Comment\n0.83,0.79,0.71,0.748,0.88,0.41,37.5,ok\n", SOURCE)
        assert "Comment" not in results.metrics()
        assert results.metrics()["AUC"] == 0.88

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "the file is empty"),
            (b"\r\n  \n", "the file is empty"),
            (BINARY_HEADER.encode() + b"\r\n", "header only, no data row"),
            (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a UTF-8 text file"),
            (b"abc\x00def\n1\n", "contains NUL bytes"),
            (b'{"Accuracy": 0.8}', "not an Evaluate Model CSV; the header has none of the Studio metric columns"),
            (b"<html><body>Not found</body></html>", "not an Evaluate Model CSV"),
            (b"Accuracy,,AUC\n1,2,3\n", "empty column name"),
            (b"AUC,AUC\n1,2\n", "duplicate columns"),
            (b"Accuracy,AUC\n0.8\n", "data row 0 has 1 fields but the header has 2"),
            (b"x" * (1024 * 1024 + 1), "too large"),
        ],
    )
    def test_bad_files_name_the_blob(self, data: bytes, message: str):
        with pytest.raises(EvaluationError, match=SOURCE) as err:
            parse_evaluation_csv(data, SOURCE)
        assert message in str(err.value)


class TestJudgedValues:
    def test_missing_column_names_blob_column_and_available_columns(self):
        with pytest.raises(EvaluationError) as err:
            decide(regression(), parse_rules({"metric": "AUC"}), None)
        message = str(err.value)
        assert SOURCE in message and "'AUC'" in message and "regression" in message
        assert "Root Mean Squared Error" in message  # lists what is there

    def test_infinity_in_a_judged_column(self):
        with pytest.raises(EvaluationError, match=r"column 'Negative Log Likelihood' \(row 0\) is 'Infinity'") as err:
            decide(regression(), parse_rules({"metric": "nll", "threshold": 5}), None)
        assert SOURCE in str(err.value)

    def test_nan_in_a_guard_column(self):
        with pytest.raises(EvaluationError, match=rf"{SOURCE}: column 'AUC' \(row 0\) is 'NaN'"):
            decide(
                binary(AUC="NaN"), parse_rules({"metric": "accuracy", "guards": [{"metric": "auc", "min": 0.7}]}), None
            )

    def test_non_numeric_judged_value(self):
        with pytest.raises(EvaluationError, match=rf"{SOURCE}: column 'F-Score' \(row 0\) holds 'n/a', which is not"):
            decide(binary(F_Score="n/a"), parse_rules({"metric": "f1"}), None)

    def test_missing_guard_column_names_the_guard(self):
        partial = parse_evaluation_csv("AUC,Accuracy\n0.8,0.7\n", SOURCE)
        rules = parse_rules({"metric": "auc", "guards": [{"metric": "precision", "min": 0.5}]})
        with pytest.raises(EvaluationError, match=r"rules.guards\[0\].metric 'Precision' is not a column"):
            decide(partial, rules, None)

    def test_a_guard_on_another_kind_of_model_is_refused_before_any_evaluation(self):
        expected = r"rules\.guards: guard 0 \('Mean Absolute Error'\) is a regression"
        with pytest.raises(ConfigurationError, match=expected):
            parse_rules({"metric": "auc", "guards": [{"metric": "mae", "max": 1}]})


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("AUC", "AUC"),
        ("auc", "AUC"),
        ("roc_auc", "AUC"),
        ("f1", "F-Score"),
        ("F1 Score", "F-Score"),
        ("f-score", "F-Score"),
        ("rmse", "Root Mean Squared Error"),
        ("root mean squared error", "Root Mean Squared Error"),
        ("r2", "Coefficient of Determination"),
        ("R^2", "Coefficient of Determination"),
        ("R²", "Coefficient of Determination"),
        ("accuracy", "Accuracy"),
        ("mae", "Mean Absolute Error"),
        ("log_loss", "Average Log Loss"),
        (" Average Log Loss ", "Average Log Loss"),
        ("nll", "Negative Log Likelihood"),
    ],
)
def test_alias_resolution(given: str, expected: str):
    assert resolve_metric_name(given) == expected


def test_unknown_metric_lists_the_available_ones():
    with pytest.raises(ConfigurationError) as err:
        parse_rules({"metric": "precision_at_k"})
    message = str(err.value)
    assert message.startswith("rules.metric: unknown metric 'precision_at_k'")
    assert "Accuracy" in message and "Coefficient of Determination" in message and "rmse" in message


# ---------------------------------------------------------------------------------------------- rule validation


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("not rules", "rules: expected a mapping"),
        ({}, "rules.metric: Field required"),
        ({"metric": "auc", "treshold": 0.7}, "rules.treshold: not a field of the rules; did you mean 'threshold'?"),
        ({"metric": "auc", "higher_is_better": "up"}, "rules.higher_is_better: Input should be a valid boolean"),
        ({"metric": "Training Log Loss"}, "rules.higher_is_better: the direction of 'Training Log Loss' is ambiguous"),
        ({"metric": "auc", "threshold": "high"}, "rules.threshold: Input should be a valid number"),
        ({"metric": "auc", "threshold": True}, "rules.threshold: expected a number, got True"),
        ({"metric": "auc", "threshold": float("nan")}, "rules.threshold: Input should be a finite number"),
        ({"metric": "auc", "min_absolute_improvement": -0.01}, "rules.min_absolute_improvement: Input should"),
        ({"metric": "auc", "min_relative_improvement": -1}, "rules.min_relative_improvement: Input should be greater"),
        ({"metric": "auc", "on_missing_champion_metric": "ignore"}, "rules.on_missing_champion_metric: Input should"),
        ({"metric": "auc", "guards": {"metric": "auc"}}, "rules.guards: Input should be a valid list"),
        ({"metric": "auc", "guards": ["auc>0.7"]}, "rules.guards.0: Input should be a valid dictionary"),
        ({"metric": "auc", "guards": [{"metric": "auc"}]}, "rules.guards.0: give 'min' and/or 'max' for 'AUC'"),
        (
            {"metric": "auc", "guards": [{"metric": "auc", "min": 0.9, "max": 0.1}]},
            "rules.guards.0: min 0.9 is greater",
        ),
        (
            {"metric": "auc", "guards": [{"metric": "gini", "min": 0.1}]},
            "rules.guards.0.metric: unknown metric 'gini'",
        ),
        (
            {"metric": "auc", "guards": [{"metric": "auc", "minimum": 0.1}]},
            "rules.guards.0.minimum: not a field of 'guards.0'; did you mean 'min'?",
        ),
        ({"metric": "auc", "guards": [{"metric": "auc", "max": "x"}]}, "rules.guards.0.max: Input should be"),
        ("{'metric': 'auc',", "rules: the rendered text (17 characters) is neither JSON nor a Python literal"),
    ],
)
def test_bad_rules_name_the_field(rules: Any, message: str):
    with pytest.raises(ConfigurationError) as err:
        parse_rules(rules)
    assert message in str(err.value)


def test_direction_is_inferred_and_overridable():
    assert parse_rules({"metric": "auc"}).higher_is_better is True
    assert parse_rules({"metric": "rmse"}).higher_is_better is False
    assert parse_rules({"metric": "log_loss"}).higher_is_better is False
    assert parse_rules({"metric": "r2"}).higher_is_better is True
    assert parse_rules({"metric": "Training Log Loss", "higher_is_better": True}).higher_is_better is True
    assert parse_rules({"metric": "auc", "higher_is_better": False}).higher_is_better is False


def test_rules_from_rendered_templates():
    as_json = parse_rules('{"metric": "auc", "threshold": 0.7, "guards": [{"metric": "log loss", "max": 0.6}]}')
    as_repr = parse_rules("{'metric': 'auc', 'threshold': 0.7, 'guards': [{'metric': 'log loss', 'max': 0.6}]}")
    assert as_json == as_repr
    assert as_json.threshold == 0.7 and as_json.guards[0].metric == "Average Log Loss"


def test_numeric_strings_are_accepted():
    assert parse_rules({"metric": "auc", "threshold": "0.75"}).threshold == 0.75


# ---------------------------------------------------------------------------------------------- decisions


class TestThreshold:
    def test_pass_higher_is_better(self):
        decision = decide(binary(AUC=0.88), parse_rules({"metric": "auc", "threshold": 0.75}), None)
        assert decision["promote"] is True
        assert check(decision, "threshold") == {
            "rule": "threshold",
            "metric": "AUC",
            "challenger": 0.88,
            "threshold": 0.75,
            "passed": True,
            "detail": "AUC 0.88 meets threshold >= 0.75",
        }
        assert decision["reason"].startswith("promote: AUC 0.88 meets threshold >= 0.75")
        assert "no champion recorded, judged on thresholds only" in decision["reason"]

    def test_fail_higher_is_better(self):
        decision = decide(binary(AUC=0.70), parse_rules({"metric": "AUC", "threshold": 0.75}), None)
        assert decision["promote"] is False
        assert decision["reason"].startswith("reject: AUC 0.7 fails threshold >= 0.75")

    def test_exactly_at_threshold_passes(self):
        assert decide(binary(AUC=0.75), parse_rules({"metric": "auc", "threshold": 0.75}), None)["promote"] is True

    @pytest.mark.parametrize(("rmse", "promote"), [(3.25, True), (4.0, True), (4.01, False)])
    def test_lower_is_better(self, rmse: float, promote: bool):
        decision = decide(
            regression(Root_Mean_Squared_Error=rmse), parse_rules({"metric": "rmse", "threshold": 4}), None
        )
        assert decision["promote"] is promote
        assert check(decision, "threshold")["detail"].endswith("threshold <= 4")

    def test_log_loss_threshold(self):
        rules = parse_rules({"metric": "Average Log Loss", "threshold": 0.4})
        assert decide(binary(Average_Log_Loss=0.41), rules, None)["promote"] is False
        assert decide(binary(Average_Log_Loss=0.39), rules, None)["promote"] is True


class TestImprovement:
    def test_absolute_pass_and_fail(self):
        rules = parse_rules({"metric": "auc", "min_absolute_improvement": 0.01})
        passed = decide(binary(AUC=0.83), rules, parse_champion_metrics({"AUC": 0.82}))
        assert passed["promote"] is True  # 0.83 - 0.82 is 0.00999... in floats: tolerated
        improvement = check(passed, "min_absolute_improvement")
        assert improvement["champion"] == 0.82 and improvement["required"] == 0.01
        assert improvement["improvement"] == pytest.approx(0.01)
        failed = decide(binary(AUC=0.825), rules, parse_champion_metrics({"AUC": 0.82}))
        assert failed["promote"] is False
        assert "reject: AUC 0.825 vs champion 0.82: improvement +0.005 misses the required 0.01" in failed["reason"]

    def test_relative_pass_and_fail(self):
        rules = parse_rules({"metric": "f1", "min_relative_improvement": 0.05})
        assert decide(binary(F_Score=0.84), rules, parse_champion_metrics({"F-Score": 0.80}))["promote"] is True  # +5%
        failed = decide(binary(F_Score=0.83), rules, parse_champion_metrics({"F-Score": 0.80}))  # +3.75%
        assert failed["promote"] is False
        assert check(failed, "min_relative_improvement")["improvement"] == pytest.approx(0.0375)
        assert "relative improvement +3.7500% misses the required 5.0000%" in failed["reason"]

    def test_lower_is_better_absolute(self):
        rules = {"metric": "rmse", "min_absolute_improvement": 0.2}
        assert judge(regression(Root_Mean_Squared_Error=3.0), rules, {"rmse": 3.15})["promote"] is False
        assert judge(regression(Root_Mean_Squared_Error=3.0), rules, {"rmse": 3.2})["promote"] is True  # exactly 0.2
        worse = judge(regression(Root_Mean_Squared_Error=3.5), rules, {"rmse": 3.25})
        assert worse["promote"] is False
        assert check(worse, "min_absolute_improvement")["improvement"] == pytest.approx(-0.25)

    def test_lower_is_better_relative_log_loss(self):
        rules = parse_rules({"metric": "log loss", "min_relative_improvement": 0.1})
        assert (
            decide(binary(Average_Log_Loss=0.45), rules, parse_champion_metrics({"Average Log Loss": 0.5}))["promote"]
            is True
        )  # -10%
        assert (
            decide(binary(Average_Log_Loss=0.46), rules, parse_champion_metrics({"Average Log Loss": 0.5}))["promote"]
            is False
        )  # -8%

    def test_both_improvements_must_pass(self):
        rules = parse_rules({"metric": "auc", "min_absolute_improvement": 0.01, "min_relative_improvement": 0.05})
        decision = decide(binary(AUC=0.85), rules, parse_champion_metrics({"auc": 0.83}))  # +0.02 but only +2.4%
        assert check(decision, "min_absolute_improvement")["passed"] is True
        assert check(decision, "min_relative_improvement")["passed"] is False
        assert decision["promote"] is False

    def test_default_with_champion_is_not_worse(self):
        rules = parse_rules({"metric": "auc"})
        assert decide(binary(AUC=0.80), rules, parse_champion_metrics({"AUC": 0.80}))["promote"] is True  # tie passes
        worse = decide(binary(AUC=0.79), rules, parse_champion_metrics({"AUC": 0.80}))
        assert worse["promote"] is False
        assert check(worse, "min_absolute_improvement")["required"] == 0.0

    def test_relative_against_a_zero_champion(self):
        rules = parse_rules({"metric": "r2", "min_relative_improvement": 0.1})
        better = decide(regression(Coefficient_of_Determination=0.1), rules, parse_champion_metrics({"r2": 0}))
        assert better["promote"] is True and check(better, "min_relative_improvement")["improvement"] is None
        assert (
            decide(regression(Coefficient_of_Determination=0.0), rules, parse_champion_metrics({"r2": 0}))["promote"]
            is False
        )

    def test_relative_against_a_negative_champion_uses_its_magnitude(self):
        rules = parse_rules({"metric": "r2", "min_relative_improvement": 0.5})
        decision = decide(regression(Coefficient_of_Determination=-0.1), rules, parse_champion_metrics({"r2": -0.2}))
        assert check(decision, "min_relative_improvement")["improvement"] == pytest.approx(0.5)
        assert decision["promote"] is True


class TestGuards:
    RULES: ClassVar[dict[str, Any]] = {
        "metric": "accuracy",
        "guards": [{"metric": "AUC", "min": 0.7}, {"metric": "Average Log Loss", "max": 0.6}],
    }

    def test_pass(self):
        decision = decide(binary(), parse_rules(self.RULES), None)
        assert decision["promote"] is True
        assert check(decision, "guard_min", "AUC")["passed"] is True
        assert check(decision, "guard_max", "Average Log Loss") == {
            "rule": "guard_max",
            "metric": "Average Log Loss",
            "challenger": 0.41,
            "threshold": 0.6,
            "passed": True,
            "detail": "Average Log Loss 0.41 meets guard max <= 0.6",
        }

    def test_fail_names_every_failed_guard(self):
        decision = decide(binary(AUC=0.65, Average_Log_Loss=0.7), parse_rules(self.RULES), None)
        assert decision["promote"] is False
        assert decision["reason"].startswith(
            "reject: AUC 0.65 fails guard min >= 0.7; Average Log Loss 0.7 fails guard max <= 0.6"
        )

    def test_guard_blocks_an_improving_model(self):
        rules = parse_rules({**self.RULES, "min_absolute_improvement": 0.01})
        decision = decide(binary(Accuracy=0.9, AUC=0.6), rules, parse_champion_metrics({"Accuracy": 0.8}))
        assert check(decision, "min_absolute_improvement")["passed"] is True
        assert decision["promote"] is False

    def test_range_guard(self):
        rules = parse_rules({"metric": "auc", "guards": [{"metric": "recall", "min": 0.5, "max": 0.99}]})
        decision = decide(binary(Recall=1.0), rules, None)
        assert check(decision, "guard_min")["passed"] is True
        assert check(decision, "guard_max")["passed"] is False


class TestChampion:
    def test_none_and_empty_mean_no_champion(self):
        assert parse_champion_metrics(None) is None
        assert parse_champion_metrics({}) is None
        assert parse_champion_metrics("") is None
        assert parse_champion_metrics("{}") is None

    def test_aliases_and_text_values_are_normalised(self):
        champion = parse_champion_metrics({"auc": "0.8", "F1 Score": 0.7, "nll": "Infinity", "custom": 3})
        assert champion == {"AUC": 0.8, "F-Score": 0.7, "Negative Log Likelihood": float("inf"), "custom": 3.0}

    def test_champion_from_rendered_repr(self):
        assert parse_champion_metrics("{'AUC': 0.8}") == {"AUC": 0.8}

    def test_first_model_with_no_threshold_is_promoted_and_says_why(self):
        decision = decide(binary(), parse_rules({"metric": "auc"}), None)
        assert decision["promote"] is True
        assert decision["checks"] == []
        assert "no rule applies" in decision["reason"]

    def test_missing_primary_metric_is_an_error_by_default(self):
        with pytest.raises(EvaluationError) as err:
            decide(binary(), parse_rules({"metric": "auc"}), parse_champion_metrics({"Accuracy": 0.8}))
        message = str(err.value)
        assert "champion_metrics has no 'AUC'" in message and "['Accuracy']" in message and SOURCE in message
        assert "on_missing_champion_metric='skip'" in message

    def test_missing_primary_metric_can_be_skipped(self):
        rules = parse_rules({"metric": "auc", "threshold": 0.7, "on_missing_champion_metric": "skip"})
        decision = decide(binary(), rules, parse_champion_metrics({"Accuracy": 0.8}))
        assert decision["promote"] is True
        assert [c["rule"] for c in decision["checks"]] == ["threshold"]
        assert "champion has no 'AUC', comparison skipped" in decision["reason"]
        assert decision["champion"] == {"Accuracy": 0.8}

    @pytest.mark.parametrize(
        ("champion", "message"),
        [
            (["AUC", 0.8], "champion_metrics: expected a mapping"),
            ({"AUC": "good"}, "champion_metrics['AUC']: expected a number, got 'good'"),
            ({"AUC": None}, "champion_metrics['AUC']: expected a number, got None"),
            ({"AUC": True}, "champion_metrics['AUC']: expected a number, got True"),
            ({"AUC": 0.8, "auc": 0.7}, "champion_metrics['auc']: 'AUC' is given twice"),
        ],
    )
    def test_bad_champion_metrics(self, champion: Any, message: str):
        with pytest.raises(ConfigurationError) as err:
            parse_champion_metrics(champion)
        assert message in str(err.value)

    def test_non_finite_champion_primary_metric(self):
        with pytest.raises(ConfigurationError, match=r"champion_metrics\['AUC'\] is nan"):
            decide(binary(), parse_rules({"metric": "auc"}), parse_champion_metrics({"AUC": float("nan")}))


def test_decision_shape_is_json_serialisable():
    rules = parse_rules(
        {"metric": "rmse", "threshold": 4, "min_relative_improvement": 0.01, "guards": [{"metric": "r2", "min": 0.5}]}
    )
    champion = parse_champion_metrics({"rmse": 3.5, "nll": "Infinity"})
    decision = decide(regression(), rules, champion)
    assert json.loads(json.dumps(decision, allow_nan=False)) == decision
    assert set(decision) == {
        "promote",
        "reason",
        "metric",
        "higher_is_better",
        "challenger",
        "champion",
        "checks",
        "task",
        "evaluation_blob",
        "evaluation_row",
    }
    assert decision["promote"] is True
    assert decision["metric"] == "Root Mean Squared Error"
    assert decision["task"] == "regression"
    assert decision["evaluation_blob"] == SOURCE
    assert decision["champion"] == {"Root Mean Squared Error": 3.5, "Negative Log Likelihood": "Infinity"}
    assert [c["rule"] for c in decision["checks"]] == ["threshold", "min_relative_improvement", "guard_min"]


# ---------------------------------------------------------------------------------------------- locations


class TestLocation:
    BES_RESULT: ClassVar[dict[str, Any]] = {
        "job_id": "job-42",
        "outputs": {
            "output1": {
                "relative_location": "models/job-42/model.ilearner",
                "container": "models",
                "blob_name": "job-42/model.ilearner",
            },
            "output2": {
                "base_location": "http://127.0.0.1:10000/devstoreaccount1/",
                "relative_location": "results/job-42/evaluation.csv",
                "container": "results",
                "blob_name": "job-42/evaluation.csv",
            },
        },
    }

    def test_string_and_dict(self):
        assert resolve_evaluation_location("results/a/b.csv") == BlobLocation("results", "a/b.csv")
        assert resolve_evaluation_location({"container": "results", "blob_name": "a/b.csv"}) == BlobLocation(
            "results", "a/b.csv"
        )

    def test_bes_result(self):
        assert resolve_evaluation_location(self.BES_RESULT) == BlobLocation("results", "job-42/evaluation.csv")

    def test_bes_result_rendered_as_a_string(self):
        assert resolve_evaluation_location(repr(self.BES_RESULT)) == BlobLocation("results", "job-42/evaluation.csv")
        assert resolve_evaluation_location(json.dumps(self.BES_RESULT)) == BlobLocation(
            "results", "job-42/evaluation.csv"
        )

    def test_bes_result_relative_location_only(self):
        value = {"job_id": "j", "outputs": {"eval": {"relative_location": "results/x/evaluation.csv"}}}
        assert resolve_evaluation_location(value, "eval") == BlobLocation("results", "x/evaluation.csv")

    def test_unknown_output_lists_names_only(self):
        with pytest.raises(ConfigurationError) as err:
            resolve_evaluation_location(self.BES_RESULT, "Output2")
        message = str(err.value)
        assert "output_name: BES job job-42 has no output 'Output2'; outputs are ['output1', 'output2']" in message
        assert "base_location" not in message and "127.0.0.1" not in message

    def test_model_output_is_refused(self):
        with pytest.raises(ConfigurationError, match=r"models/job-42/model.ilearner is a trained model"):
            resolve_evaluation_location(self.BES_RESULT, "output1")

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("no-slash", "evaluation_results: expected 'container/path/to/blob'"),
            ({"container": "c"}, "evaluation_results: expected keys 'container' and 'blob_name'"),
            (42, "evaluation_results: expected 'container/path.csv'"),
            ({"job_id": "j", "outputs": {}}, "evaluation_results['outputs']: expected a non-empty mapping"),
            (
                {"job_id": "j", "outputs": {"output2": "x"}},
                "evaluation_results['outputs']['output2']: expected a mapping",
            ),
            ({"job_id": "j", "outputs": {"output2": {"base_location": "x"}}}, "expected 'container' + 'blob_name'"),
        ],
    )
    def test_bad_locations(self, value: Any, message: str):
        with pytest.raises(ConfigurationError) as err:
            resolve_evaluation_location(value)
        assert message in str(err.value)
