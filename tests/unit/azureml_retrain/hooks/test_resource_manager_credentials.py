"""Which azure-identity credential the Resource Manager hook builds, with which arguments (no network)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import azure.identity
import azure.identity.aio
import pytest

from azureml_retrain.hooks.resource_manager import PUBLIC_AUTHORITY, AzureMLResourceManagerHook

CONN_ID = "arm_identity_test"
SECRET = "client-secret-value-42"


class Recorded:
    """Stands in for an azure-identity credential class: keeps the arguments it was built with."""

    built: list[tuple[str, dict[str, Any]]]

    def __init__(self, **kwargs: Any) -> None:
        self.built.append((type(self).__name__, kwargs))

    async def __aenter__(self) -> Recorded:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    for module in (azure.identity, azure.identity.aio):
        for name in ("DefaultAzureCredential", "ClientSecretCredential"):
            monkeypatch.setattr(module, name, type(name, (Recorded,), {"built": calls}))
    return calls


def connect(monkeypatch: pytest.MonkeyPatch, *, login: str | None = None, password: str | None = None, **extra: str):
    value = {
        "conn_type": "azureml_resource_manager",
        "host": "https://management.azure.com",
        "login": login,
        "password": password,
        "extra": {"subscription_id": "sub1", "resource_group": "rg1", **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(value))
    return AzureMLResourceManagerHook(CONN_ID)


def test_without_a_secret_the_default_credential_gets_the_identity_extras(monkeypatch, built):
    hook = connect(monkeypatch, managed_identity_client_id="mi-client-1", workload_identity_tenant_id="tenant-w")
    hook.credential  # noqa: B018 (builds it)
    assert built == [
        (
            "DefaultAzureCredential",
            {
                "authority": PUBLIC_AUTHORITY,
                "connection_verify": True,
                "managed_identity_client_id": "mi-client-1",
                "workload_identity_tenant_id": "tenant-w",
                "additionally_allowed_tenants": ["tenant-w"],
            },
        )
    ]


def test_a_managed_identity_client_id_alone_selects_a_user_assigned_identity(monkeypatch, built):
    hook = connect(monkeypatch, managed_identity_client_id="mi-client-1")
    hook.credential  # noqa: B018
    assert built == [
        (
            "DefaultAzureCredential",
            {"authority": PUBLIC_AUTHORITY, "connection_verify": True, "managed_identity_client_id": "mi-client-1"},
        )
    ]


def test_without_a_secret_or_identity_extras_the_default_credential_gets_the_authority_only(monkeypatch, built):
    hook = connect(monkeypatch, managed_identity_client_id="", authority_host="https://login.example")
    hook.credential  # noqa: B018
    assert built == [("DefaultAzureCredential", {"authority": "https://login.example", "connection_verify": True})]


def test_with_a_secret_a_client_secret_credential_ignores_the_identity_extras(monkeypatch, built):
    hook = connect(
        monkeypatch, login="app-1", password=SECRET, tenant_id="tenant-1", managed_identity_client_id="mi-client-1"
    )
    hook.credential  # noqa: B018
    assert built == [
        (
            "ClientSecretCredential",
            {
                "tenant_id": "tenant-1",
                "client_id": "app-1",
                "client_secret": SECRET,
                "disable_instance_discovery": False,
                "authority": PUBLIC_AUTHORITY,
                "connection_verify": True,
            },
        )
    ]


def test_the_triggers_async_credential_gets_the_same_arguments(monkeypatch, built):
    hook = connect(monkeypatch, managed_identity_client_id="mi-client-1", workload_identity_tenant_id="tenant-w")

    async def open_client() -> None:
        async with hook.async_client():
            pass

    asyncio.run(open_client())
    hook.credential  # noqa: B018
    assert len(built) == 2
    assert built[0] == built[1]
    assert built[0][1]["workload_identity_tenant_id"] == "tenant-w"
