"""Retraining configs: one small YAML file per retrained model, validated with errors that name the
file and the field.

A config says which training web service to run, where its data lands and how it is partitioned,
the schedule, the evaluation rules, and the serving targets to promote to. The DAG factory
(:mod:`azureml_retrain.factory`) turns each into one DAG.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from azureml_retrain.approval import ApprovalRules
from azureml_retrain.evaluation import EvaluationRules
from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.ledger import DEFAULT_LEDGER_CONTAINER
from azureml_retrain.validation import explain

CONFIG_SUFFIXES = (".yaml", ".yml")
_CONTAINER_RULE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _container(value: str) -> str:
    if not _CONTAINER_RULE.match(value):
        raise ValueError("must be a blob container name: 3-63 lowercase letters, digits and single hyphens")
    return value


class TrainingConfig(_Strict):
    """The training web service (BES) and the names of its ports."""

    azureml_conn_id: str
    """The `azureml_web_service` connection of the training web service's BES endpoint (its API location and key)."""
    input_name: str = "input1"
    """The training experiment's web service input that receives the window's data."""
    model_output: str = "output1"
    """The web service output that writes the trained model (`.ilearner`)."""
    evaluation_output: str = "output2"
    """The web service output that writes Evaluate Model's results (CSV)."""
    global_parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """The BES job's global parameters (the experiment's web service parameters), by name."""
    job_timeout_minutes: float = Field(default=360, gt=0)
    """How long the BES job may run; past it the job is cancelled and the task fails."""
    poll_interval_seconds: float = Field(default=1, gt=0)
    """Seconds before the first status check of the BES job; the interval doubles up to 60 s."""


class DataConfig(_Strict):
    """Where a window's training data lands. ``prefix``, ``pattern`` and ``marker`` may use
    ``{window_start:%Y-%m-%d}`` / ``{window_end:...}`` placeholders."""

    wasb_conn_id: str = "wasb_default"
    """The `wasb` connection of the storage account the data lands in."""
    container: Annotated[str, Field(min_length=3)]
    """The blob container the data lands in (Azure's container naming rules)."""
    prefix: str
    """The window's folder in the container, e.g. `churn/{window_start:%Y-%m-%d}/`."""
    pattern: str | None = "*.csv"
    """Which blobs under the prefix are training data (a glob); null: every blob."""
    marker: str | None = None
    """A blob written last, when the upload is complete (e.g. `_SUCCESS`); null: no marker."""
    min_files: int = Field(default=1, ge=1)
    """How many data blobs the window needs before it counts as complete."""
    stable_for_seconds: float = Field(default=30, ge=0)
    """How long the blobs must stay unchanged (names, sizes, etags) before they count as complete; 0 with a marker."""
    poke_interval_seconds: float = Field(default=30, gt=0)
    """Seconds between two checks of the container (one list request each, in the triggerer)."""
    timeout_hours: float = Field(default=12, gt=0)
    """How long the sensor waits for the window's data before the run fails."""

    _check_container = field_validator("container")(_container)

    @field_validator("prefix", "pattern", "marker")
    @classmethod
    def _known_placeholders(cls, value: str | None, info: ValidationInfo) -> str | None:
        from azureml_retrain.sensors.blob_arrival import format_with_window
        from azureml_retrain.windows import Window

        if value is not None:
            sample = datetime(2026, 1, 1, tzinfo=UTC)
            try:
                format_with_window(value, Window(sample, sample + timedelta(days=1), "schedule"), str(info.field_name))
            except ConfigurationError as error:
                raise ValueError(str(error).removeprefix(f"{info.field_name}: ")) from None
        return value


class OutputConfig(_Strict):
    """Where trained models and evaluations are written: ``{container}/{prefix}/{window}/{run}/...``,
    a path no other run uses, so nothing is ever overwritten."""

    container: str
    """The blob container of trained models and evaluation results (Azure's container naming rules)."""
    prefix: str
    """The folder in the container; each run writes under `<prefix>/<window>/<run>/`."""

    _check_container = field_validator("container")(_container)


class ClassicEndpointTarget(_Strict):
    """A non-default endpoint of a classic predictive web service (PatchEndpointOperator)."""

    kind: Literal["classic_endpoint"]
    """Selects this kind of target."""
    name: str
    """The target's name: in the ledger (`records/<name>.jsonl`), the model history and `rollback_model`; unique in the
    config."""
    management_conn_id: str = "azureml_classic_management_default"
    """The `azureml_classic_management` connection of the web service's workspace."""
    web_service_id: str
    """The classic predictive web service's id."""
    endpoint_name: str
    """The endpoint to update: 1-24 lowercase letters and digits, never `default` (Studio cannot patch it)."""
    trained_model_name: str | None = None
    """The trained-model resource to replace (case-sensitive); null: the one whose name ends with `[trained model]`,
    when there is exactly one."""
    create_endpoint: bool = False
    """Add the endpoint when it does not exist yet (else a missing endpoint fails the promotion)."""

    @field_validator("endpoint_name")
    @classmethod
    def _not_default(cls, value: str) -> str:
        if value == "default":
            raise ValueError("the 'default' endpoint cannot be patched; name a non-default endpoint")
        if not re.fullmatch(r"[a-z0-9]{1,24}", value):
            raise ValueError("must be 1-24 lowercase letters and digits")
        return value


class ArmWebServiceTarget(_Strict):
    """A Resource Manager web service (UpdateWebServiceDefinitionOperator)."""

    kind: Literal["arm_web_service"]
    """Selects this kind of target."""
    name: str
    """The target's name: in the ledger (`records/<name>.jsonl`), the model history and `rollback_model`; unique in the
    config."""
    arm_conn_id: str = "azureml_resource_manager_default"
    """The `azureml_resource_manager` connection (subscription, resource group, credentials)."""
    web_service_name: str
    """The Resource Manager web service's name in the connection's resource group."""
    trained_model_name: str | None = None
    """The asset to point at the new model (any casing); null: the one whose name ends with `[trained model]`, when
    there is exactly one."""


Target = Annotated[ClassicEndpointTarget | ArmWebServiceTarget, Field(discriminator="kind")]

#: Targets one promotion task instance promotes (concurrently): 50 targets take two task instances.
#: A task instance is one process, whose promotion threads share one interpreter lock (HTTP clients,
#: the storage SDK and Airflow's secrets masker are Python work), and its masker rebuilds one pattern
#: of every secret for each endpoint key a smoke test registers (work that grows with the square of
#: the batch): two instances of 25 promote 50 endpoints sooner than one of 50 (docs/performance.md, row 6).
DEFAULT_PROMOTION_BATCH_SIZE = 25
MAX_PROMOTION_BATCH_SIZE = 200


class PromotionConfig(_Strict):
    """How the promotion to the targets is spread over task instances."""

    batch_size: int = Field(
        default=DEFAULT_PROMOTION_BATCH_SIZE,
        description="Targets of one kind that one promotion task instance promotes, concurrently (1 to 200; 1: "
        "a task instance per target). Each keeps its own ledger lock, guard and record, and a failing one does "
        "not stop the others.",
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: int) -> int:
        if not 1 <= value <= MAX_PROMOTION_BATCH_SIZE:
            raise ValueError(
                f"must be 1 to {MAX_PROMOTION_BATCH_SIZE} targets per promotion task instance, got {value} "
                f"(1: one task instance per target; default {DEFAULT_PROMOTION_BATCH_SIZE})"
            )
        return value


@functools.cache
def _cron_problem(expression: str) -> str | None:
    """What is wrong with a schedule, or None. Cached: configs share a few schedules, and checking one
    builds five croniter iterators, every parse."""
    from croniter import croniter

    if not croniter.is_valid(expression):
        return f"{expression!r} is not a cron expression (e.g. '0 2 * * *')"
    # From each new year of a leap-year cycle the next run must come within a year: '0 2 30 2 *'
    # never fires, '0 0 29 2 *' once in four years.
    for year in range(2025, 2029):
        start = datetime(year, 1, 1, tzinfo=UTC)
        try:
            following = croniter(expression, start).get_next(datetime)
        except Exception:  # croniter's CroniterBadDateError: no date matches at all
            following = None
        if following is None or following - start > timedelta(days=366):
            return f"{expression!r} never fires within a year (no such date); check the day and month fields"
    return None


class RetrainingConfig(_Strict):
    """One retrained model."""

    model: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
    """The model's name: the DAG is `retrain_<model>`. Optional in a file: it is the file's name, and a different value
    is an error."""
    description: str
    """What the DAG does, shown in the UI."""
    owner: str = "ml-platform"
    """The tasks' owner in Airflow."""
    tags: list[str] = Field(default_factory=list)
    """DAG tags, added to `azureml`, `retraining` and the model's name."""
    schedule: str = Field(description="cron expression; each run trains on the interval that just ended")
    timezone: str = "UTC"
    """The IANA time zone the schedule is read in (e.g. `Europe/Paris`)."""
    start_date: datetime
    """The first data interval starts here."""
    catchup: bool = False
    """Whether the scheduler creates runs for past intervals since `start_date` (Airflow's `catchup`)."""
    max_active_runs: int = Field(default=1, ge=1)
    """How many runs of the DAG may be active at once."""
    retries: int = Field(default=2, ge=0)
    """Airflow retries per task (failures a retry cannot help fail at once)."""
    training: TrainingConfig
    """The training web service (BES) and its ports."""
    data: DataConfig
    """Where a window's training data lands, and when it counts as complete."""
    outputs: OutputConfig
    """Where trained models and evaluation results are written."""
    evaluation: EvaluationRules
    """How the trained model is judged against the model in service."""
    targets: list[Target] = Field(min_length=1)
    """The serving targets a better model is promoted to; the first one's ledger holds the champion."""
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    """How the promotion to the targets is spread over task instances (`batch_size`)."""
    smoke_test_rows: list[dict[str, Any]] = Field(default_factory=list)
    """Rows scored through a target after its promotion; a failure puts the previous model back; empty: none."""
    ledger_container: str = DEFAULT_LEDGER_CONTAINER
    """The blob container of the promotion ledger and the decision log (Azure's container naming rules)."""
    approval: ApprovalRules | None = Field(default=None, description="When a result needs a person's approval.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = _cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            import difflib

            close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else " (e.g. 'UTC', 'Europe/Paris')"
            raise ValueError(f"{value!r} is not an IANA time zone name{hint}") from None
        return value

    _check_ledger_container = field_validator("ledger_container")(_container)

    @model_validator(mode="after")
    def _unique_targets(self) -> RetrainingConfig:
        names = [t.name for t in self.targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"targets: names must be unique; repeated: {duplicates}")
        return self

    @model_validator(mode="after")
    def _ledger_apart_from_outputs(self) -> RetrainingConfig:
        # A training job's outputs share one write token for their container (bes.build_request).
        if self.ledger_container == self.outputs.container:
            raise ValueError(
                f"ledger_container: {self.ledger_container!r} is also outputs.container, and a training job may "
                f"write anywhere in its outputs' container; keep the ledger in a container of its own "
                f"(default {DEFAULT_LEDGER_CONTAINER!r})"
            )
        return self

    @model_validator(mode="after")
    def _approval_matches(self) -> RetrainingConfig:
        if self.approval is None:
            return self
        names = [t.name for t in self.targets]
        unknown = [n for n in self.approval.when.targets if n not in names]
        if unknown:
            raise ValueError(
                f"approval.when.targets: {unknown} are not targets of this config; its targets are {names}"
            )
        if self.approval.when.guard_margin is not None and not self.evaluation.guards:
            raise ValueError(
                "approval.when.guard_margin: the evaluation has no guards; add evaluation.guards or drop it"
            )
        return self

    @property
    def dag_id(self) -> str:
        return f"retrain_{self.model}"


def _format_error(source: str, error: ValidationError) -> str:
    lines = []
    for field, message in explain(error, RetrainingConfig, "a retraining config"):
        lines.append(f"{source}: {field or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str) -> RetrainingConfig:
    """Validate a config mapping; errors name ``source`` (the file) and the field."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: expected a mapping of fields at the top level")
    try:
        return RetrainingConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigurationError(_format_error(source, error)) from None


def load_config(path: Path) -> RetrainingConfig:
    """The config in ``path``. Its ``model`` is the file's name (``churn.yaml``: ``churn``): a field
    that says otherwise is an error, so two files can never build the same DAG."""
    import yaml

    # libyaml's loader when the wheel has it: every parse and every task start reads the configs.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader)  # noqa: S506  (a safe loader)
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path.name}: not valid YAML: {error}") from None
    except OSError as error:
        raise ConfigurationError(f"{path.name}: cannot be read: {error.strerror}") from None
    if isinstance(data, dict):
        model = data.setdefault("model", path.stem)
        if model != path.stem:
            raise ConfigurationError(
                f"{path.name}: model: {model!r} differs from the file's name; name the file {model}.yaml, "
                "or drop the field: the file's name is the model's"
            )
    return parse_config(data, path.name)


@dataclass(frozen=True)
class ConfigScan:
    """The configs of a folder, each loaded on its own: a broken file is an error, never a reason
    to drop the others."""

    configs: tuple[RetrainingConfig, ...]
    errors: tuple[str, ...]


def config_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in CONFIG_SUFFIXES) if folder.is_dir() else []


def scan_configs(folder: Path) -> ConfigScan:
    """Every config in ``folder`` that is valid, and an error for each one that is not."""
    configs: list[RetrainingConfig] = []
    errors: list[str] = []
    for path in config_files(folder):
        try:
            config = load_config(path)
        except ConfigurationError as error:
            errors.append(str(error))
            continue
        if any(c.model == config.model for c in configs):  # churn.yaml beside churn.yml
            errors.append(f"{path.name}: model {config.model!r} has another config file; keep one, {path.stem}.yaml")
            continue
        configs.append(config)
    return ConfigScan(tuple(configs), tuple(errors))


def load_configs(folder: Path) -> list[RetrainingConfig]:
    """Every config in ``folder`` (sorted by name), all of them valid (else a ConfigurationError
    listing every broken one): for tools that need the whole set."""
    scan = scan_configs(folder)
    if scan.errors:
        raise ConfigurationError("\n".join(scan.errors))
    return list(scan.configs)


def raise_config_errors(folder: Path) -> None:
    """Raise one ConfigurationError naming every broken config in ``folder`` (its file, the field
    and the fix): called by a DAG file that builds nothing, so that the error is an import error of
    its own and every valid model keeps scheduling."""
    errors = scan_configs(folder).errors
    if errors:
        count = f"{len(errors)} retraining config{'s' if len(errors) > 1 else ''}"
        raise ConfigurationError(f"{count} left out (their DAGs do not run until fixed):\n" + "\n".join(errors))


def check(paths: list[Path]) -> int:
    """``python -m azureml_retrain.config check FILE...``: each config as the DAG processor takes it
    (the same messages, and its DAG built as the retraining DAG file builds it). 0 when all are fine."""
    import sys

    from azureml_retrain.factory import build_dag

    failures = 0
    for path in paths:
        try:
            dag_id = build_dag(load_config(path)).dag_id
        except ConfigurationError as error:
            failures += 1
            sys.stdout.write(f"{error}\n")
            continue
        sys.stdout.write(f"{path.name}: OK ({dag_id})\n")
    return 1 if failures else 0


if __name__ == "__main__":
    import sys

    arguments = sys.argv[1:]
    if len(arguments) < 2 or arguments[0] != "check":
        sys.stderr.write("usage: python -m azureml_retrain.config check CONFIG.yaml [...]\n")
        sys.exit(2)
    sys.exit(check([Path(argument) for argument in arguments[1:]]))
