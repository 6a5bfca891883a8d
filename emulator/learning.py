"""Real training, evaluation and scoring with scikit-learn, and the ``.ilearner`` file format.

An ``.ilearner`` written by the emulator is a zip archive with two members:

- ``ilearner.json``: format tag and metadata (experiment, task, features, label, classes, learner,
  parameters, training time and row count);
- ``model.skops``: the fitted scikit-learn pipeline, serialised with skops (never pickle) and loaded
  back only with an explicit list of trusted types.

Errors a user can cause (bad CSV, wrong columns, bad parameter values, an incompatible model) raise
:class:`TrainingError` / :class:`ModelFormatError` with a message that names the column or row; a
:class:`TrainingError` carries the Studio module error (:class:`ModuleError`) a failed job reports.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import numpy as np
import skops.io as skops_io
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from emulator.catalog import Experiment, GlobalParameter, Learner, ParameterType, Task
from emulator.errors import job_failure_details

ILEARNER_FORMAT = "azureml-emulator-ilearner/1"
# Types skops does not trust by default that our pipelines contain; nothing else is loaded.
TRUSTED_MODEL_TYPES = ["sklearn.tree._tree.Tree"]
MAX_MODEL_BYTES = 64 * 1024 * 1024
# skops parses with ``ast``, whose constructor can fail spuriously when threads parse at once
# ("AST constructor recursion depth mismatch", seen on Python 3.11; see CPython gh-106905): one model
# load at a time, as 50 concurrent PATCHes of endpoints otherwise fail one now and then.
_MODEL_LOAD = threading.Lock()

BINARY_EVALUATION_COLUMNS = (
    "Accuracy",
    "Precision",
    "Recall",
    "F-Score",
    "AUC",
    "Average Log Loss",
    "Training Log Loss",
)
REGRESSION_EVALUATION_COLUMNS = (
    "Negative Log Likelihood",
    "Mean Absolute Error",
    "Root Mean Squared Error",
    "Relative Absolute Error",
    "Relative Squared Error",
    "Coefficient of Determination",
)
SCORED_LABELS = "Scored Labels"
SCORED_PROBABILITIES = "Scored Probabilities"


class ModuleError(Enum):
    """Studio module errors a training job can end with: (number, the specific code in ``Details``).

    The numbers and their meanings are Studio's published module error list; the specific codes are
    the emulator's names for them (Studio's own are not published).
    """

    COLUMN_NOT_FOUND = (1, "ColumnNotFound")
    PARAMETER_NOT_PARSED = (2, "ParameterParseError")
    EMPTY_INPUT = (3, "NullOrEmptyInput")
    PARAMETER_BELOW_MINIMUM = (5, "ParameterBelowMinimum")
    PARAMETER_ABOVE_MAXIMUM = (7, "ParameterAboveMaximum")
    PARAMETER_OUT_OF_RANGE = (8, "ParameterOutOfRange")
    INVALID_DATASET = (18, "InvalidDataset")
    TOO_FEW_ROWS = (21, "TooFewRows")
    DUPLICATE_COLUMN_NAMES = (26, "DuplicateColumnNames")
    DOWNLOAD_FAILED = (30, "FileDownloadFailed")
    FILE_NOT_PARSED = (49, "FileParseError")
    UPLOAD_FAILED = (66, "BlobUploadFailed")
    TOO_FEW_LABELED_ROWS = (134, "TooFewLabeledRows")
    LIBRARY_EXCEPTION = (1000, "LibraryException")

    @property
    def number(self) -> int:
        return int(self.value[0])

    @property
    def code(self) -> str:
        return str(self.value[1])


TRAIN_MODEL = "Train Model"
# The Studio module behind each learner: where its settings (and the parameters feeding them) live.
LEARNER_MODULES = {
    Learner.TWO_CLASS_LOGISTIC_REGRESSION: "Two-Class Logistic Regression",
    Learner.TWO_CLASS_BOOSTED_DECISION_TREE: "Two-Class Boosted Decision Tree",
    Learner.LINEAR_REGRESSION: "Linear Regression",
    Learner.BOOSTED_DECISION_TREE_REGRESSION: "Boosted Decision Tree Regression",
}


class TrainingError(ValueError):
    """The job cannot train a model: Studio module error ``error``, raised by module ``module``.

    The message names the column, row or parameter; :meth:`details` is the failed job's ``Details``.
    """

    def __init__(
        self, message: str, error: ModuleError = ModuleError.INVALID_DATASET, *, module: str = TRAIN_MODEL
    ) -> None:
        super().__init__(message)
        self.error = error
        self.module = module

    def details(self) -> str:
        return job_failure_details(self.error.number, self.error.code, self.module, str(self))


class ModelFormatError(ValueError):
    """Bytes that are not a valid ``.ilearner``, or a model that does not fit a service."""


class ScoringInputError(ValueError):
    """Scoring input that does not fit the model; ``mismatch`` tells schema from value errors."""

    def __init__(self, message: str, *, mismatch: bool) -> None:
        super().__init__(message)
        self.mismatch = mismatch


@dataclass(frozen=True)
class ModelMetadata:
    experiment: str
    title: str
    task: Task
    features: tuple[str, ...]
    label: str
    classes: tuple[str, str] | None
    learner: Learner
    parameters: dict[str, Any] = field(default_factory=dict)
    trained_at: str = ""
    training_rows: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["task"] = self.task.value
        data["learner"] = self.learner.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMetadata:
        try:
            classes = data["classes"]
            return cls(
                experiment=str(data["experiment"]),
                title=str(data["title"]),
                task=Task(data["task"]),
                features=tuple(str(f) for f in data["features"]),
                label=str(data["label"]),
                classes=(str(classes[0]), str(classes[1])) if classes else None,
                learner=Learner(data["learner"]),
                parameters=dict(data.get("parameters") or {}),
                trained_at=str(data.get("trained_at", "")),
                training_rows=int(data.get("training_rows", 0)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFormatError(f"ilearner metadata is invalid: {exc!r}") from exc


@dataclass(frozen=True)
class TrainedModel:
    metadata: ModelMetadata
    pipeline: Pipeline


@dataclass(frozen=True)
class TrainingResult:
    model: TrainedModel
    ilearner: bytes
    evaluation: dict[str, float]


# --- reading tables ---------------------------------------------------------------------------


def read_table(data: bytes, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    """Header and rows of a delimited text file; raises TrainingError naming the bad line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrainingError(
            f"The input dataset is not UTF-8 text (byte {exc.start}).", ModuleError.FILE_NOT_PARSED
        ) from exc
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        lines = [row for row in reader if row]
    except csv.Error as exc:
        raise TrainingError(f"Malformed CSV at line {reader.line_num}: {exc}.", ModuleError.FILE_NOT_PARSED) from exc
    if not lines:
        raise TrainingError("The input dataset is empty: a header row is required.", ModuleError.EMPTY_INPUT)
    header = [name.strip() for name in lines[0]]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise TrainingError(
            f"Duplicate column name(s) in the header row: {duplicates}.", ModuleError.DUPLICATE_COLUMN_NAMES
        )
    for number, row in enumerate(lines[1:], start=2):
        if len(row) != len(header):
            raise TrainingError(
                f"Malformed CSV at line {number}: {len(row)} fields, the header has {len(header)}.",
                ModuleError.FILE_NOT_PARSED,
            )
    return header, lines[1:]


def _number(value: str, column: str, line: int) -> float:
    text = value.strip()
    if not text:
        raise TrainingError(f"Column '{column}' has a missing value at line {line}.")
    try:
        number = float(text)
    except ValueError:
        raise TrainingError(f"Column '{column}' is not numeric: value '{text}' at line {line}.") from None
    if not math.isfinite(number):
        raise TrainingError(f"Column '{column}' is not numeric: value '{text}' at line {line}.")
    return number


def _training_arrays(experiment: Experiment, header: list[str], rows: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    required = [*experiment.feature_names, experiment.label]
    missing = [name for name in required if name not in header]
    if missing:
        raise TrainingError(
            f"Column(s) {missing} not found in the input dataset; expected {required}, got {header}.",
            ModuleError.COLUMN_NOT_FOUND,
        )
    if len(rows) < experiment.min_rows:
        raise TrainingError(
            f"The input dataset has {len(rows)} rows; training needs at least {experiment.min_rows}.",
            ModuleError.TOO_FEW_ROWS,
        )
    feature_index = [header.index(name) for name in experiment.feature_names]
    label_index = header.index(experiment.label)
    features = np.array(
        [[_number(row[i], header[i], line) for i in feature_index] for line, row in enumerate(rows, start=2)]
    )
    if experiment.classes is None:
        labels = np.array([_number(row[label_index], experiment.label, line) for line, row in enumerate(rows, start=2)])
        return features, labels
    negative, positive = experiment.classes
    encoded = []
    for line, row in enumerate(rows, start=2):
        value = row[label_index].strip()
        if value not in experiment.classes:
            raise TrainingError(
                f"Label column '{experiment.label}' has value '{value}' at line {line}; "
                f"expected one of ['{negative}', '{positive}']."
            )
        encoded.append(1 if value == positive else 0)
    labels = np.array(encoded)
    for code, name in ((0, negative), (1, positive)):
        if int((labels == code).sum()) < 4:
            raise TrainingError(
                f"Label column '{experiment.label}' has fewer than 4 rows of class '{name}'.",
                ModuleError.TOO_FEW_LABELED_ROWS,
            )
    return features, labels


# --- learner settings --------------------------------------------------------------------------


def _coerce(parameter: GlobalParameter, value: object, module: str) -> int | float | str | bool:
    text = str(value).strip()
    try:
        if parameter.type is ParameterType.INT:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            coerced: int | float | str | bool = int(float(text)) if isinstance(value, float) else int(text)
        elif parameter.type is ParameterType.DOUBLE:
            coerced = float(text)
            if not math.isfinite(coerced):
                raise ValueError
        elif parameter.type is ParameterType.BOOLEAN:
            if text.lower() not in ("true", "false"):
                raise ValueError
            coerced = text.lower() == "true"
        else:
            coerced = text
    except ValueError:
        raise TrainingError(
            f"Global parameter '{parameter.name}' expects a {parameter.type.value} value, got '{text}'.",
            ModuleError.PARAMETER_NOT_PARSED,
            module=module,
        ) from None
    if isinstance(coerced, int | float) and not isinstance(coerced, bool):
        # Studio: 0008 for a value outside a range, 0005 / 0007 for a one-sided bound.
        bounded = parameter.minimum is not None and parameter.maximum is not None
        if parameter.minimum is not None and coerced < parameter.minimum:
            raise TrainingError(
                f"Global parameter '{parameter.name}' must be >= {parameter.minimum:g}, got {text}.",
                ModuleError.PARAMETER_OUT_OF_RANGE if bounded else ModuleError.PARAMETER_BELOW_MINIMUM,
                module=module,
            )
        if parameter.maximum is not None and coerced > parameter.maximum:
            raise TrainingError(
                f"Global parameter '{parameter.name}' must be <= {parameter.maximum:g}, got {text}.",
                ModuleError.PARAMETER_OUT_OF_RANGE if bounded else ModuleError.PARAMETER_ABOVE_MAXIMUM,
                module=module,
            )
    return coerced


def resolve_parameters(experiment: Experiment, given: dict[str, object]) -> dict[str, int | float | str | bool]:
    """Every declared global parameter's effective value (given value, else its default)."""
    values: dict[str, int | float | str | bool] = {}
    for parameter in experiment.global_parameters:
        # A parameter that sets a learner setting is that learner module's to refuse.
        module = LEARNER_MODULES[experiment.learner] if parameter.learner_parameter else TRAIN_MODEL
        if parameter.name in given:
            values[parameter.name] = _coerce(parameter, given[parameter.name], module)
        elif parameter.default is not None:
            values[parameter.name] = _coerce(parameter, parameter.default, module)
    return values


def _pipeline(experiment: Experiment, parameters: dict[str, int | float | str | bool]) -> Pipeline:
    settings: dict[str, Any] = dict(experiment.learner_settings)
    for parameter in experiment.global_parameters:
        if parameter.learner_parameter is not None and parameter.name in parameters:
            settings[parameter.learner_parameter] = parameters[parameter.name]
    seed = experiment.split.random_seed
    learner = experiment.learner
    estimator: Any
    if learner is Learner.TWO_CLASS_LOGISTIC_REGRESSION:
        estimator = LogisticRegression(**settings)
    elif learner is Learner.TWO_CLASS_BOOSTED_DECISION_TREE:
        estimator = GradientBoostingClassifier(random_state=seed, **settings)
    elif learner is Learner.LINEAR_REGRESSION:
        estimator = Ridge(**settings)
    else:
        estimator = GradientBoostingRegressor(random_state=seed, **settings)
    return Pipeline([("scale", StandardScaler()), ("learner", estimator)])


# --- training and evaluation -------------------------------------------------------------------


def train(
    experiment: Experiment, data: bytes, global_parameters: dict[str, object], delimiter: str = ","
) -> TrainingResult:
    """Train the experiment's learner on ``data`` and evaluate it on the held-out split."""
    header, rows = read_table(data, delimiter)
    features, labels = _training_arrays(experiment, header, rows)
    parameters = resolve_parameters(experiment, global_parameters)
    split = experiment.split
    stratify = labels if experiment.task is Task.BINARY else None
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, train_size=split.train_fraction, random_state=split.random_seed, stratify=stratify
    )
    pipeline = _pipeline(experiment, parameters)
    try:
        pipeline.fit(x_train, y_train)
    except ValueError as exc:  # sklearn's InvalidParameterError is a ValueError
        raise TrainingError(
            f"The learner rejected its settings: {exc}",
            ModuleError.PARAMETER_OUT_OF_RANGE,
            module=LEARNER_MODULES[experiment.learner],
        ) from exc
    if experiment.task is Task.BINARY:
        evaluation = _evaluate_binary(pipeline, x_train, y_train, x_test, y_test)
    else:
        evaluation = _evaluate_regression(pipeline, x_train, y_train, x_test, y_test)
    metadata = ModelMetadata(
        experiment=experiment.key,
        title=experiment.title,
        task=experiment.task,
        features=tuple(experiment.feature_names),
        label=experiment.label,
        classes=experiment.classes,
        learner=experiment.learner,
        parameters=dict(parameters),
        trained_at=datetime.now(UTC).isoformat(),
        training_rows=len(y_train),
    )
    model = TrainedModel(metadata, pipeline)
    return TrainingResult(model, dump_ilearner(model), evaluation)


def _evaluate_binary(
    pipeline: Pipeline, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, float]:
    probabilities = pipeline.predict_proba(x_test)[:, 1]
    predicted = (probabilities >= 0.5).astype(int)
    average_log_loss = float(log_loss(y_test, probabilities, labels=[0, 1]))
    # Studio's "Training Log Loss": the classifier's advantage over predicting the training prior.
    prior = float(np.clip(y_train.mean(), 1e-15, 1 - 1e-15))
    baseline = float(log_loss(y_test, np.full(len(y_test), prior), labels=[0, 1]))
    return {
        "Accuracy": float(accuracy_score(y_test, predicted)),
        "Precision": float(precision_score(y_test, predicted, zero_division=0)),
        "Recall": float(recall_score(y_test, predicted, zero_division=0)),
        "F-Score": float(f1_score(y_test, predicted, zero_division=0)),
        "AUC": float(roc_auc_score(y_test, probabilities)),
        "Average Log Loss": average_log_loss,
        "Training Log Loss": 1.0 - average_log_loss / baseline if baseline > 0 else 0.0,
    }


def _evaluate_regression(
    pipeline: Pipeline, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, float]:
    errors = y_test - pipeline.predict(x_test)
    deviations = y_test - y_test.mean()
    # Gaussian likelihood with the training residual variance, summed over the test rows.
    variance = float(np.mean((y_train - pipeline.predict(x_train)) ** 2)) or 1e-12
    nll = float(np.sum(0.5 * np.log(2 * np.pi * variance) + errors**2 / (2 * variance)))
    absolute = float(np.sum(np.abs(deviations))) or 1e-12
    squared = float(np.sum(deviations**2)) or 1e-12
    relative_squared = float(np.sum(errors**2)) / squared
    return {
        "Negative Log Likelihood": nll,
        "Mean Absolute Error": float(np.mean(np.abs(errors))),
        "Root Mean Squared Error": float(np.sqrt(np.mean(errors**2))),
        "Relative Absolute Error": float(np.sum(np.abs(errors))) / absolute,
        "Relative Squared Error": relative_squared,
        "Coefficient of Determination": 1.0 - relative_squared,
    }


def evaluation_file(evaluation: dict[str, float], extension: str) -> bytes:
    """The Evaluate Model dataset: one header row and one data row, as CSV, TSV or ARFF."""
    columns = list(evaluation)
    values = [format_number(evaluation[c]) for c in columns]
    if extension == ".arff":
        lines = ["@RELATION 'Evaluation results'", ""]
        lines += [f"@ATTRIBUTE '{column}' NUMERIC" for column in columns]
        lines += ["", "@DATA", ",".join(values)]
        return ("\n".join(lines) + "\n").encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if extension == ".tsv" else ",", lineterminator="\n")
    writer.writerow(columns)
    writer.writerow(values)
    return buffer.getvalue().encode()


def format_number(value: float) -> str:
    return f"{value:.15g}"


# --- the .ilearner format ----------------------------------------------------------------------


def dump_ilearner(model: TrainedModel) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ilearner.json", json.dumps({"format": ILEARNER_FORMAT, "metadata": model.metadata.to_json()}))
        archive.writestr("model.skops", skops_io.dumps(model.pipeline))
    return buffer.getvalue()


def load_ilearner(data: bytes) -> TrainedModel:
    """Parse and load an ``.ilearner``; raises ModelFormatError for anything but our format."""
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFormatError(f"The model is {len(data)} bytes; the emulator accepts at most {MAX_MODEL_BYTES}.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = set(archive.namelist())
            if members != {"ilearner.json", "model.skops"}:
                raise ModelFormatError(f"Not an emulator .ilearner archive (members: {sorted(members)}).")
            header = json.loads(archive.read("ilearner.json"))
            serialized = archive.read("model.skops")
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"Not a valid .ilearner file: {exc}.") from exc
    if not isinstance(header, dict) or header.get("format") != ILEARNER_FORMAT:
        raise ModelFormatError(f"Unsupported .ilearner format; expected '{ILEARNER_FORMAT}'.")
    metadata = ModelMetadata.from_json(header.get("metadata") or {})
    try:
        with _MODEL_LOAD:
            untrusted = set(skops_io.get_untrusted_types(data=serialized))
            if untrusted - set(TRUSTED_MODEL_TYPES):
                raise ModelFormatError(
                    f"The model contains untrusted types: {sorted(untrusted - set(TRUSTED_MODEL_TYPES))}."
                )
            pipeline = skops_io.loads(serialized, trusted=TRUSTED_MODEL_TYPES)
    except ModelFormatError:
        raise
    except Exception as exc:  # skops raises many types on corrupt input
        raise ModelFormatError(f"The model payload cannot be loaded: {exc!r}.") from exc
    if not isinstance(pipeline, Pipeline) or not hasattr(pipeline, "predict"):
        raise ModelFormatError("The model payload is not a scikit-learn pipeline.")
    expected_width = getattr(pipeline, "n_features_in_", len(metadata.features))
    if expected_width != len(metadata.features):
        raise ModelFormatError("The model's feature count does not match its metadata.")
    return TrainedModel(metadata, pipeline)


def check_compatible(model: TrainedModel, experiment: Experiment) -> None:
    """Raise ModelFormatError unless ``model`` can serve a service built from ``experiment``."""
    meta = model.metadata
    if meta.task is not experiment.task:
        raise ModelFormatError(f"The model is a {meta.task.value} model; the service needs {experiment.task.value}.")
    if set(meta.features) != set(experiment.feature_names):
        raise ModelFormatError(
            f"The model's features {list(meta.features)} do not match the service input schema "
            f"{experiment.feature_names}."
        )
    if meta.label != experiment.label or meta.classes != experiment.classes:
        raise ModelFormatError(
            f"The model predicts '{meta.label}' {list(meta.classes or ())}; the service expects "
            f"'{experiment.label}' {list(experiment.classes or ())}."
        )


# --- scoring -----------------------------------------------------------------------------------


def score_columns(model: TrainedModel) -> list[tuple[str, str]]:
    """Output column names and Studio column types."""
    if model.metadata.task is Task.BINARY:
        return [(SCORED_LABELS, "String"), (SCORED_PROBABILITIES, "Double")]
    return [(SCORED_LABELS, "Double")]


def score(model: TrainedModel, records: list[dict[str, object]], allowed_extra: set[str]) -> list[list[str]]:
    """Score row records (column -> value); returns the score columns as strings, row by row."""
    features = model.metadata.features
    matrix = []
    for number, record in enumerate(records, start=1):
        unknown = sorted(set(record) - set(features) - allowed_extra)
        if unknown:
            raise ScoringInputError(f"Row {number}: unknown column(s) {unknown}.", mismatch=True)
        missing = [name for name in features if name not in record]
        if missing:
            raise ScoringInputError(f"Row {number}: missing column(s) {missing}.", mismatch=True)
        row = []
        for name in features:
            value = record[name]
            try:
                number_value = float(str(value).strip())
            except ValueError:
                raise ScoringInputError(
                    f"Column '{name}' row {number}: '{value}' is not a number.", mismatch=False
                ) from None
            if not math.isfinite(number_value):
                raise ScoringInputError(f"Column '{name}' row {number}: '{value}' is not a number.", mismatch=False)
            row.append(number_value)
        matrix.append(row)
    if not matrix:
        return []
    x = np.array(matrix)
    if model.metadata.classes is None:
        return [[format_number(float(v))] for v in model.pipeline.predict(x)]
    negative, positive = model.metadata.classes
    probabilities = model.pipeline.predict_proba(x)[:, 1]
    return [[positive if p >= 0.5 else negative, format_number(float(p))] for p in probabilities]
