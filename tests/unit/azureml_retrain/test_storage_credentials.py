"""How a refused storage credential is named: the connection and the field WasbHook takes it from."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.storage import (
    is_refused_credential,
    refused_credential_error,
    refused_storage_credential,
    storage_call,
)

SECRET = "c2VjcmV0LWtleS12YWx1ZQ=="


def conn(password: str | None = None, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(password=password, extra_dejson=extra)


@pytest.mark.parametrize(
    ("connection", "named"),
    [
        # WasbHook's precedence: a connection string wins over everything else.
        (conn(SECRET, connection_string=f"AccountKey={SECRET}", sas_token=SECRET), "the extra connection_string of"),
        (conn(SECRET, tenant_id="t"), "the service principal (Login, Password, extra tenant_id) or its role"),
        (conn(SECRET, shared_access_key=SECRET), "the extra shared_access_key of"),
        (conn(None, sas_token=f"sv=2024&sig={SECRET}"), "the extra sas_token of"),
        (conn(None, extra__wasb__sas_token=SECRET), "the extra extra__wasb__sas_token of"),
        (conn(SECRET), "the Password (the storage account key) of"),
        (conn(None, account_key=SECRET), "the extra account_key of"),
        (conn(None), "the default Azure credential (connection 'data' holds no key"),
        (None, "the credential of connection 'data'"),
    ],
)
def test_names_the_field_the_hook_uses_never_its_value(connection: Any, named: str):
    text = refused_storage_credential("data", connection)
    assert named in text
    assert "'data'" in text
    assert SECRET not in text


def status_error(status: int, code: str) -> HttpResponseError:
    error = HttpResponseError(message=f"Server failed to authenticate the request. sig={SECRET}")
    error.status_code = status
    error.error_code = code
    return error


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (status_error(403, "AuthenticationFailed"), True),
        (status_error(403, "AuthorizationPermissionMismatch"), True),
        (status_error(401, "InvalidAuthenticationInfo"), True),
        (ClientAuthenticationError("AADSTS7000215: Invalid client secret"), True),
        (status_error(404, "ContainerNotFound"), False),
        (status_error(503, "ServerBusy"), False),
        (ValueError("not storage"), False),
    ],
)
def test_which_errors_are_a_refused_credential(error: BaseException, refused: bool):
    assert is_refused_credential(error) is refused


def test_the_message_has_status_and_code_but_not_the_services_text():
    error = status_error(403, "AuthenticationFailed")
    message = str(refused_credential_error("data", "listing c/p/", error, conn(SECRET)))
    assert message.startswith("listing c/p/: the storage account refused the credential (HTTP 403 Authentication")
    assert "(HTTP 403 AuthenticationFailed; refused: " in message
    assert "refused: the Password (the storage account key) of connection 'data'" in message
    assert SECRET not in message
    assert "Server failed" not in message


def test_storage_call_converts_refusals_only(monkeypatch: pytest.MonkeyPatch):
    from azureml_retrain import storage

    monkeypatch.setattr(storage, "_connection", lambda conn_id: conn(None, sas_token=SECRET))
    with (
        pytest.raises(ConfigurationError, match="extra sas_token of connection 'data'") as refused,
        storage_call("data", "reading x"),
    ):
        raise status_error(403, "AuthorizationFailure")
    assert refused.value.__suppress_context__
    with pytest.raises(ResourceNotFoundError), storage_call("data", "reading x"):
        raise ResourceNotFoundError("missing")
