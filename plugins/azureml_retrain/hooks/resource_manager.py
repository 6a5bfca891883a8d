"""New (Resource Manager) web services: ``Microsoft.MachineLearning/webServices`` on ARM.

Requests go through Microsoft's runtime for Resource Manager, as every generated azure-mgmt SDK
sends them: azure-core's pipeline (``ARMPipelineClient`` / ``AsyncARMPipelineClient``) with its retry
policy (``Retry-After`` honoured), the ARM bearer-token policy (which refuses to send a token to any
URL that is not https) and ARM's HTTP logging policy (headers redacted); long-running operations are
followed with ``ARMPolling`` / ``AsyncARMPolling`` (``Azure-AsyncOperation``, ``Location`` or the
resource's ``provisioningState``). Only the ``webServices`` operations themselves, for which no SDK
exists, are requests of ours on that pipeline. An operation is handed from the worker to the
triggerer as azure-core's continuation token (JSON, without credentials).

Connection (type ``azureml_resource_manager``): *Host* is the ARM endpoint (default
``https://management.azure.com``; https only); *Login* / *Password* are a service principal's client
id and secret (leave both empty to use the default Azure credential chain: workload identity,
managed identity, environment, Azure CLI, with the optional extras ``managed_identity_client_id`` and
``workload_identity_tenant_id`` as in the Azure provider's ``azure`` connection); extras ``tenant_id``,
``subscription_id``, ``resource_group`` and optionally ``authority_host`` (a sovereign cloud or a
local token authority), ``ca_bundle`` (a CA file to trust for the ARM endpoint and the authority;
``authority_ca_bundle`` is read as its older name),
``api_version`` (default 2017-01-01), ``scope``, ``max_attempts``, ``retry_base_delay``,
``retry_max_delay``, ``connect_timeout``, ``read_timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

from azureml_retrain.exceptions import AzureMLServiceError, ConfigurationError
from azureml_retrain.hooks.base import RETRYABLE_CLIENT_ERRORS, AzureMLBaseHook, error_from_body, expect_object
from azureml_retrain.http_logging import quiet_azure_http_logging
from azureml_retrain.lazy import cached_property
from azureml_retrain.redaction import mask_once, redact, strip_query

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from azure.core.pipeline import PipelineResponse
    from azure.mgmt.core import ARMPipelineClient, AsyncARMPipelineClient

ARM_HOST = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
API_VERSION = "2017-01-01"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
USER_AGENT = "azureml-retrain-airflow"
# Our PUT and PATCH send the whole definition (the same body on every attempt), so azure-core may
# retry them like its default methods; it would not retry a PATCH on 429 or a dropped connection.
RETRIED_METHODS = frozenset({"HEAD", "GET", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class ProvisioningState:
    """States of an ARM async operation (and of ``properties.provisioningState``)."""

    UNKNOWN = "Unknown"
    PROVISIONING = "Provisioning"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})


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
    """State of an async operation body: ARM's ``status`` (what ARMPolling reads), else the ML spec's
    ``provisioningState``."""
    state = get_member(operation, "status") or get_member(operation, "provisioningState")
    return str(state) if state else ProvisioningState.UNKNOWN


def operation_error(operation: Mapping[str, Any]) -> str:
    """``code message`` of a failed operation (``errorInfo`` in the ML spec, ``error`` in generic ARM)."""
    error = get_member(operation, "errorInfo") or get_member(operation, "error") or {}
    if not isinstance(error, Mapping):
        return str(error)
    return f"{get_member(error, 'code', '') or ''} {get_member(error, 'message', '') or ''}".strip()


@dataclass(frozen=True)
class ArmOperation:
    """A started long-running operation: azure-core's continuation token and, for logs, where it is watched."""

    continuation_token: str
    status_url: str | None
    state: str

    @property
    def done(self) -> bool:
        return self.state in ProvisioningState.TERMINAL


def _body(pipeline_response: PipelineResponse[Any, Any]) -> Any:
    """The JSON body of a response (the deserialization callback of our pollers)."""
    response = pipeline_response.http_response
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


# 409 Conflict from Resource Manager: another operation on the web service is still running; a later
# try (once it has ended) may succeed, so it does not end the task as other 4xx do.
ARM_RETRYABLE_CLIENT_ERRORS = RETRYABLE_CLIENT_ERRORS | {409}


def _transient_status(status: int | None) -> bool:
    return status is None or status >= 500 or status in (408, 429)


class AzureMLResourceManagerHook(AzureMLBaseHook):
    """Get, change and watch ``Microsoft.MachineLearning/webServices`` through azure-core's ARM pipeline.

    :param conn_id: ``azureml_resource_manager`` connection: Host the ARM endpoint (default
        ``https://management.azure.com``), Login and Password a service principal's client id and
        secret (neither: the default Azure credential chain), extras ``tenant_id``,
        ``subscription_id``, ``resource_group`` and the optional ones the module's docstring lists.
    :param subscription_id: the subscription, instead of the connection's ``subscription_id`` extra.
    :param resource_group: the resource group, instead of the connection's ``resource_group`` extra.
    :param transport: azure-core transport of the sync pipeline (tests fake HTTP there); None:
        ``RequestsTransport``.
    :param async_transport: the same for the async pipeline (the trigger's); None: ``AioHttpTransport``.
    """

    conn_type = "azureml_resource_manager"
    default_conn_name = "azureml_resource_manager_default"
    hook_name = "Azure ML web services (Resource Manager)"
    credential_field = "service principal (Login, Password, extra tenant_id) or its role on the resource group"
    extra_aliases: ClassVar[Mapping[str, str]] = {"authority_ca_bundle": "ca_bundle"}

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        transport: Any = None,
        async_transport: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, **kwargs)
        self._subscription_id = subscription_id
        self._resource_group = resource_group
        self._transport = transport
        self._async_transport = async_transport
        self._async_credential: Any = None

    # --- connection ------------------------------------------------------------------------

    @cached_property
    def base_url(self) -> str:
        url = str(self.connection.host or ARM_HOST).rstrip("/")
        if urlsplit(url).scheme != "https":
            raise ConfigurationError(
                f"Connection '{self.conn_id}': Host must be an https URL (got {strip_query(url)!r}): Resource "
                "Manager is https-only and a bearer token is never sent over http"
            )
        return url

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
    def scope(self) -> str:
        return str(self.extras.get("scope") or ARM_SCOPE)

    @cached_property
    def connection_verify(self) -> str | bool:
        """What TLS certificates to trust (``authority_ca_bundle`` is ``ca_bundle``'s older name here)."""
        ca_bundle = self._ca_bundle or self.extras.get("ca_bundle") or self.extras.get("authority_ca_bundle")
        return str(ca_bundle) if ca_bundle else True

    def _authority_arguments(self) -> dict[str, Any]:
        authority = str(self.extras.get("authority_host") or PUBLIC_AUTHORITY).rstrip("/")
        return {"authority": authority, "connection_verify": self.connection_verify}

    def _secret_arguments(self) -> dict[str, Any] | None:
        """``ClientSecretCredential``'s arguments; None when the connection leaves the credential chain to Azure."""
        conn = self.connection
        if not conn.login:
            return None
        tenant = self.require(self.extras.get("tenant_id"), "extra tenant_id", "the service principal's tenant")
        secret = self.require(conn.password, "Password", "the service principal's client secret")
        authority = self._authority_arguments()
        return {
            "tenant_id": str(tenant),
            "client_id": str(conn.login),
            "client_secret": str(secret),
            # Instance discovery only knows Microsoft's clouds; skip it for any other authority.
            "disable_instance_discovery": authority["authority"] != PUBLIC_AUTHORITY,
            **authority,
        }

    def _default_credential_arguments(self) -> dict[str, Any]:
        """``DefaultAzureCredential``'s arguments: the authority, and the extras
        ``managed_identity_client_id`` and ``workload_identity_tenant_id`` as the Azure provider passes them
        (``get_sync_default_azure_credential``; the tenant is also allowed for tokens)."""
        arguments = self._authority_arguments()
        client_id = self.extras.get("managed_identity_client_id")
        tenant_id = self.extras.get("workload_identity_tenant_id")
        if client_id:
            arguments["managed_identity_client_id"] = str(client_id)
        if tenant_id:
            arguments["workload_identity_tenant_id"] = str(tenant_id)
            arguments["additionally_allowed_tenants"] = [str(tenant_id)]
        return arguments

    def sibling(self) -> Self:
        """Also one credential (so one token) and one pipeline client, which azure-core makes safe to
        share between threads."""
        self.client  # noqa: B018
        return super().sibling()

    @cached_property
    def credential(self) -> Any:
        from azure.identity import ClientSecretCredential, DefaultAzureCredential

        arguments = self._secret_arguments()
        if arguments is None:
            return DefaultAzureCredential(**self._default_credential_arguments())
        return ClientSecretCredential(**arguments)

    def _pipeline_policies(self, credential: Any, *, asynchronous: bool) -> list[Any]:
        """The policies of a generated azure-mgmt client, in its order, with our retry settings."""
        from azure.core.pipeline import policies
        from azure.mgmt.core.policies import (
            ARMAutoResourceProviderRegistrationPolicy,
            ARMChallengeAuthenticationPolicy,
            ARMHttpLoggingPolicy,
            AsyncARMAutoResourceProviderRegistrationPolicy,
            AsyncARMChallengeAuthenticationPolicy,
        )

        quiet_azure_http_logging()  # a waiting trigger would otherwise log every request
        retry = self.retry_policy
        retries = max(0, retry.max_attempts - 1)
        # max_attempts bounds every kind of failure (azure-core also counts connect, read and status ones).
        retry_settings = {
            "retry_total": retries,
            "retry_connect": retries,
            "retry_read": retries,
            "retry_status": retries,
            "retry_backoff_factor": retry.base_delay,
            "retry_backoff_max": retry.max_delay,
        }
        if asynchronous:
            registration: Any = AsyncARMAutoResourceProviderRegistrationPolicy()
            retry_policy: Any = policies.AsyncRetryPolicy(**retry_settings)
            redirect: Any = policies.AsyncRedirectPolicy()
            authentication: Any = AsyncARMChallengeAuthenticationPolicy(credential, self.scope)
        else:
            registration = ARMAutoResourceProviderRegistrationPolicy()
            retry_policy = policies.RetryPolicy(**retry_settings)
            redirect = policies.RedirectPolicy()
            authentication = ARMChallengeAuthenticationPolicy(credential, self.scope)
        return [
            policies.RequestIdPolicy(),
            policies.HeadersPolicy({"Accept": "application/json"}),
            policies.UserAgentPolicy(user_agent=USER_AGENT),
            policies.ProxyPolicy(),
            policies.ContentDecodePolicy(),
            registration,
            redirect,
            retry_policy,
            authentication,
            policies.CustomHookPolicy(),
            policies.NetworkTraceLoggingPolicy(),
            policies.DistributedTracingPolicy(),
            policies.SensitiveHeaderCleanupPolicy(),
            ARMHttpLoggingPolicy(),
        ]

    def _transport_options(self) -> dict[str, Any]:
        connect, read = self.timeout
        return {"connection_verify": self.connection_verify, "connection_timeout": connect, "read_timeout": read}

    @cached_property
    def client(self) -> ARMPipelineClient[Any, Any]:
        from azure.core.pipeline.transport import RequestsTransport
        from azure.mgmt.core import ARMPipelineClient

        transport = self._transport or RequestsTransport(**self._transport_options())
        return ARMPipelineClient(
            base_url=self.base_url,
            policies=self._pipeline_policies(self.credential, asynchronous=False),
            transport=transport,
        )

    def get_conn(self) -> ARMPipelineClient[Any, Any]:
        return self.client

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[AsyncARMPipelineClient[Any, Any]]:
        """An ``AsyncARMPipelineClient`` with an async credential, both closed on exit.

        Reads the connection with ``aget_connection`` (a triggerer's event loop must not block on it).
        """
        from azure.core.pipeline.transport import AioHttpTransport
        from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential
        from azure.mgmt.core import AsyncARMPipelineClient

        if "connection" not in self.__dict__:
            self.__dict__["connection"] = await self.aget_connection(self.conn_id)
        credential = self._async_credential
        if credential is None:
            arguments = self._secret_arguments()
            credential = (
                DefaultAzureCredential(**self._default_credential_arguments())
                if arguments is None
                else ClientSecretCredential(**arguments)
            )
        transport = self._async_transport or AioHttpTransport(**self._transport_options())
        client: AsyncARMPipelineClient[Any, Any] = AsyncARMPipelineClient(
            base_url=self.base_url,
            policies=self._pipeline_policies(credential, asynchronous=True),
            transport=transport,
        )
        async with credential, client:
            yield client

    # --- one request -----------------------------------------------------------------------

    def _request(self, method: str, url: str, body: Any = None) -> Any:
        from azure.core.rest import HttpRequest

        params = {} if "api-version=" in url else {"api-version": self.api_version}
        return HttpRequest(method, url, params=params, json=body)

    def _send(
        self, operation: str, resource: str, method: str, url: str, body: Any = None
    ) -> PipelineResponse[Any, Any]:
        """Send one call through the pipeline; a 2xx answer that is JSON (or empty), else an error.

        azure-core retries what it can (throttling, 5xx, connection errors); a 2xx whose body is not
        JSON is retried here, as the pipeline does not read bodies.
        """
        from azure.core.exceptions import DecodeError

        attempts = max(1, self.retry_policy.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                # ``_return_pipeline_response``: what generated clients ask for to start a poller with.
                response: PipelineResponse[Any, Any] = self.client.send_request(
                    self._request(method, url, body), _return_pipeline_response=True, retry_on_methods=RETRIED_METHODS
                )
            except DecodeError as error:  # the pipeline's ContentDecodePolicy found a body that is not JSON
                status = error.status_code
                if status is not None and not 200 <= status < 300:
                    raise self._error(operation, resource, error) from None
            except Exception as error:  # azure-core and azure-identity raise several unrelated types
                raise self._error(operation, resource, error) from None
            else:
                http = response.http_response
                if not 200 <= http.status_code < 300:
                    raise self._status_error(operation, resource, http)
                if not http.content or _body(response) is not None:
                    return response
                status = http.status_code
            if attempt < attempts:
                self.log.warning(
                    "%s for %s: HTTP %s with a body that is not JSON; retrying", operation, resource, status
                )
                self._sleep(self.retry_policy.backoff(attempt))
        raise AzureMLServiceError(
            operation,
            resource,
            status=status,
            code="MalformedResponse",
            message=f"HTTP {status} with a body that is not JSON (after {attempts} attempt(s))",
        )

    def _status_error(self, operation: str, resource: str, http: Any) -> AzureMLServiceError:
        try:
            body = http.json()
        except ValueError:
            body = None
        return error_from_body(
            operation,
            resource,
            http.status_code,
            body,
            text=http.text(),
            reason=http.reason,
            refused_credential=self.refused_credential,
            retryable_client_errors=ARM_RETRYABLE_CLIENT_ERRORS,
        )

    def _error(self, operation: str, resource: str, error: Exception) -> AzureMLServiceError:
        """Our error for one raised by azure-core or azure-identity (never carrying a secret)."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

        if isinstance(error, ServiceRequestError) and "non-TLS" in str(error):
            return _insecure(operation, resource, "it named an http:// URL to call")
        if isinstance(error, ClientAuthenticationError) or type(error).__module__.startswith("azure.identity"):
            return AzureMLServiceError(
                "get Azure AD token",
                f"connection {self.conn_id}",
                status=None,
                code="AuthenticationFailed",
                message=f"{type(error).__name__}: check the service principal id, secret and tenant_id",
            )
        if isinstance(error, HttpResponseError) and error.response is not None:
            return self._status_error(operation, resource, error.response)
        return AzureMLServiceError(
            operation,
            resource,
            status=None,
            code="ConnectionFailed",
            message=f"{type(error).__name__}: {redact(str(error))[:300]}",
        )

    # --- web services ----------------------------------------------------------------------

    def resource_id(self, web_service_name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearning/webServices/{web_service_name}"
        )

    def _url(self, web_service_name: str, suffix: str = "") -> str:
        return f"{self.base_url}{self.resource_id(web_service_name)}{suffix}"

    def get_web_service(self, web_service_name: str) -> dict[str, Any]:
        resource = f"web service {web_service_name}"
        response = self._send("get web service", resource, "GET", self._url(web_service_name))
        return expect_object("get web service", resource, _body(response))

    def list_web_services(self) -> list[dict[str, Any]]:
        """The web services of the resource group (the first page: ARM pages with ``nextLink``)."""
        resource = f"resource group {self.resource_group}"
        url = (
            f"{self.base_url}/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            "/providers/Microsoft.MachineLearning/webServices"
        )
        listed = expect_object(
            "list web services", resource, _body(self._send("list web services", resource, "GET", url))
        )
        value = get_member(listed, "value") or []
        return [dict(item) for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []

    def probe(self) -> str:
        """List the resource group's web services (a token, then one GET)."""
        count = len(self.list_web_services())
        return (
            f"token accepted for subscription {self.subscription_id}, resource group {self.resource_group}: "
            f"{count} web service(s) on the first page"
        )

    def patch_web_service(self, web_service_name: str, definition: Mapping[str, Any]) -> ArmOperation:
        """PATCH the definition; return the long-running operation it started."""
        return self._start("patch web service", web_service_name, "PATCH", definition)

    def put_web_service(self, web_service_name: str, definition: Mapping[str, Any]) -> ArmOperation:
        """PUT (create or replace) the definition; return the long-running operation it started."""
        return self._start("put web service", web_service_name, "PUT", definition)

    def _start(self, operation: str, web_service_name: str, method: str, definition: Mapping[str, Any]) -> ArmOperation:
        resource = f"web service {web_service_name}"
        response = self._send(operation, resource, method, self._url(web_service_name), dict(definition))
        polling = self._polling(poll_interval=0)
        try:
            polling.initialize(self.client, response, _body)
        except Exception as error:
            raise self._polling_error(operation, resource, error) from None
        headers = response.http_response.headers
        for header in ("Azure-AsyncOperation", "Location"):
            if headers.get(header) and urlsplit(headers[header]).scheme != "https":
                # azure-core's token policy would refuse every poll (after its retries): fail now, saying why.
                raise _insecure(operation, resource, f"its {header} header is {strip_query(headers[header])!r}")
        status_url = headers.get("Azure-AsyncOperation") or headers.get("Location")
        return ArmOperation(
            continuation_token=polling.get_continuation_token(),
            status_url=strip_query(status_url) if status_url else None,
            state=_polling_state(polling.status()),
        )

    def list_keys(self, web_service_name: str) -> dict[str, str]:
        resource = f"web service {web_service_name}"
        response = self._send("list web service keys", resource, "GET", self._url(web_service_name, "/listKeys"))
        listed = expect_object("list web service keys", resource, _body(response))
        keys = {k: str(v) for k, v in listed.items() if v}
        for value in keys.values():
            mask_once(value)
        return keys

    def get_async_operation(self, url: str) -> dict[str, Any]:
        """One read of an async operation's status (diagnostics; waiting goes through :meth:`wait_for_operation`)."""
        response = self._send("get async operation", "web service update", "GET", url)
        return expect_object("get async operation", "web service update", _body(response))

    # --- waiting for an operation ----------------------------------------------------------

    @staticmethod
    def _polling(poll_interval: float, *, asynchronous: bool = False) -> Any:
        from azure.mgmt.core.polling.arm_polling import ARMPolling
        from azure.mgmt.core.polling.async_arm_polling import AsyncARMPolling

        kind = AsyncARMPolling if asynchronous else ARMPolling
        return kind(poll_interval, retry_on_methods=RETRIED_METHODS)

    def _polling_error(self, operation: str, resource: str, error: Exception) -> AzureMLServiceError:
        from azure.core.polling.base_polling import BadResponse, BadStatus

        if isinstance(error, BadStatus | BadResponse):
            return AzureMLServiceError(
                operation, resource, status=None, code="BadOperationResponse", message=str(error)
            )
        return self._error(operation, resource, error)

    def wait_for_operation(
        self,
        operation: ArmOperation,
        *,
        timeout: float,
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
    ) -> dict[str, Any]:
        """Follow ``operation`` with ``ARMPolling`` until it ends or ``timeout`` seconds pass; return
        the last status body with ``status`` set to the terminal state."""
        from azure.mgmt.core.polling.arm_polling import ARMPolling

        polling = self._polling(poll_interval)
        client, initial, callback = ARMPolling.from_continuation_token(
            operation.continuation_token, client=self.client, deserialization_callback=_body
        )
        polling.initialize(client, initial, callback)
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while not polling.finished():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _still_running(polling.status(), timeout)
            self._sleep(min(interval, remaining))
            interval = min(max_poll_interval, interval * 2)
            try:
                polling.update_status()
            except Exception as error:
                self._on_poll_error(error)
        return _outcome(polling)

    async def await_operation(
        self,
        continuation_token: str,
        *,
        end_time: float,
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
    ) -> dict[str, Any]:
        """:meth:`wait_for_operation` on the event loop (``AsyncARMPolling``), until ``end_time`` (epoch s)."""
        from azure.mgmt.core.polling.async_arm_polling import AsyncARMPolling

        async with self.async_client() as client:
            polling = self._polling(poll_interval, asynchronous=True)
            _, initial, callback = AsyncARMPolling.from_continuation_token(
                continuation_token, client=client, deserialization_callback=_body
            )
            polling.initialize(client, initial, callback)
            interval = poll_interval
            while not polling.finished():
                remaining = end_time - time.time()
                if remaining <= 0:
                    raise _still_running(polling.status(), None)
                await asyncio.sleep(min(interval, remaining))
                interval = min(max_poll_interval, interval * 2)
                try:
                    await polling.update_status()
                except Exception as error:
                    self._on_poll_error(error)
            return _outcome(polling)

    def _on_poll_error(self, error: Exception) -> None:
        """A failed status read: poll again if a later read may succeed, else raise our error."""
        from azure.core.exceptions import DecodeError, HttpResponseError, ServiceRequestError, ServiceResponseError
        from azure.core.polling.base_polling import BadResponse

        converted = self._polling_error("get async operation", "web service update", error)
        transient = isinstance(error, DecodeError | BadResponse | ServiceResponseError) or (
            isinstance(error, ServiceRequestError) and converted.code != "InsecureTransport"
        )
        if isinstance(error, HttpResponseError) and not isinstance(error, DecodeError):
            transient = _transient_status(getattr(error, "status_code", None))
        if not transient:
            raise converted
        self.log.warning("operation status unavailable (%s); will poll again", converted)


def _insecure(operation: str, resource: str, what: str) -> AzureMLServiceError:
    return AzureMLServiceError(
        operation,
        resource,
        status=None,
        code="InsecureTransport",
        message=(
            f"the service answered over https but {what}; as in every Azure SDK, a bearer token is only sent "
            "over https (check the host's TLS setup and the URLs it hands out)"
        ),
    )


def _polling_state(status: str) -> str:
    """azure-core's ``InProgress`` and ``Accepted`` read as the ML spec's ``Provisioning``."""
    return ProvisioningState.PROVISIONING if status in ("InProgress", "Accepted", "Running") else status


def _outcome(polling: Any) -> dict[str, Any]:
    body = polling.resource()
    outcome = dict(body) if isinstance(body, Mapping) else {}
    outcome["status"] = _polling_state(str(polling.status()))
    return outcome


def _still_running(state: str, timeout: float | None) -> AzureMLServiceError:
    waited = f" after {timeout:.0f}s" if timeout is not None else " at the deadline"
    return AzureMLServiceError(
        "wait for web service update",
        "web service update",
        status=None,
        code="Timeout",
        message=f"still {_polling_state(state)}{waited}",
    )
