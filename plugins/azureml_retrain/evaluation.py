"""Judge a challenger model from Studio's Evaluate Model output against rules and a champion.

Pure logic, no Airflow and no I/O: the operator reads the blob and hands the text here.

Evaluation CSV (contract §5)
    A header row and one data row per scored input. Binary classification has ``Accuracy``,
    ``Precision``, ``Recall``, ``F-Score``, ``AUC``, ``Average Log Loss``, ``Training Log Loss``;
    regression has ``Negative Log Likelihood``, ``Mean Absolute Error``, ``Root Mean Squared Error``,
    ``Relative Absolute Error``, ``Relative Squared Error``, ``Coefficient of Determination``.
    When both inputs of Evaluate Model are connected there are two data rows: row 0 is the left
    input (the scored dataset, i.e. the model just trained), row 1 the right input ("scored dataset to
    compare"). **Row 0 is judged by default**; ``row`` selects another one. Cells are parsed as floats;
    ``Infinity``/``NaN`` are accepted in any column but refused in a column that is judged.

Rules (MLflow ``MetricThreshold``-like), a dict::

    {
        "metric": "AUC",                      # required; Studio column name, any case, or an alias
        "higher_is_better": True,             # optional; inferred for known metrics
        "threshold": 0.75,                    # optional; the challenger must reach it
        "min_absolute_improvement": 0.01,     # optional, >= 0; vs the champion, in metric units
        "min_relative_improvement": 0.02,     # optional, >= 0; vs the champion, fraction of |champion|
        "on_missing_champion_metric": "error",  # or "skip"
        "guards": [                           # optional; bounds on any metric, challenger only
            {"metric": "AUC", "min": 0.7},
            {"metric": "Average Log Loss", "max": 0.6},
        ],
    }

Champion
    ``None`` or ``{}``: nothing is in service (first model), so only ``threshold`` and ``guards``
    are judged. Otherwise the champion's primary metric is compared; when neither improvement is
    set the challenger must simply not be worse (``min_absolute_improvement`` 0; ties pass). A
    champion that lacks the primary metric is an error unless ``on_missing_champion_metric`` is
    ``"skip"`` (then the comparison is left out and the decision says so). Other champion metrics
    are only reported.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from azureml_retrain.blobs import BlobLocation, parse_structured, resolve_output
from azureml_retrain.exceptions import ConfigurationError, EvaluationError

Task = Literal["binary", "regression"]
JsonNumber = float | str  # non-finite floats travel as "Infinity" / "-Infinity" / "NaN"

BINARY_METRICS: dict[str, bool | None] = {
    "Accuracy": True,
    "Precision": True,
    "Recall": True,
    "F-Score": True,
    "AUC": True,
    "Average Log Loss": False,
    # Studio describes it as "the advantage of the classifier over a random prediction" (a log-loss
    # reduction) while also calling it a log loss; the direction is not guessed.
    "Training Log Loss": None,
}
REGRESSION_METRICS: dict[str, bool | None] = {
    "Negative Log Likelihood": False,
    "Mean Absolute Error": False,
    "Root Mean Squared Error": False,
    "Relative Absolute Error": False,
    "Relative Squared Error": False,
    "Coefficient of Determination": True,
    "Mean Zero One Error": False,  # documented by the module, not seen in captured CSVs
}
KNOWN_METRICS: dict[str, bool | None] = {**BINARY_METRICS, **REGRESSION_METRICS}

_ALIASES: dict[str, str] = {
    "f1": "F-Score",
    "f1score": "F-Score",
    "fscore": "F-Score",
    "fmeasure": "F-Score",
    "auc": "AUC",
    "rocauc": "AUC",
    "auroc": "AUC",
    "acc": "Accuracy",
    "logloss": "Average Log Loss",
    "avglogloss": "Average Log Loss",
    "nll": "Negative Log Likelihood",
    "mae": "Mean Absolute Error",
    "rmse": "Root Mean Squared Error",
    "rae": "Relative Absolute Error",
    "rse": "Relative Squared Error",
    "r2": "Coefficient of Determination",
    "rsquared": "Coefficient of Determination",
    "mzoe": "Mean Zero One Error",
}

RULE_KEYS = (
    "metric",
    "higher_is_better",
    "threshold",
    "min_absolute_improvement",
    "min_relative_improvement",
    "on_missing_champion_metric",
    "guards",
)
GUARD_KEYS = ("metric", "min", "max")
MISSING_CHAMPION_POLICIES = ("error", "skip")
MAX_EVALUATION_BYTES = 1024 * 1024

_REL_TOL = 1e-9
_ABS_TOL = 1e-12


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.strip().lower().replace("²", "2"))


_LOOKUP: dict[str, str] = {_normalise(name): name for name in KNOWN_METRICS} | _ALIASES


def resolve_metric_name(name: object, field_name: str = "metric") -> str:
    """Map a Studio column name (any case/spacing) or a common alias to the Studio column name.

    ``"f1"``, ``"F1 Score"`` -> ``"F-Score"``; ``"rmse"`` -> ``"Root Mean Squared Error"``;
    ``"r2"``, ``"R^2"`` -> ``"Coefficient of Determination"``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{field_name}: expected a metric name, got {name!r}")
    canonical = _LOOKUP.get(_normalise(name))
    if canonical is None:
        raise ConfigurationError(
            f"{field_name}: unknown metric {name!r}. Available: binary {', '.join(BINARY_METRICS)}; "
            f"regression {', '.join(REGRESSION_METRICS)} (aliases: {', '.join(sorted(_ALIASES))})"
        )
    return canonical


# --------------------------------------------------------------------------------------------------
# Loose inputs: templated values may arrive as JSON text or as a rendered Python repr.


def resolve_evaluation_location(value: Any, output_name: str = "output2") -> BlobLocation:
    """Where the evaluation CSV is.

    Accepts ``"container/path.csv"``, ``{"container", "blob_name"}`` or the SubmitBesJob result
    ``{"job_id", "outputs": {output_name: {"container", "blob_name", "relative_location", ...}}}``.
    Only location fields are read (never a SAS token), and errors list output *names* only.
    """
    value = parse_structured(value, "evaluation_results")
    if isinstance(value, Mapping):
        value = dict(value)
    elif not isinstance(value, str):
        raise ConfigurationError(
            "evaluation_results: expected 'container/path.csv', {'container', 'blob_name'} or a SubmitBesJob "
            f"result, got {type(value).__name__}"
        )
    location = resolve_output(value, output_name, field="evaluation_results")
    if location.blob_name.lower().endswith(".ilearner"):
        raise ConfigurationError(
            f"evaluation_results: {location} is a trained model, not the evaluation CSV; pick the Evaluate Model "
            f"output (output_name={output_name!r} may be the wrong one: output names follow the order the "
            "Web Service Output modules were added)"
        )
    return location


# --------------------------------------------------------------------------------------------------
# The CSV


@dataclass(frozen=True)
class EvaluationResults:
    """One row of an Evaluate Model CSV: the judged model's metrics, as text and as numbers."""

    source: str
    columns: tuple[str, ...]
    raw: dict[str, str]
    row: int
    row_count: int

    @property
    def task(self) -> Task:
        present = set(self.columns)
        if present & set(REGRESSION_METRICS):
            return "regression"
        return "binary"

    def value(self, metric: str, field_name: str = "metric") -> float:
        """The finite value of a judged column, or an EvaluationError naming blob and column."""
        if metric not in self.raw:
            raise EvaluationError(
                f"{self.source}: {field_name} {metric!r} is not a column of this {self.task} evaluation "
                f"(row {self.row}); available columns: {', '.join(self.columns)}"
            )
        text = self.raw[metric]
        try:
            number = float(text)
        except ValueError:
            raise EvaluationError(
                f"{self.source}: column {metric!r} (row {self.row}) holds {text!r}, which is not a number"
            ) from None
        if not math.isfinite(number):
            raise EvaluationError(
                f"{self.source}: column {metric!r} (row {self.row}) is {text!r}; a judged metric must be finite"
            )
        return number

    def metrics(self) -> dict[str, JsonNumber]:
        """Every numeric column, JSON-safe: non-finite values become "Infinity", "-Infinity", "NaN"."""
        out: dict[str, JsonNumber] = {}
        for column in self.columns:
            try:
                out[column] = _json_number(float(self.raw[column]))
            except ValueError:
                continue  # a text cell in a column nobody judges (e.g. a description) is not a metric
        return out


def _json_number(number: float) -> JsonNumber:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def _decode(data: bytes | str, source: str) -> str:
    if isinstance(data, bytes):
        if len(data) > MAX_EVALUATION_BYTES:
            raise EvaluationError(f"{source}: {len(data)} bytes is too large for an Evaluate Model CSV")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise EvaluationError(f"{source}: not a UTF-8 text file, so not an Evaluate Model CSV") from None
    else:
        text = data.removeprefix("\ufeff")
    if "\x00" in text:
        raise EvaluationError(f"{source}: contains NUL bytes, so not an Evaluate Model CSV")
    return text


def _check_header(header: tuple[str, ...], source: str) -> None:
    if not set(header) & set(KNOWN_METRICS):
        shown = ", ".join(repr(c[:40]) for c in header[:8])
        raise EvaluationError(
            f"{source}: not an Evaluate Model CSV; the header has none of the Studio metric columns "
            f"(got {shown}); expected e.g. {', '.join(BINARY_METRICS)} or {', '.join(REGRESSION_METRICS)}"
        )
    if "" in header:
        raise EvaluationError(f"{source}: the header has an empty column name (column {header.index('') + 1})")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise EvaluationError(f"{source}: duplicate columns {duplicates}")


def parse_evaluation_csv(data: bytes | str, source: str, row: int = 0) -> EvaluationResults:
    """Parse an Evaluate Model CSV (BOM, CRLF, quoted headers and padding tolerated).

    ``source`` is ``container/path`` and appears in every error; ``row`` is the 0-based data row to
    judge (0 = the scored model; 1 = the "scored dataset to compare" when both inputs are wired).
    """
    text = _decode(data, source)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise EvaluationError(f"{source}: the file is empty; expected a header row and a data row")
    delimiter = "\t" if "\t" in lines[0] and "," not in lines[0] else ","
    try:
        records = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, skipinitialspace=True))
    except csv.Error as err:
        raise EvaluationError(f"{source}: not a readable CSV ({err})") from None
    header = tuple(cell.strip() for cell in records[0])
    _check_header(header, source)
    rows = records[1:]
    if not rows:
        raise EvaluationError(f"{source}: header only, no data row; the evaluation produced no results")
    for number, record in enumerate(rows):
        if len(record) != len(header):
            raise EvaluationError(
                f"{source}: data row {number} has {len(record)} fields but the header has {len(header)}"
            )
    if not 0 <= row < len(rows):
        raise EvaluationError(f"{source}: row {row} requested but the file has {len(rows)} data row(s)")
    raw = {column: cell.strip() for column, cell in zip(header, rows[row], strict=True)}
    return EvaluationResults(source=source, columns=header, raw=raw, row=row, row_count=len(rows))


# --------------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class Guard:
    """A bound on one metric of the challenger (``min <= value <= max``)."""

    metric: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Rules:
    """Validated evaluation rules; build with :func:`parse_rules`."""

    metric: str
    higher_is_better: bool
    threshold: float | None = None
    min_absolute_improvement: float | None = None
    min_relative_improvement: float | None = None
    on_missing_champion_metric: Literal["error", "skip"] = "error"
    guards: tuple[Guard, ...] = field(default_factory=tuple)


def _number(value: Any, field_name: str, *, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigurationError(f"{field_name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{field_name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigurationError(f"{field_name}: expected a finite number, got {value!r}")
    if non_negative and number < 0:
        raise ConfigurationError(
            f"{field_name}: must be >= 0 (an improvement the challenger must show), got {value!r}; "
            "to accept a worse model than the champion, do not pass champion_metrics"
        )
    return number


def _optional_number(rules: Mapping[str, Any], key: str, *, non_negative: bool = False) -> float | None:
    value = rules.get(key)
    return None if value is None else _number(value, f"rules.{key}", non_negative=non_negative)


def _check_keys(value: Mapping[str, Any], allowed: Sequence[str], field_name: str) -> None:
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ConfigurationError(f"{field_name}: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")


def _parse_guard(value: Any, field_name: str) -> Guard:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{field_name}: expected {{'metric': ..., 'min': ..., 'max': ...}}, got {value!r}")
    _check_keys(value, GUARD_KEYS, field_name)
    metric = resolve_metric_name(value.get("metric"), f"{field_name}.metric")
    low = None if value.get("min") is None else _number(value["min"], f"{field_name}.min")
    high = None if value.get("max") is None else _number(value["max"], f"{field_name}.max")
    if low is None and high is None:
        raise ConfigurationError(f"{field_name}: give 'min' and/or 'max' for {metric!r}")
    if low is not None and high is not None and low > high:
        raise ConfigurationError(f"{field_name}: min {low} is greater than max {high} for {metric!r}")
    return Guard(metric=metric, min=low, max=high)


def parse_rules(value: Any) -> Rules:
    """Validate rules (a dict, or its JSON / Python-repr text); errors name the offending field."""
    value = parse_structured(value, "rules")
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"rules: expected a mapping with at least 'metric', got {type(value).__name__}")
    _check_keys(value, RULE_KEYS, "rules")
    metric = resolve_metric_name(value.get("metric"), "rules.metric")

    direction = value.get("higher_is_better")
    if direction is None:
        inferred = KNOWN_METRICS[metric]
        if inferred is None:
            raise ConfigurationError(
                f"rules.higher_is_better: the direction of {metric!r} is ambiguous in Studio's docs; set it to "
                "true or false"
            )
        direction = inferred
    elif not isinstance(direction, bool):
        raise ConfigurationError(f"rules.higher_is_better: expected true or false, got {direction!r}")

    policy = value.get("on_missing_champion_metric", "error")
    if policy not in MISSING_CHAMPION_POLICIES:
        raise ConfigurationError(
            f"rules.on_missing_champion_metric: expected one of {list(MISSING_CHAMPION_POLICIES)}, got {policy!r}"
        )

    raw_guards = value.get("guards") or []
    if isinstance(raw_guards, Mapping) or not isinstance(raw_guards, Sequence) or isinstance(raw_guards, str):
        raise ConfigurationError(f"rules.guards: expected a list of {{'metric', 'min'|'max'}}, got {raw_guards!r}")
    guards = tuple(_parse_guard(g, f"rules.guards[{i}]") for i, g in enumerate(raw_guards))

    return Rules(
        metric=metric,
        higher_is_better=direction,
        threshold=_optional_number(value, "threshold"),
        min_absolute_improvement=_optional_number(value, "min_absolute_improvement", non_negative=True),
        min_relative_improvement=_optional_number(value, "min_relative_improvement", non_negative=True),
        on_missing_champion_metric=policy,
        guards=guards,
    )


def parse_champion_metrics(value: Any) -> dict[str, float] | None:
    """Champion (serving model) metrics; ``None``/empty means nothing is in service.

    Known names and aliases are mapped to Studio column names, other names are kept as given;
    values must be numbers or numeric text ("Infinity" allowed; it only matters if judged).
    """
    value = parse_structured(value, "champion_metrics")
    if value is None or value == "" or (isinstance(value, Mapping) and not value):
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"champion_metrics: expected a mapping of metric name to value, got {value!r}")
    champion: dict[str, float] = {}
    for key, raw in value.items():
        try:
            name = resolve_metric_name(key, "champion_metrics")
        except ConfigurationError:
            name = str(key)
        field_name = f"champion_metrics[{key!r}]"
        if name in champion:
            raise ConfigurationError(f"{field_name}: {name!r} is given twice (names and aliases collide)")
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ConfigurationError(f"{field_name}: expected a number, got {raw!r}")
        try:
            champion[name] = float(raw)
        except ValueError:
            raise ConfigurationError(f"{field_name}: expected a number, got {raw!r}") from None
    return champion


# --------------------------------------------------------------------------------------------------
# Decision


def _reaches(value: float, bound: float) -> bool:
    """``value >= bound``, forgiving float noise (0.83 - 0.82 reaches 0.01)."""
    return value >= bound or math.isclose(value, bound, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _fmt(number: float) -> str:
    return f"{number:.6g}"


def _bound_check(rule: str, metric: str, value: float, bound: float, higher_is_better: bool) -> dict[str, Any]:
    passed = _reaches(value, bound) if higher_is_better else _reaches(-value, -bound)
    sign = ">=" if higher_is_better else "<="
    return {
        "rule": rule,
        "metric": metric,
        "challenger": value,
        "threshold": bound,
        "passed": passed,
        "detail": f"{metric} {_fmt(value)} {'meets' if passed else 'fails'} {rule.replace('_', ' ')} "
        f"{sign} {_fmt(bound)}",
    }


def _improvement_checks(rules: Rules, challenger: float, champion: float) -> list[dict[str, Any]]:
    metric = rules.metric
    gain = challenger - champion if rules.higher_is_better else champion - challenger
    absolute = rules.min_absolute_improvement
    if absolute is None and rules.min_relative_improvement is None:
        absolute = 0.0  # a champion exists: at least do not get worse
    checks: list[dict[str, Any]] = []
    if absolute is not None:
        passed = _reaches(gain, absolute)
        checks.append(
            {
                "rule": "min_absolute_improvement",
                "metric": metric,
                "challenger": challenger,
                "champion": champion,
                "improvement": gain,
                "required": absolute,
                "passed": passed,
                "detail": f"{metric} {_fmt(challenger)} vs champion {_fmt(champion)}: improvement {gain:+.6g} "
                f"{'meets' if passed else 'misses'} the required {_fmt(absolute)}",
            }
        )
    relative = rules.min_relative_improvement
    if relative is not None:
        if champion == 0:
            relative_gain: float | None = None
            passed = gain > 0 if relative > 0 else gain >= 0
            how = f"champion is 0, so any strict improvement counts (improvement {gain:+.6g})"
        else:
            relative_gain = gain / abs(champion)
            passed = _reaches(relative_gain, relative)
            how = f"relative improvement {relative_gain:+.4%}"
        checks.append(
            {
                "rule": "min_relative_improvement",
                "metric": metric,
                "challenger": challenger,
                "champion": champion,
                "improvement": relative_gain,
                "required": relative,
                "passed": passed,
                "detail": f"{metric} {_fmt(challenger)} vs champion {_fmt(champion)}: {how} "
                f"{'meets' if passed else 'misses'} the required {relative:.4%}",
            }
        )
    return checks


def decide(results: EvaluationResults, rules: Rules, champion: Mapping[str, float] | None) -> dict[str, Any]:
    """Judge ``results`` (the challenger) and return a JSON-serialisable decision.

    ``{"promote", "reason", "metric", "higher_is_better", "challenger", "champion", "checks", "task",
    "evaluation_blob", "evaluation_row"}``; each check is ``{"rule", "metric", "challenger",
    "threshold" | "champion", "passed", "detail", ...}``. The challenger is promoted iff every check passes.
    """
    value = results.value(rules.metric, "rules.metric")
    checks: list[dict[str, Any]] = []
    notes: list[str] = []
    if rules.threshold is not None:
        checks.append(_bound_check("threshold", rules.metric, value, rules.threshold, rules.higher_is_better))

    if champion:
        if rules.metric in champion:
            champion_value = champion[rules.metric]
            if not math.isfinite(champion_value):
                raise ConfigurationError(
                    f"champion_metrics[{rules.metric!r}] is {champion_value}; cannot compare against a non-finite value"
                )
            checks.extend(_improvement_checks(rules, value, champion_value))
        elif rules.on_missing_champion_metric == "skip":
            notes.append(f"champion has no {rules.metric!r}, comparison skipped")
        else:
            raise EvaluationError(
                f"champion_metrics has no {rules.metric!r} (it has {sorted(champion)}); cannot compare "
                f"{results.source} with the serving model. Record the metric for the champion, or set "
                "rules.on_missing_champion_metric='skip' to judge on thresholds only"
            )
    else:
        notes.append("no champion recorded, judged on thresholds only")

    for index, guard in enumerate(rules.guards):
        guard_value = results.value(guard.metric, f"rules.guards[{index}].metric")
        if guard.min is not None:
            checks.append(_bound_check("guard_min", guard.metric, guard_value, guard.min, True))
        if guard.max is not None:
            checks.append(_bound_check("guard_max", guard.metric, guard_value, guard.max, False))

    failed = [c for c in checks if not c["passed"]]
    promote = not failed
    if not checks:
        notes.append("no rule applies, so nothing blocks promotion")
    details = [c["detail"] for c in (failed or checks)]
    reason = ("promote: " if promote else "reject: ") + "; ".join(details + notes)
    return {
        "promote": promote,
        "reason": reason,
        "metric": rules.metric,
        "higher_is_better": rules.higher_is_better,
        "challenger": results.metrics(),
        "champion": {k: _json_number(v) for k, v in champion.items()} if champion else None,
        "checks": checks,
        "task": results.task,
        "evaluation_blob": results.source,
        "evaluation_row": results.row,
    }
