from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from azureml_retrain.config import load_config, load_configs, parse_config
from azureml_retrain.exceptions import ConfigurationError
from devtools.services import ROOT

CONFIG_DIR = ROOT / "dags" / "retraining"
BASE = yaml.safe_load((CONFIG_DIR / "churn.yaml").read_text())


def with_change(path: str, value, *, delete: bool = False) -> dict:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def test_shipped_configs_are_valid():
    configs = load_configs(CONFIG_DIR)
    assert {c.model for c in configs} == {"churn", "energy"}
    kinds = {t.kind for c in configs for t in c.targets}
    assert kinds == {"classic_endpoint", "arm_web_service"}


@pytest.mark.parametrize(
    ("path", "value", "delete", "message"),
    [
        ("training", None, True, "churn.yaml: training: Field required"),
        ("schedule", "every day", False, "churn.yaml: schedule: 'every day' is not a cron expression"),
        ("evaluation.metric", "Precission", False, "churn.yaml: evaluation.metric: "),
        (
            "targets.0.endpoint_name",
            "default",
            False,
            "churn.yaml: targets.0.classic_endpoint.endpoint_name: the 'default' endpoint cannot be patched",
        ),
        ("targets.0.kind", "aks_endpoint", False, "churn.yaml: targets.0: Input tag 'aks_endpoint'"),
        ("data.container", "Training_Data", False, "churn.yaml: data.container: must be a blob container name"),
        (
            "data.stable_for_seconds",
            -1,
            False,
            "churn.yaml: data.stable_for_seconds: Input should be greater than or equal to 0",
        ),
        ("model", "Churn Model", False, "churn.yaml: model: String should match pattern"),
        ("evaluation.min_absolute_improvement", -0.1, False, "churn.yaml: evaluation.min_absolute_improvement"),
        ("targets", [], False, "churn.yaml: targets: List should have at least 1 item"),
        ("surprise", 1, False, "churn.yaml: surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_fields_are_named_with_the_file(path, value, delete, message):
    with pytest.raises(ConfigurationError) as error:
        parse_config(with_change(path, value, delete=delete), "churn.yaml")
    assert message in str(error.value)


def test_duplicate_target_names():
    data = copy.deepcopy(BASE)
    data["targets"][1]["name"] = data["targets"][0]["name"]
    with pytest.raises(ConfigurationError, match="targets: names must be unique"):
        parse_config(data, "churn.yaml")


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ConfigurationError, match="AUC"):
        parse_config(with_change("evaluation.metric", "Precission"), "churn.yaml")


def test_not_yaml(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml: not valid YAML"):
        load_config(path)


def test_duplicate_models_across_files(tmp_path: Path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump(BASE, default_flow_style=False, sort_keys=False))
    with pytest.raises(ConfigurationError, match="model names must be unique across configs; repeated: \\['churn'\\]"):
        load_configs(tmp_path)
