"""Our connection types reach Airflow's providers manager, as the UI's connection form reads them."""

from __future__ import annotations

import importlib

import pytest

from azureml_retrain.provider_info import get_provider_info

CONNECTION_TYPES = {
    "azureml_web_service": "API key",
    "azureml_classic_management": "Authorization token",
    "azureml_resource_manager": "Client secret",
}


@pytest.fixture(scope="module")
def providers_manager():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_package_is_registered_as_a_provider(providers_manager):
    assert "azureml-retrain" in providers_manager.providers


@pytest.mark.parametrize(("conn_type", "password_label"), CONNECTION_TYPES.items())
def test_connection_types_have_labelled_fields(providers_manager, conn_type, password_label):
    behaviour = providers_manager.field_behaviours[conn_type]
    # The password field is where the secret goes: it stays a masked password input, relabelled.
    assert behaviour["relabeling"]["password"] == password_label
    assert "password" not in behaviour["hidden_fields"]


@pytest.mark.parametrize("connection", get_provider_info()["connection-types"], ids=lambda c: c["connection-type"])
def test_hook_classes_exist_and_declare_their_type(connection):
    module, _, name = connection["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module), name)
    assert hook.conn_type == connection["connection-type"]
    assert hook.hook_name == connection["hook-name"]
