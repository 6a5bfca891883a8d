"""Retraining configs: one small YAML file per retrained model, validated with errors that name the
file and the field.

A config says which training web service to run, where its data lands and how it is partitioned,
the schedule, the evaluation rules, and the serving targets to promote to. The DAG factory
(:mod:`azureml_retrain.factory`) turns each into one DAG.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.ledger import DEFAULT_LEDGER_CONTAINER

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
    input_name: str = "input1"
    model_output: str = "output1"
    evaluation_output: str = "output2"
    global_parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    job_timeout_minutes: float = Field(default=360, gt=0)
    poll_interval_seconds: float = Field(default=1, gt=0)


class DataConfig(_Strict):
    """Where a window's training data lands. ``prefix``, ``pattern`` and ``marker`` may use
    ``{window_start:%Y-%m-%d}`` / ``{window_end:...}`` placeholders."""

    wasb_conn_id: str = "wasb_default"
    container: Annotated[str, Field(min_length=3)]
    prefix: str
    pattern: str | None = "*.csv"
    marker: str | None = None
    min_files: int = Field(default=1, ge=1)
    stable_for_seconds: float = Field(default=30, ge=0)
    poke_interval_seconds: float = Field(default=30, gt=0)
    timeout_hours: float = Field(default=12, gt=0)

    _check_container = field_validator("container")(_container)


class OutputConfig(_Strict):
    """Where trained models and evaluations are written: ``{container}/{prefix}/{window}/{run}/...``,
    a path no other run uses, so nothing is ever overwritten."""

    container: str
    prefix: str

    _check_container = field_validator("container")(_container)


class EvaluationConfig(_Strict):
    """Rules of EvaluateModelOperator (see :mod:`azureml_retrain.evaluation`)."""

    metric: str
    higher_is_better: bool | None = None
    threshold: float | None = None
    min_absolute_improvement: float | None = Field(default=None, ge=0)
    min_relative_improvement: float | None = Field(default=None, ge=0)
    guards: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        from azureml_retrain.evaluation import resolve_metric_name

        try:
            return resolve_metric_name(value)
        except Exception as error:
            raise ValueError(str(error)) from None

    def rules(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude_defaults=False)


class ClassicEndpointTarget(_Strict):
    """A non-default endpoint of a classic predictive web service (PatchEndpointOperator)."""

    kind: Literal["classic_endpoint"]
    name: str
    management_conn_id: str = "azureml_classic_management_default"
    web_service_id: str
    endpoint_name: str
    trained_model_name: str | None = None
    create_endpoint: bool = False

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
    name: str
    arm_conn_id: str = "azureml_resource_manager_default"
    web_service_name: str
    trained_model_name: str | None = None


Target = Annotated[ClassicEndpointTarget | ArmWebServiceTarget, Field(discriminator="kind")]


class RetrainingConfig(_Strict):
    """One retrained model."""

    model: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
    description: str
    owner: str = "ml-platform"
    tags: list[str] = Field(default_factory=list)
    schedule: str = Field(description="cron expression; each run trains on the interval that just ended")
    timezone: str = "UTC"
    start_date: datetime
    catchup: bool = False
    max_active_runs: int = Field(default=1, ge=1)
    retries: int = Field(default=2, ge=0)
    training: TrainingConfig
    data: DataConfig
    outputs: OutputConfig
    evaluation: EvaluationConfig
    targets: list[Target] = Field(min_length=1)
    smoke_test_rows: list[dict[str, Any]] = Field(default_factory=list)
    ledger_container: str = DEFAULT_LEDGER_CONTAINER

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '0 2 * * *')")
        return value

    @model_validator(mode="after")
    def _unique_targets(self) -> RetrainingConfig:
        names = [t.name for t in self.targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"targets: names must be unique; repeated: {duplicates}")
        return self

    @property
    def dag_id(self) -> str:
        return f"retrain_{self.model}"


def _format_error(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {location}: {message}")
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
    import yaml

    # libyaml's loader when the wheel has it: every parse and every task start reads the configs.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader)  # noqa: S506  (a safe loader)
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path.name}: not valid YAML: {error}") from None
    return parse_config(data, path.name)


def load_configs(folder: Path) -> list[RetrainingConfig]:
    """Every config in ``folder`` (sorted by name); model names must be unique."""
    configs = [load_config(p) for p in sorted(folder.iterdir()) if p.suffix in CONFIG_SUFFIXES]
    models = [c.model for c in configs]
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise ConfigurationError(f"{folder.name}: model names must be unique across configs; repeated: {repeated}")
    return configs
