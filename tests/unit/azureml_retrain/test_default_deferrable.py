"""Deferrable operators and sensors default to Airflow's ``[operators] default_deferrable``, as providers' do.

The default is computed when the class is defined: each test loads a fresh copy of the module (not
registered in ``sys.modules``, so no other test sees it) with the setting under test in the environment.
"""

from __future__ import annotations

import importlib.util
import inspect
from types import ModuleType

import pytest

DEFERRABLE = [
    ("azureml_retrain.operators.submit_bes_job", "SubmitBesJobOperator"),
    ("azureml_retrain.operators.promote", "UpdateWebServiceDefinitionOperator"),
    ("azureml_retrain.sensors.blob_arrival", "BlobArrivalSensor"),
]


def fresh_copy(module_name: str) -> ModuleType:
    origin = importlib.util.find_spec(module_name)
    assert origin is not None and origin.origin is not None
    spec = importlib.util.spec_from_file_location(f"fresh_copy_of_{module_name}", origin.origin)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_of(module_name: str, class_name: str) -> object:
    operator = getattr(fresh_copy(module_name), class_name)
    return inspect.signature(operator.__init__).parameters["deferrable"].default


@pytest.mark.parametrize(("module_name", "class_name"), DEFERRABLE)
@pytest.mark.parametrize(("setting", "expected"), [("False", False), ("True", True)])
def test_the_default_follows_airflows_default_deferrable(monkeypatch, module_name, class_name, setting, expected):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", setting)
    assert default_of(module_name, class_name) is expected


@pytest.mark.parametrize(("module_name", "class_name"), DEFERRABLE)
def test_without_the_setting_the_default_is_deferrable(monkeypatch, module_name, class_name):
    from airflow.sdk import conf

    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    real_getboolean = conf.getboolean

    def unset(section: str, key: str, **kwargs: object) -> bool:
        if (section, key) == ("operators", "default_deferrable"):
            assert "fallback" in kwargs
            return bool(kwargs["fallback"])
        return real_getboolean(section, key, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(conf, "getboolean", unset)
    assert default_of(module_name, class_name) is True


def test_the_projects_airflow_environments_turn_deferral_on():
    """Airflow ships ``default_deferrable = false``: the project's own installations set it."""
    from devtools.services import ROOT, airflow_environment

    assert airflow_environment()["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] == "True"
    settings = (ROOT / "deploy" / "airflow.env").read_text().splitlines()
    assert "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=true" in settings
