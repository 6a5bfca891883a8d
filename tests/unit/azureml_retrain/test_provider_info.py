"""Our connection types reach Airflow's providers manager, as the UI's connection form reads them."""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from typing import Any

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


# --- every extra a hook reads is a labelled field of its connection form ------------------------------


def extras_read(hook: type, packages: tuple[str, ...] = ("azureml_retrain.",)) -> set[str]:
    """The extras ``hook`` reads: literal keys of ``extras.get("...")``, ``extras["..."]`` and
    ``"..." in extras`` in its source and its base classes' in the package."""
    names: set[str] = set()
    for owner in hook.__mro__:
        if not owner.__module__.startswith(packages):
            continue
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(owner)))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and ast.unparse(node.func.value).endswith("extras")
            ):
                key = node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("extras"):
                key = node.slice
            elif (
                isinstance(node, ast.Compare)
                and isinstance(node.ops[0], ast.In)
                and ast.unparse(node.comparators[0]).endswith("extras")
            ):
                key = node.left
            else:
                continue
            assert isinstance(key, ast.Constant) and isinstance(key.value, str), (
                f"{owner.__name__} reads an extra by a computed name ({ast.unparse(node)}): read it by its literal name"
            )
            names.add(key.value)
    return names


def hook_class(connection: dict[str, Any]) -> type:
    module, _, name = connection["hook-class-name"].rpartition(".")
    return getattr(importlib.import_module(module), name)


CONNECTIONS = {c["connection-type"]: c for c in get_provider_info()["connection-types"]}


@pytest.mark.parametrize("conn_type", CONNECTIONS)
def test_every_extra_a_hook_reads_is_a_labelled_field_of_its_form(conn_type):
    connection = CONNECTIONS[conn_type]
    hook = hook_class(connection)
    form = connection["conn-fields"]
    read = extras_read(hook)
    missing = read - set(form) - set(hook.extra_aliases)
    assert not missing, f"{conn_type}: the hook reads extras its connection form lacks: {sorted(missing)}"
    assert all(field.get("label") for field in form.values())
    # An alias stands for a field of the form or of the connection itself, and is read.
    for alias, field in hook.extra_aliases.items():
        assert alias in read and alias not in form
        assert field in form or field in ("host", "schema", "login", "password", "port")


@pytest.mark.parametrize(
    ("conn_type", "expected"),
    [
        ("azureml_web_service", {"max_attempts", "retry_base_delay", "read_timeout", "ca_bundle"}),
        ("azureml_classic_management", {"max_attempts", "connect_timeout", "workspace_id"}),
        (
            "azureml_resource_manager",
            {"tenant_id", "subscription_id", "authority_host", "managed_identity_client_id", "authority_ca_bundle"},
        ),
    ],
)
def test_the_extras_scan_finds_what_the_hooks_read(conn_type, expected):
    assert expected <= extras_read(hook_class(CONNECTIONS[conn_type]))


def test_the_extras_scan_finds_an_extra_missing_from_the_form():
    class Reader(hook_class(CONNECTIONS["azureml_web_service"])):  # type: ignore[misc]
        def region(self) -> Any:
            return self.extras.get("region")

    read = extras_read(Reader, packages=("azureml_retrain.", __name__))
    assert "region" in read - set(CONNECTIONS["azureml_web_service"]["conn-fields"])
