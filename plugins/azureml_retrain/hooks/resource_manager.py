"""New (Resource Manager) web services: ``Microsoft.MachineLearning/webServices`` on ARM.

Connection (type ``azureml_resource_manager``): *Host* is the ARM endpoint (default
``https://management.azure.com``); *Login* / *Password* are a service principal's client id and
secret (leave both empty to use the default Azure credential chain: managed identity, environment,
Azure CLI); extras ``tenant_id``, ``subscription_id``, ``resource_group`` and optionally
``authority_host`` (a sovereign cloud or a local token authority), ``authority_ca_bundle`` (a CA
file to trust for that authority), ``api_version`` (default 2017-01-01).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from azureml_retrain.exceptions import AzureMLServiceError
from azureml_retrain.hooks.base import AzureMLHttpHook, expect_object
from azureml_retrain.lazy import cached_property
from azureml_retrain.redaction import mask_once

ARM_HOST = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
API_VERSION = "2017-01-01"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com"


class ProvisioningState:
    """States of an ARM async operation (and of ``properties.provisioningState``)."""

    UNKNOWN = "Unknown"
    PROVISIONING = "Provisioning"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    TERMINAL = frozenset({SUCCEEDED, FAILED})


def get_member(mapping: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """Read a JSON member regardless of casing (the spec's own examples mix camel and Pascal case).

    ``default`` when ``mapping`` is not a JSON object at all (a malformed response).
    """
    if not isinstance(mapping, Mapping):
        return default
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if str(key).lower() == lowered:
            return value
    return default


def operation_state(operation: Mapping[str, Any]) -> str:
    """State of an async operation body: the ML spec's ``provisioningState``, else ARM's generic ``status``."""
    state = get_member(operation, "provisioningState") or get_member(operation, "status")
    return str(state) if state else ProvisioningState.UNKNOWN


def operation_error(operation: Mapping[str, Any]) -> str:
    """``code message`` of a failed operation (``errorInfo`` in the ML spec, ``error`` in generic ARM)."""
    error = get_member(operation, "errorInfo") or get_member(operation, "error") or {}
    if not isinstance(error, Mapping):
        return str(error)
    return f"{get_member(error, 'code', '') or ''} {get_member(error, 'message', '') or ''}".strip()


class AzureMLResourceManagerHook(AzureMLHttpHook):
    """Get, patch and watch ``Microsoft.MachineLearning/webServices`` with an Azure AD token."""

    conn_type = "azureml_resource_manager"
    default_conn_name = "azureml_resource_manager_default"
    hook_name = "Azure ML web services (Resource Manager)"

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, **kwargs)
        self._subscription_id = subscription_id
        self._resource_group = resource_group

    # --- connection ------------------------------------------------------------------------

    @cached_property
    def base_url(self) -> str:
        return str(self.connection.host or ARM_HOST).rstrip("/")

    @cached_property
    def api_version(self) -> str:
        return str(self.extras.get("api_version") or API_VERSION)

    @cached_property
    def subscription_id(self) -> str:
        return str(
            self._subscription_id
            or self.extras.get("subscription_id")
            or self.require(None, "extra subscription_id", "the subscription holding the web service")
        )

    @cached_property
    def resource_group(self) -> str:
        return str(
            self._resource_group
            or self.extras.get("resource_group")
            or self.require(None, "extra resource_group", "the resource group holding the web service")
        )

    @cached_property
    def credential(self) -> Any:
        from azure.identity import ClientSecretCredential, DefaultAzureCredential

        conn = self.connection
        authority = str(self.extras.get("authority_host") or PUBLIC_AUTHORITY).rstrip("/")
        transport_options: dict[str, Any] = {}
        if self.extras.get("authority_ca_bundle"):
            transport_options["connection_verify"] = str(self.extras["authority_ca_bundle"])
        if conn.login:
            tenant = self.require(self.extras.get("tenant_id"), "extra tenant_id", "the service principal's tenant")
            secret = self.require(conn.password, "Password", "the service principal's client secret")
            mask_once(secret)
            return ClientSecretCredential(
                tenant_id=str(tenant),
                client_id=str(conn.login),
                client_secret=str(secret),
                authority=authority,
                # Instance discovery only knows Microsoft's clouds; skip it for any other authority.
                disable_instance_discovery=authority != PUBLIC_AUTHORITY,
                **transport_options,
            )
        return DefaultAzureCredential(authority=authority, **transport_options)

    def auth_headers(self) -> dict[str, str]:
        scope = str(self.extras.get("scope") or ARM_SCOPE)
        try:
            token = self.credential.get_token(scope).token
        except Exception as exc:  # azure-identity raises several unrelated types
            raise AzureMLServiceError(
                "get Azure AD token",
                f"connection {self.conn_id}",
                status=None,
                code="AuthenticationFailed",
                message=f"{type(exc).__name__}: check the service principal id, secret and tenant_id",
            ) from None
        mask_once(token)
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    # --- web services ----------------------------------------------------------------------

    def resource_id(self, web_service_name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearning/webServices/{web_service_name}"
        )

    def _url(self, web_service_name: str, suffix: str = "") -> str:
        return f"{self.base_url}{self.resource_id(web_service_name)}{suffix}"

    def get_web_service(self, web_service_name: str) -> dict[str, Any]:
        body = self.request_json(
            "get web service",
            f"web service {web_service_name}",
            "GET",
            self._url(web_service_name),
            params={"api-version": self.api_version},
        )
        return expect_object("get web service", f"web service {web_service_name}", body)

    def patch_web_service(self, web_service_name: str, definition: Mapping[str, Any]) -> str | None:
        """PATCH the definition; return the ``Azure-AsyncOperation`` URL to watch (if any)."""
        response = self.request(
            "patch web service",
            f"web service {web_service_name}",
            "PATCH",
            self._url(web_service_name),
            params={"api-version": self.api_version},
            json_body=dict(definition),
        )
        return response.headers.get("Azure-AsyncOperation")

    def get_async_operation(self, url: str) -> dict[str, Any]:
        body = self.request_json("get async operation", "web service update", "GET", url)
        return expect_object("get async operation", "web service update", body)

    def wait_for_async_operation(
        self, url: str, *, poll_interval: float = 5.0, timeout: float = 1800.0
    ) -> dict[str, Any]:
        """Poll until the operation reaches a terminal state; return its last status body."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_async_operation(url)
            state = operation_state(status)
            if state in ProvisioningState.TERMINAL:
                return status
            if time.monotonic() >= deadline:
                raise AzureMLServiceError(
                    "wait for web service update",
                    "web service update",
                    status=None,
                    code="Timeout",
                    message=f"still {state} after {timeout:.0f}s",
                )
            self._sleep(poll_interval)

    def list_keys(self, web_service_name: str) -> dict[str, str]:
        body = self.request_json(
            "list web service keys",
            f"web service {web_service_name}",
            "GET",
            self._url(web_service_name, "/listKeys"),
            params={"api-version": self.api_version},
        )
        listed = expect_object("list web service keys", f"web service {web_service_name}", body)
        keys = {k: str(v) for k, v in listed.items() if v}
        for value in keys.values():
            mask_once(value)
        return keys
