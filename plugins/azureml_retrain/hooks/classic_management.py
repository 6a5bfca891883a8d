"""Classic web service management plane (``management.azureml.net``): web services and endpoints.

Connection (type ``azureml_classic_management``): *Host* is the management host
(``https://management.azureml.net`` or a regional one such as
``https://europewest.management.azureml.net``); *Schema* is the workspace id; *Password* is the
workspace authorization token (or the API key of the endpoint being managed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from azureml_retrain.exceptions import AzureMLServiceError, ConfigurationError
from azureml_retrain.hooks.base import AzureMLHttpHook, expect_object, expect_objects
from azureml_retrain.lazy import cached_property
from azureml_retrain.redaction import mask_once

DEFAULT_ENDPOINT = "default"
ENDPOINT_NAME_RULE = re.compile(r"^[a-z0-9]{1,24}$")
KEY_FIELDS = ("PrimaryKey", "SecondaryKey")


def validate_endpoint_name(name: str, field: str = "endpoint_name") -> str:
    if not ENDPOINT_NAME_RULE.match(name or ""):
        raise ConfigurationError(f"{field}: {name!r} is not a valid endpoint name (1-24 lowercase letters and digits)")
    return name


class AzureMLClassicManagementHook(AzureMLHttpHook):
    """List, create, patch, refresh and delete endpoints of classic web services in one workspace.

    Endpoints come back without their keys (``PrimaryKey``, ``SecondaryKey``): ask
    ``endpoint_api_key(web_service_id, endpoint_name)`` for the one you use, which registers it with
    Airflow's secrets masker as it hands it out. Keys nobody uses are never registered, so reading
    many endpoints costs the masker nothing.

    :param conn_id: ``azureml_classic_management`` connection: Host the management host (e.g.
        ``https://management.azureml.net``), Schema the workspace id, Password the workspace
        authorization token.
    :param workspace_id: the workspace, instead of the connection's Schema (or ``workspace_id`` extra).
    """

    conn_type = "azureml_classic_management"
    default_conn_name = "azureml_classic_management_default"
    hook_name = "Azure ML Studio classic management"
    credential_field = "Password (the workspace authorization token or the endpoint's key)"
    extra_aliases: ClassVar[Mapping[str, str]] = {"workspace_id": "schema"}

    def __init__(self, conn_id: str = default_conn_name, *, workspace_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self._workspace_id = workspace_id
        # (web service, endpoint) -> the endpoint's keys from its last read; never returned in an endpoint.
        self._endpoint_keys: dict[tuple[str, str], dict[str, Any]] = {}

    @cached_property
    def base_url(self) -> str:
        host = str(self.require(self.connection.host, "Host", "e.g. https://management.azureml.net")).rstrip("/")
        if not re.match(r"^https?://", host):
            host = f"https://{host}"
        return host

    @cached_property
    def workspace_id(self) -> str:
        return str(
            self._workspace_id
            or self.connection.schema
            or self.extras.get("workspace_id")
            or self.require(None, "Schema (workspace id)", "the workspace id from the Studio settings page")
        )

    def auth_headers(self) -> dict[str, str]:
        token = self.require(self.connection.password, "Password", "the workspace authorization token")
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _url(self, *parts: str) -> str:
        return "/".join([self.base_url, "workspaces", self.workspace_id, "webservices", *parts])

    def _keep_keys(self, web_service_id: str, endpoint: dict[str, Any], name: Any = None) -> dict[str, Any]:
        """The endpoint without its keys, which the hook keeps to itself (see :meth:`endpoint_api_key`).

        Keys are not registered with the masker here: each registration rebuilds the masker's pattern
        of every secret, in the task and in its supervisor, so registering the two keys of every
        endpoint read made a batch of promotions quadratic in its endpoints. A key that is never
        returned needs no mask; the one a caller asks for is masked before it is handed out.
        """
        keys = {field: endpoint.pop(field) for field in KEY_FIELDS if field in endpoint}
        name = endpoint.get("Name") if name is None else name
        if isinstance(name, str) and name:
            self._endpoint_keys[(web_service_id, name)] = keys
        return endpoint

    def endpoint_api_key(self, web_service_id: str, endpoint_name: str, *, field: str = "PrimaryKey") -> str:
        """The endpoint's API key (``PrimaryKey`` or ``SecondaryKey``), registered with the masker.

        Endpoints returned by :meth:`get_endpoint` and :meth:`list_endpoints` carry no keys; this
        returns the key from the last read of the endpoint (reading it if the hook has not).
        """
        if field not in KEY_FIELDS:
            raise ConfigurationError(f"field: {field!r} is not an endpoint key; one of {list(KEY_FIELDS)}")
        if (web_service_id, endpoint_name) not in self._endpoint_keys:
            self.get_endpoint(web_service_id, endpoint_name)
        key = self._endpoint_keys.get((web_service_id, endpoint_name), {}).get(field)
        if not isinstance(key, str) or not key:
            raise AzureMLServiceError(
                "get endpoint key",
                f"endpoint {endpoint_name} of web service {web_service_id}",
                status=200,
                code="MalformedResponse",
                message=f"the endpoint has no {field}",
            )
        mask_once(key)
        return key

    # --- web services --------------------------------------------------------------------------

    def list_web_services(self) -> list[dict[str, Any]]:
        resource = f"workspace {self.workspace_id}"
        body = self.request_json("list web services", resource, "GET", self._url())
        return expect_objects("list web services", resource, body)

    def get_web_service(self, web_service_id: str) -> dict[str, Any]:
        resource = f"web service {web_service_id}"
        body = self.request_json("get web service", resource, "GET", self._url(web_service_id))
        return expect_object("get web service", resource, body)

    def probe(self) -> str:
        """List the workspace's web services (GET, authorized by the workspace token)."""
        count = len(self.list_web_services())
        return f"authorization token accepted for workspace {self.workspace_id}: {count} web service(s)"

    # --- endpoints -----------------------------------------------------------------------------

    def list_endpoints(self, web_service_id: str) -> list[dict[str, Any]]:
        """The web service's endpoints, without their keys (see :meth:`endpoint_api_key`)."""
        resource = f"web service {web_service_id}"
        body = self.request_json("list endpoints", resource, "GET", self._url(web_service_id, "endpoints"))
        return [self._keep_keys(web_service_id, e) for e in expect_objects("list endpoints", resource, body)]

    def get_endpoint(self, web_service_id: str, endpoint_name: str) -> dict[str, Any]:
        """The endpoint, without its keys (see :meth:`endpoint_api_key`)."""
        resource = f"endpoint {endpoint_name} of web service {web_service_id}"
        body = self.request_json("get endpoint", resource, "GET", self._url(web_service_id, "endpoints", endpoint_name))
        return self._keep_keys(web_service_id, expect_object("get endpoint", resource, body), endpoint_name)

    def find_endpoint(self, web_service_id: str, endpoint_name: str) -> dict[str, Any] | None:
        """The endpoint, or None if the web service has no endpoint by that name."""
        try:
            return self.get_endpoint(web_service_id, endpoint_name)
        except AzureMLServiceError as exc:
            if exc.status == 404:
                return None
            raise

    def put_endpoint(
        self,
        web_service_id: str,
        endpoint_name: str,
        *,
        description: str = "",
        throttle_level: str = "Low",
        max_concurrent_calls: int = 4,
    ) -> None:
        """Add (or update) a non-default endpoint."""
        validate_endpoint_name(endpoint_name)
        self.request(
            "add endpoint",
            f"endpoint {endpoint_name} of web service {web_service_id}",
            "PUT",
            self._url(web_service_id, "endpoints", endpoint_name),
            json_body={
                "Description": description,
                "ThrottleLevel": throttle_level,
                "MaxConcurrentCalls": max_concurrent_calls,
            },
            expect_json=False,
        )

    def delete_endpoint(self, web_service_id: str, endpoint_name: str) -> None:
        self.request(
            "delete endpoint",
            f"endpoint {endpoint_name} of web service {web_service_id}",
            "DELETE",
            self._url(web_service_id, "endpoints", endpoint_name),
            expect_json=False,
        )

    def patch_endpoint_resources(
        self, web_service_id: str, endpoint_name: str, resources: list[Mapping[str, Any]]
    ) -> None:
        """Point the endpoint's updatable resources (its trained model) at new blobs.

        ``resources`` items are ``{"Name": "<exp> [trained model]", "Location": {"BaseLocation",
        "RelativeLocation", "SasBlobToken"}}``.
        """
        if endpoint_name == DEFAULT_ENDPOINT:
            raise ConfigurationError(
                "endpoint_name: the 'default' endpoint follows the experiment and cannot be patched; "
                "patch a non-default endpoint of the predictive web service"
            )
        for resource in resources:
            token = resource.get("Location", {}).get("SasBlobToken")
            if token:
                mask_once(str(token))
        self.request(
            "patch endpoint resources",
            f"endpoint {endpoint_name} of web service {web_service_id}",
            "PATCH",
            self._url(web_service_id, "endpoints", endpoint_name),
            json_body={"Resources": [dict(r) for r in resources]},
            expect_json=False,
        )

    def refresh_endpoint(self, web_service_id: str, endpoint_name: str, *, overwrite_resources: bool) -> bool:
        """Copy the default endpoint's graph onto this one; False when nothing changed (304)."""
        response = self.request(
            "refresh endpoint",
            f"endpoint {endpoint_name} of web service {web_service_id}",
            "POST",
            self._url(web_service_id, "endpoints", endpoint_name, "refresh"),
            json_body={"OverwriteResources": str(overwrite_resources)},
            expect_json=False,
            ok_statuses=frozenset({304}),
        )
        return response.status_code != 304
