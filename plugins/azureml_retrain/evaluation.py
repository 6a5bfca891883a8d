"""Judge a challenger model from Studio's Evaluate Model output against rules and a champion.

Pure logic, no Airflow and no I/O: the operator reads the blob and hands the text here.

Evaluation CSV (contract §5)
    A header row and one data row per scored input. Binary classification has ``Accuracy``,
    ``Precision``, ``Recall``, ``F-Score``, ``AUC``, ``Average Log Loss``, ``Training Log Loss``;
    multiclass classification ``Overall accuracy``, ``Average accuracy``, ``Micro-averaged precision``,
    ``Macro-averaged precision``, ``Micro-averaged recall``, ``Macro-averaged recall``;
    regression has ``Negative Log Likelihood``, ``Mean Absolute Error``, ``Root Mean Squared Error``,
    ``Relative Absolute Error``, ``Relative Squared Error``, ``Coefficient of Determination``.
    When both inputs of Evaluate Model are connected there are two data rows: row 0 is the left
    input (the scored dataset, i.e. the model just trained), row 1 the right input ("scored dataset to
    compare"). **Row 0 is judged by default**; ``row`` selects another one. Cells are parsed as floats;
    ``Infinity``/``NaN`` are accepted in any column but refused in a column that is judged.

Rules (MLflow ``MetricThreshold``-like): :class:`EvaluationRules`, one schema for configs, the
operator and the trigger form, given as a dict::

    {
        "metric": "AUC",                      # required; Studio column name, any case, or an alias
        "higher_is_better": True,             # optional; inferred for known metrics
        "threshold": 0.75,                    # optional; the challenger must reach it
        "min_absolute_improvement": 0.01,     # optional, >= 0; vs the champion, in metric units
        "min_relative_improvement": 0.02,     # optional, >= 0; vs the champion, fraction of |champion|
        "on_missing_champion_metric": "error",  # or "skip"
        "guards": [                           # optional; bounds on metrics of the same kind of model
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

import copy
import csv
import functools
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from azureml_retrain.blobs import BlobLocation, parse_structured, resolve_output
from azureml_retrain.exceptions import ConfigurationError, EvaluationError
from azureml_retrain.validation import explain

Task = Literal["binary", "multiclass", "regression"]
JsonNumber = float | str  # non-finite floats travel as "Infinity" / "-Infinity" / "NaN"


@dataclass(frozen=True)
class MetricSpec:
    """What Studio's Evaluate Model output says about one metric: the kind of model that has it,
    whether higher is better (None: Studio's docs leave it open), and the range its values lie in."""

    task: Task
    higher_is_better: bool | None
    low: float | None = None
    high: float | None = None

    def range_text(self) -> str:
        if self.low is not None and self.high is not None:
            return f"[{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f">= {self.low:g}"
        return f"<= {self.high:g}" if self.high is not None else "any number"

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


_SHARE = {"low": 0.0, "high": 1.0}  # a fraction of the rows or of the classes
_ERROR = {"low": 0.0}

BINARY_METRICS: dict[str, MetricSpec] = {
    "Accuracy": MetricSpec("binary", True, **_SHARE),
    "Precision": MetricSpec("binary", True, **_SHARE),
    "Recall": MetricSpec("binary", True, **_SHARE),
    "F-Score": MetricSpec("binary", True, **_SHARE),
    "AUC": MetricSpec("binary", True, **_SHARE),
    "Average Log Loss": MetricSpec("binary", False, **_ERROR),
    # Studio describes it as "the advantage of the classifier over a random prediction" (a log-loss
    # reduction) while also calling it a log loss; the direction is not guessed.
    "Training Log Loss": MetricSpec("binary", None),
}
MULTICLASS_METRICS: dict[str, MetricSpec] = {
    "Overall accuracy": MetricSpec("multiclass", True, **_SHARE),
    "Average accuracy": MetricSpec("multiclass", True, **_SHARE),
    "Micro-averaged precision": MetricSpec("multiclass", True, **_SHARE),
    "Macro-averaged precision": MetricSpec("multiclass", True, **_SHARE),
    "Micro-averaged recall": MetricSpec("multiclass", True, **_SHARE),
    "Macro-averaged recall": MetricSpec("multiclass", True, **_SHARE),
}
REGRESSION_METRICS: dict[str, MetricSpec] = {
    "Negative Log Likelihood": MetricSpec("regression", False),
    "Mean Absolute Error": MetricSpec("regression", False, **_ERROR),
    "Root Mean Squared Error": MetricSpec("regression", False, **_ERROR),
    "Relative Absolute Error": MetricSpec("regression", False, **_ERROR),
    "Relative Squared Error": MetricSpec("regression", False, **_ERROR),
    "Coefficient of Determination": MetricSpec("regression", True, high=1.0),
    "Mean Zero One Error": MetricSpec("regression", False, **_SHARE),  # documented, not seen in captured CSVs
}
METRICS: dict[str, MetricSpec] = {**BINARY_METRICS, **MULTICLASS_METRICS, **REGRESSION_METRICS}
#: Whether higher is better, by Studio column name (None: not known).
KNOWN_METRICS: dict[str, bool | None] = {name: spec.higher_is_better for name, spec in METRICS.items()}
_BY_TASK = {"binary": BINARY_METRICS, "multiclass": MULTICLASS_METRICS, "regression": REGRESSION_METRICS}

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
            f"multiclass {', '.join(MULTICLASS_METRICS)}; regression {', '.join(REGRESSION_METRICS)} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
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
        if present & set(MULTICLASS_METRICS):
            return "multiclass"
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


def _metric_name(value: Any) -> str:
    try:
        return resolve_metric_name(value, "metric")
    except ConfigurationError as error:
        raise ValueError(str(error).removeprefix("metric: ")) from None


MetricName = Annotated[
    str,
    BeforeValidator(_metric_name),
    Field(description="A column of Studio's Evaluate Model output (any case) or an alias such as f1, rmse, r2."),
]


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would take true for 1.0
        raise ValueError(f"expected a number, got {value!r}")
    return value


FiniteNumber = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_not_a_bool)]
NonNegativeNumber = Annotated[float, Field(allow_inf_nan=False, ge=0), BeforeValidator(_not_a_bool)]


def _out_of_range(name: str, value: float, spec: MetricSpec, what: str) -> str | None:
    if spec.contains(value):
        return None
    return f"{value:g} is out of range for {name}, whose values are {spec.range_text()}: {what}"


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Guard(_Rules):
    """A bound on one metric of the challenger (``min <= value <= max``)."""

    metric: MetricName
    min: FiniteNumber | None = None
    """The lowest value the challenger may have (in the metric's range)."""
    max: FiniteNumber | None = None
    """The highest value the challenger may have (in the metric's range)."""

    @model_validator(mode="after")
    def _bounds(self) -> Guard:
        if self.min is None and self.max is None:
            raise ValueError(f"give 'min' and/or 'max' for {self.metric!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is greater than max {self.max:g} for {self.metric!r}")
        spec = METRICS[self.metric]
        for bound in (self.min, self.max):
            problem = None if bound is None else _out_of_range(self.metric, bound, spec, "fix the bound")
            if problem:
                raise ValueError(problem)
        return self


class EvaluationRules(_Rules):
    """How EvaluateModelOperator judges a challenger: one schema for the configs, the operator and the
    trigger form's ``rules`` override."""

    metric: MetricName
    higher_is_better: bool | None = Field(
        default=None, validate_default=True, description="Inferred for known metrics when left out."
    )
    threshold: FiniteNumber | None = Field(default=None, description="The challenger must reach it.")
    min_absolute_improvement: NonNegativeNumber | None = Field(
        default=None, description="Over the champion, in the metric's units."
    )
    min_relative_improvement: NonNegativeNumber | None = Field(
        default=None, description="Over the champion, as a fraction of |champion|."
    )
    on_missing_champion_metric: Literal["error", "skip"] = Field(
        default="error", description="When the champion has no value of the metric: fail, or skip the comparison."
    )
    guards: list[Guard] = Field(default_factory=list, description="Bounds on metrics of the challenger.")

    @field_validator("higher_is_better")
    @classmethod
    def _direction(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        metric = info.data.get("metric")
        if value is None and metric is not None:
            value = METRICS[metric].higher_is_better
            if value is None:
                raise ValueError(
                    f"the direction of {metric!r} is ambiguous in Studio's docs; set higher_is_better to true or false"
                )
        return value

    @field_validator("threshold")
    @classmethod
    def _reachable(cls, value: float | None, info: ValidationInfo) -> float | None:
        metric = info.data.get("metric")
        if value is not None and metric is not None:
            problem = _out_of_range(metric, value, METRICS[metric], "a threshold no model can reach never promotes")
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("guards")
    @classmethod
    def _same_task(cls, guards: list[Guard], info: ValidationInfo) -> list[Guard]:
        metric = info.data.get("metric")
        if metric is None:
            return guards
        task = METRICS[metric].task
        for index, guard in enumerate(guards):
            if METRICS[guard.metric].task != task:
                raise ValueError(
                    f"guard {index} ({guard.metric!r}) is a {METRICS[guard.metric].task} metric, but the rules judge "
                    f"a {task} model ({metric!r}), whose evaluation has only {', '.join(_BY_TASK[task])}"
                )
        return guards

    @property
    def task(self) -> Task:
        """The kind of model these rules judge (from the metric)."""
        return METRICS[self.metric].task

    @property
    def direction(self) -> bool:
        if self.higher_is_better is None:  # set by validation; kept for a type checker
            raise ConfigurationError("rules.higher_is_better: not set")
        return self.higher_is_better


def rules_error(error: ValidationError, prefix: str = "rules") -> ConfigurationError:
    """One ConfigurationError listing every problem of a rules mapping, each naming its field."""
    lines = [
        f"{prefix}.{field}: {message}" if field else f"{prefix}: {message}"
        for field, message in explain(error, EvaluationRules, "the rules")
    ]
    return ConfigurationError("\n".join(lines))


def parse_rules(value: Any) -> EvaluationRules:
    """Validate rules (a dict, or its JSON / Python-repr text); errors name the offending field."""
    if isinstance(value, EvaluationRules):
        return value
    value = parse_structured(value, "rules")
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"rules: expected a mapping with at least 'metric', got {type(value).__name__}")
    try:
        return EvaluationRules.model_validate(dict(value))
    except ValidationError as error:
        raise rules_error(error) from None


def rules_json_schema() -> dict[str, Any]:
    """The JSON schema of the rules, reduced to what a person filling the trigger form's ``rules``
    field needs: the fields, their types, fixed choices and bounds (no ``$defs``/``$ref``, titles or
    defaults). Ranges that depend on the metric are checked by the model when the run plans. A copy:
    the schema is built once per process, and callers may change theirs."""
    return copy.deepcopy(_rules_json_schema())


@functools.cache
def _rules_json_schema() -> dict[str, Any]:
    full = EvaluationRules.model_json_schema()
    reduced = _form_schema(full, full.get("$defs", {}))
    reduced.pop("description")  # the class's docstring, for readers of the code
    return reduced


def _form_schema(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    variants = schema.get("anyOf")
    if variants:  # pydantic's ``X | None``: one schema whose type also takes null
        kept = [_form_schema(v, defs) for v in variants if v.get("type") != "null"]
        merged: dict[str, Any] = dict(kept[0]) if len(kept) == 1 else {"anyOf": kept}
        if len(kept) < len(variants) and "type" in merged:
            merged["type"] = [merged["type"], "null"]
        if "description" in schema:
            merged["description"] = schema["description"]
        return merged
    keep = ("type", "enum", "minimum", "maximum", "required", "additionalProperties", "description")
    reduced = {key: schema[key] for key in keep if key in schema}
    if "properties" in schema:
        reduced["properties"] = {name: _form_schema(field, defs) for name, field in schema["properties"].items()}
    if "items" in schema:
        reduced["items"] = _form_schema(schema["items"], defs)
    return reduced


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


def _improvement_checks(rules: EvaluationRules, challenger: float, champion: float) -> list[dict[str, Any]]:
    metric = rules.metric
    gain = challenger - champion if rules.direction else champion - challenger
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


def decide(results: EvaluationResults, rules: EvaluationRules, champion: Mapping[str, float] | None) -> dict[str, Any]:
    """Judge ``results`` (the challenger) and return a JSON-serialisable decision.

    ``{"promote", "reason", "metric", "higher_is_better", "challenger", "champion", "checks", "task",
    "evaluation_blob", "evaluation_row"}``; each check is ``{"rule", "metric", "challenger",
    "threshold" | "champion", "passed", "detail", ...}``. The challenger is promoted iff every check passes.
    """
    value = results.value(rules.metric, "rules.metric")
    checks: list[dict[str, Any]] = []
    notes: list[str] = []
    if rules.threshold is not None:
        checks.append(_bound_check("threshold", rules.metric, value, rules.threshold, rules.direction))

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
        "higher_is_better": rules.direction,
        "challenger": results.metrics(),
        "champion": {k: _json_number(v) for k, v in champion.items()} if champion else None,
        "checks": checks,
        "task": results.task,
        "evaluation_blob": results.source,
        "evaluation_row": results.row,
    }
