"""The seed file's schema: experiments (what a web service runs) and the seeded resources.

Everything here is static configuration, validated strictly when the seed is loaded; runtime state
lives in :mod:`emulator.state`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_SEED = Path(__file__).with_name("seed.yaml")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(StrEnum):
    BINARY = "binary_classification"
    REGRESSION = "regression"


class Learner(StrEnum):
    """Studio learner modules the emulator trains with (scikit-learn underneath)."""

    TWO_CLASS_LOGISTIC_REGRESSION = "two_class_logistic_regression"
    TWO_CLASS_BOOSTED_DECISION_TREE = "two_class_boosted_decision_tree"
    LINEAR_REGRESSION = "linear_regression"
    BOOSTED_DECISION_TREE_REGRESSION = "boosted_decision_tree_regression"

    @property
    def task(self) -> Task:
        if self in (Learner.LINEAR_REGRESSION, Learner.BOOSTED_DECISION_TREE_REGRESSION):
            return Task.REGRESSION
        return Task.BINARY

    @property
    def settings(self) -> frozenset[str]:
        """The scikit-learn estimator parameters an experiment may set."""
        return _LEARNER_SETTINGS[self]


_BOOSTING = frozenset({"n_estimators", "learning_rate", "max_leaf_nodes", "min_samples_leaf", "max_depth"})
_LEARNER_SETTINGS = {
    Learner.TWO_CLASS_LOGISTIC_REGRESSION: frozenset({"C", "tol", "max_iter"}),
    Learner.TWO_CLASS_BOOSTED_DECISION_TREE: _BOOSTING,
    Learner.LINEAR_REGRESSION: frozenset({"alpha"}),
    Learner.BOOSTED_DECISION_TREE_REGRESSION: _BOOSTING,
}


class ParameterType(StrEnum):
    INT = "Int"
    DOUBLE = "Double"
    STRING = "String"
    BOOLEAN = "Boolean"


class GlobalParameter(Strict):
    """A web service parameter (BES ``GlobalParameters``); may set a learner setting."""

    name: str
    type: ParameterType
    default: int | float | str | bool | None = None
    required: bool = False
    learner_parameter: str | None = None
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None


class Feature(Strict):
    name: str
    type: Literal["Integer", "Number"]


class Split(Strict):
    train_fraction: float = Field(default=0.75, gt=0.0, lt=1.0)
    random_seed: int = 42


class Experiment(Strict):
    """A Studio experiment in both its training and its predictive form."""

    key: str
    title: str
    task: Task
    dataset: str  # generator name in emulator.datasets
    label: str
    classes: tuple[str, str] | None = None  # binary only: (negative, positive)
    features: tuple[Feature, ...]
    learner: Learner
    learner_settings: dict[str, int | float | str | bool] = Field(default_factory=dict)
    global_parameters: tuple[GlobalParameter, ...] = ()
    split: Split = Split()
    min_rows: int = 20
    input_name: str = "input1"
    model_output: str = "output1"
    evaluation_output: str = "output2"
    scoring_output: str = "output1"

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if self.learner.task is not self.task:
            raise ValueError(f"learner {self.learner} does not fit task {self.task}")
        if (self.task is Task.BINARY) != (self.classes is not None):
            raise ValueError("classes are required for binary classification and only for it")
        settings = set(self.learner_settings) | {
            p.learner_parameter for p in self.global_parameters if p.learner_parameter is not None
        }
        if unknown := settings - self.learner.settings:
            raise ValueError(f"learner {self.learner} has no setting(s) {sorted(unknown)}")
        return self

    @property
    def trained_model_resource(self) -> str:
        """The updatable resource name Studio gives the saved trained model."""
        return f"{self.title} [trained model]"

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def parameter(self, name: str) -> GlobalParameter | None:
        return next((p for p in self.global_parameters if p.name == name), None)


class WebServiceKind(StrEnum):
    TRAINING = "training"
    PREDICTIVE = "predictive"


class InitialModel(Strict):
    """How a predictive service's first model is trained at seed time."""

    rows: int = 400
    window: int = 0
    seed: int = 7


class SeedEndpoint(Strict):
    name: str
    service_id: str  # data-plane id in /workspaces/{ws}/services/{service_id}
    primary_key: str
    secondary_key: str
    description: str = ""


class SeedClassicWebService(Strict):
    id: str
    name: str
    experiment: str
    kind: WebServiceKind
    description: str = ""
    endpoints: tuple[SeedEndpoint, ...]
    initial_model: InitialModel = InitialModel()


class StorageAccount(Strict):
    name: str
    key: str


class SeedWorkspace(Strict):
    id: str
    name: str
    authorization_token: str
    region: str = "South Central US"
    web_services: tuple[SeedClassicWebService, ...] = ()


class SeedArmWebService(Strict):
    subscription: str
    resource_group: str
    name: str
    location: str = "South Central US"
    title: str
    description: str = ""
    data_plane_id: str
    primary_key: str
    secondary_key: str
    storage_account: StorageAccount
    experiment: str
    kind: WebServiceKind
    commitment_plan: str
    initial_model: InitialModel = InitialModel()


class ServicePrincipal(Strict):
    client_id: str
    client_secret: str
    display_name: str
    subscriptions: tuple[str, ...]


class Tenant(Strict):
    id: str
    service_principals: tuple[ServicePrincipal, ...]


class Subscription(Strict):
    id: str
    resource_groups: tuple[str, ...]


class Seed(Strict):
    storage_accounts: tuple[StorageAccount, ...] = ()
    tenants: tuple[Tenant, ...]
    subscriptions: tuple[Subscription, ...]
    experiments: dict[str, Experiment]
    workspaces: tuple[SeedWorkspace, ...]
    arm_web_services: tuple[SeedArmWebService, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _key_experiments(cls, data: Any) -> Any:
        # The YAML maps key -> experiment; the model carries its key too.
        if isinstance(data, dict) and isinstance(data.get("experiments"), dict):
            data = dict(data)
            data["experiments"] = {key: {"key": key, **value} for key, value in data["experiments"].items()}
        return data

    @model_validator(mode="after")
    def _check_references(self) -> Seed:
        for workspace in self.workspaces:
            for service in workspace.web_services:
                if service.experiment not in self.experiments:
                    raise ValueError(f"web service {service.name!r}: unknown experiment {service.experiment!r}")
                if not any(endpoint.name == "default" for endpoint in service.endpoints):
                    raise ValueError(f"web service {service.name!r} has no 'default' endpoint")
        for arm in self.arm_web_services:
            if arm.experiment not in self.experiments:
                raise ValueError(f"ARM web service {arm.name!r}: unknown experiment {arm.experiment!r}")
        return self


def load_seed(path: Path = DEFAULT_SEED) -> Seed:
    with path.open(encoding="utf-8") as handle:
        return Seed.model_validate(yaml.safe_load(handle))
