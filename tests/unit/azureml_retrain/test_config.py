from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from azureml_retrain.config import load_config, load_configs, parse_config, scan_configs
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
        ("surprise", 1, False, "churn.yaml: surprise: not a field of a retraining config; its fields are: model,"),
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


def test_the_ledger_may_not_share_the_outputs_container():
    """A training job's write token covers its outputs' container: the ledger stays out of its reach."""
    data = copy.deepcopy(BASE)
    data["ledger_container"] = data["outputs"]["container"]
    with pytest.raises(ConfigurationError, match=r"ledger_container: 'models' is also outputs\.container"):
        parse_config(data, "churn.yaml")
    data["ledger_container"] = "model-ledger"
    assert parse_config(data, "churn.yaml").ledger_container == "model-ledger"


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ConfigurationError, match="AUC"):
        parse_config(with_change("evaluation.metric", "Precission"), "churn.yaml")


def test_not_yaml(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml: not valid YAML"):
        load_config(path)


def test_the_file_name_is_the_model(tmp_path: Path):
    data = {k: v for k, v in BASE.items() if k != "model"}
    (tmp_path / "churn_eu.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_config(tmp_path / "churn_eu.yaml").dag_id == "retrain_churn_eu"
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    with pytest.raises(ConfigurationError, match=r"b\.yaml: model: 'churn' differs from the file's name; name"):
        load_config(tmp_path / "b.yaml")


def test_a_folder_scan_loads_each_config_on_its_own(tmp_path: Path):
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    (tmp_path / "churn.yml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**BASE, "model": "typo", "trainnig": {}}, sort_keys=False))
    scan = scan_configs(tmp_path)
    assert [c.model for c in scan.configs] == ["churn"]
    assert len(scan.errors) == 2
    assert scan.errors[0].startswith("churn.yml: model 'churn' has another config file")
    expected = "typo.yaml: trainnig: not a field of a retraining config; did you mean 'training'?"
    assert scan.errors[1].startswith(expected)
    with pytest.raises(ConfigurationError, match=r"(?s)churn\.yml: .*typo\.yaml: "):
        load_configs(tmp_path)


def test_the_check_command_says_what_the_dag_processor_would(tmp_path: Path):
    """`python -m azureml_retrain.config check FILE...`: exit code, and the DAG processor's messages."""
    import os
    import subprocess
    import sys

    shutil.copy(CONFIG_DIR / "churn.yaml", tmp_path / "churn.yaml")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**BASE, "model": "typo", "trainnig": {}}, sort_keys=False))

    def check(*names: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "azureml_retrain.config", "check", *(str(tmp_path / n) for n in names)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)

    good = check("churn.yaml")
    assert (good.returncode, good.stdout) == (0, "churn.yaml: OK (retrain_churn)\n")
    bad = check("churn.yaml", "typo.yaml")
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert lines[0] == "churn.yaml: OK (retrain_churn)"
    assert lines[1] == "typo.yaml: trainnig: not a field of a retraining config; did you mean 'training'?"
