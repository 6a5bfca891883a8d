"""The provider info is laid out as published providers': valid for Airflow's schema, one version
(the package's), and every hook, operator, sensor and trigger module listed."""

from __future__ import annotations

import json
from pathlib import Path

import airflow
import jsonschema

import azureml_retrain
from azureml_retrain.provider_info import get_provider_info
from devtools.services import ROOT

INFO = get_provider_info()
PACKAGE = ROOT / "plugins" / "azureml_retrain"


def test_valid_for_airflows_provider_info_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(INFO, schema)


def test_version_is_the_packages():
    assert INFO["versions"] == [azureml_retrain.__version__]


def _listed(key: str) -> set[str]:
    return {module for entry in INFO[key] for module in entry["python-modules"]}


def test_every_hook_of_a_connection_type_is_listed():
    assert {c["hook-class-name"].rpartition(".")[0] for c in INFO["connection-types"]} <= _listed("hooks")


def test_every_module_of_the_hooks_operators_sensors_triggers_packages_is_listed():
    for key in ("hooks", "operators", "sensors", "triggers"):
        modules = {f"azureml_retrain.{key}.{p.stem}" for p in (PACKAGE / key).glob("[!_]*.py")}
        # hooks.base holds the hooks' base class; triggers.blocking and triggers.shared are helpers of
        # the triggers (their thread pools, the clients they share).
        helpers = {"azureml_retrain.hooks.base", "azureml_retrain.triggers.blocking", "azureml_retrain.triggers.shared"}
        assert modules - helpers <= _listed(key), key


def test_listed_modules_exist():
    names = {e["integration-name"] for e in INFO["integrations"]}
    for key in ("hooks", "operators", "sensors", "triggers"):
        for entry in INFO[key]:
            assert entry["integration-name"] in names
            for module in entry["python-modules"]:
                assert (ROOT / "plugins" / (module.replace(".", "/") + ".py")).is_file(), module
