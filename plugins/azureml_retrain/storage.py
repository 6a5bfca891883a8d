"""Blob references the services need, built from a wasb connection through the Azure provider's WasbHook.

BES requests and endpoint PATCHes carry storage credentials (a connection string or a SAS); they are
built here at the moment of use, registered with the secrets masker, and never returned to XCom.

Every storage client of the project is built by :func:`wasb_hook` / :func:`wasb_async_hook` (quiet
azure-core HTTP logging), and every call to storage runs inside :func:`storage_call` (or, in async
code, goes through :func:`refused_credential_error_async`): a credential the account refuses becomes a
:class:`ConfigurationError` naming the connection and the field that holds it, never its value, and
the task fails without retrying (a wrong key does not fix itself).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from azureml_retrain.blobs import BlobLocation
from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.http_logging import quiet_azure_http_logging
from azureml_retrain.lazy import cached_property
from azureml_retrain.redaction import mask_once

if TYPE_CHECKING:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook, WasbHook

ReferenceMode = Literal["sas", "connection_string"]
REFERENCE_MODES: tuple[str, ...] = ("sas", "connection_string")
# SAS lifetimes: long enough for the consumer to read once, short enough to be useless later.
DEFAULT_SAS_LIFETIME = timedelta(hours=1)


# Jobs that read the same blob within a few minutes (many models trained on one dataset) share its
# token: each new token is one more secret for the process's masker, which never forgets one and
# rebuilds its pattern on every addition (a long-lived triggerer minting per job slows down).
SAS_REUSE_WINDOW = timedelta(minutes=5)
# Jobs that write into the same output container within this window share one container-scoped
# create+write token (see StorageAccount.output_sas_token): a token per output blob was two new
# secrets per job, and 500 jobs starting at once spent most of the triggerer's CPU in the masker.
OUTPUT_SAS_REUSE_WINDOW = timedelta(minutes=15)
_recent_tokens: dict[tuple[Any, ...], tuple[datetime, str]] = {}
# Azure Storage signs user delegation keys, so the SAS they sign, for at most 7 days.
MAX_USER_DELEGATION = timedelta(days=7)
# The triggers mint tokens from many threads at once (triggers/blocking.py): pruning the dict while
# another thread adds to it failed jobs with "dictionary changed size during iteration".
_recent_tokens_lock = threading.Lock()


def sas_signature(token: str) -> str | None:
    """The ``sig`` value of a SAS query string, as it appears in the string (URL-encoded)."""
    for part in token.lstrip("?").split("&"):
        name, _, value = part.partition("=")
        if name == "sig" and value:
            return value
    return None


def wasb_hook(wasb_conn_id: str) -> WasbHook:
    """The Azure provider's sync hook for ``wasb_conn_id``, with azure-core's HTTP logging quiet."""
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    hook = WasbHook(wasb_conn_id=wasb_conn_id)
    quiet_azure_http_logging()
    return hook


def wasb_async_hook(wasb_conn_id: str) -> WasbAsyncHook:
    """The Azure provider's async hook for ``wasb_conn_id``, with azure-core's HTTP logging quiet
    (the async hook, unlike the sync one, leaves it at INFO: one record per request in the trigger log)."""
    from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook

    quiet_azure_http_logging()
    return WasbAsyncHook(wasb_conn_id=wasb_conn_id)


# --------------------------------------------------------------------------------------------------
# A refused storage credential
# --------------------------------------------------------------------------------------------------

# The key extras WasbHook.get_conn reads after connection_string and tenant_id, before the Password.
_KEY_EXTRAS = ("shared_access_key", "sas_token")


def _extra_key(extra: Mapping[str, Any], name: str) -> str | None:
    """The extra's key as the connection spells it (``name`` or the older ``extra__wasb__name``), if set."""
    for key in (name, f"extra__wasb__{name}"):
        if extra.get(key):
            return key
    return None


def refused_storage_credential(wasb_conn_id: str, connection: Any | None) -> str:
    """How an error names the credential a storage account refused: the connection and the field that
    holds it (whichever ``WasbHook`` uses for this connection), never its value.

    :param connection: the connection, or None when it could not be read (then only its id is named)
    """
    if connection is None:
        return f"the credential of connection '{wasb_conn_id}'"
    extra = connection.extra_dejson if isinstance(connection.extra_dejson, Mapping) else {}
    if key := _extra_key(extra, "connection_string"):
        field = f"extra {key}"
    elif key := _extra_key(extra, "tenant_id"):
        field = f"service principal (Login, Password, extra {key}) or its role on the storage account"
    elif key := next((k for name in _KEY_EXTRAS if (k := _extra_key(extra, name))), None):
        field = f"extra {key}"
    elif connection.password:
        field = "Password (the storage account key)"
    elif key := _extra_key(extra, "account_key"):
        field = f"extra {key}"
    else:
        return (
            f"the default Azure credential (connection '{wasb_conn_id}' holds no key: managed identity or "
            "environment) or its role on the storage account"
        )
    return f"the {field} of connection '{wasb_conn_id}'"


def is_refused_credential(error: BaseException) -> bool:
    """Whether a storage error means the credential was refused (401, 403, or a token never obtained)."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(error, ClientAuthenticationError):
        return True
    return isinstance(error, HttpResponseError) and error.status_code in (401, 403)


def refused_credential_error(
    wasb_conn_id: str, action: str, error: BaseException, connection: Any | None
) -> ConfigurationError:
    """The error for a refused credential: what was being done, the status and the service's error
    code, and which field of which connection to fix. The service's message is left out: it may
    quote the request's signature."""
    status = getattr(error, "status_code", None)
    code = getattr(error, "error_code", None)
    response = getattr(error, "response", None)
    if code is None and response is not None:
        code = response.headers.get("x-ms-error-code")
    code = getattr(code, "value", code)  # the storage SDK's StorageErrorCode enum: its wire value
    answer = f"HTTP {status} {code or ''}".rstrip() if status is not None else type(error).__name__
    return ConfigurationError(
        f"{action}: the storage account refused the credential ({answer}; refused: "
        f"{refused_storage_credential(wasb_conn_id, connection)}). Retrying cannot help; fix the connection."
    )


def _connection(wasb_conn_id: str) -> Any | None:
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(wasb_conn_id)
    except Exception:  # the error names the connection id alone rather than hiding the refusal
        return None


async def refused_credential_error_async(wasb_conn_id: str, action: str, error: BaseException) -> ConfigurationError:
    """:func:`refused_credential_error` for async code (the triggerer), reading the connection without
    blocking the event loop."""
    from airflow.providers.common.compat.connection import get_async_connection

    try:
        connection = await get_async_connection(wasb_conn_id)
    except Exception:  # the error names the connection id alone rather than hiding the refusal
        connection = None
    return refused_credential_error(wasb_conn_id, action, error, connection)


@contextmanager
def storage_call(wasb_conn_id: str, action: str) -> Iterator[None]:
    """Calls to blob storage through ``wasb_conn_id``: a refused credential raises a
    :class:`ConfigurationError` naming the connection's field (see :func:`refused_credential_error`);
    every other error passes through unchanged.

    :param action: what the block does, for the message (e.g. "listing data/incoming/")
    """
    try:
        yield
    except Exception as error:
        if not is_refused_credential(error):
            raise
        # Not chained: the storage error's text may quote the request's signature.
        raise refused_credential_error(wasb_conn_id, action, error, _connection(wasb_conn_id)) from None


@dataclass
class StorageAccount:
    """The storage account behind a wasb connection, as the Azure ML services need to reach it."""

    wasb_conn_id: str

    @cached_property
    def hook(self) -> Any:
        return wasb_hook(self.wasb_conn_id)

    def call(self, action: str) -> AbstractContextManager[None]:
        """:func:`storage_call` through this account's connection."""
        return storage_call(self.wasb_conn_id, action)

    @cached_property
    def client(self) -> Any:
        return self.hook.blob_service_client

    def ensure_container(self, container: str) -> None:
        """Create ``container`` when it does not exist yet (idempotent). BES writes its outputs into
        existing containers only: a missing one fails the job with a misleading "blob not found"."""
        from azure.core.exceptions import ResourceExistsError

        with self.call(f"creating container {container}"), contextlib.suppress(ResourceExistsError):
            self.client.create_container(container)

    @property
    def account_name(self) -> str:
        return str(self.client.account_name)

    @property
    def base_location(self) -> str:
        """The account's blob endpoint with a trailing slash (BES ``BaseLocation``)."""
        return str(self.client.url).split("?", 1)[0].rstrip("/") + "/"

    @cached_property
    def _account_key(self) -> str | None:
        credential = self.client.credential
        key = getattr(credential, "account_key", None)
        if key:
            mask_once(str(key))
        return str(key) if key else None

    def blob_url(self, location: BlobLocation) -> str:
        return f"{self.base_location}{location.relative_location}"

    def sas_token(self, location: BlobLocation, *, write: bool, lifetime: timedelta = DEFAULT_SAS_LIFETIME) -> str:
        """A blob-scoped SAS (with a leading ``?``): read-only, or read+create+write.

        Signed with the account key when the connection has one, else with a user delegation key
        (connections that authenticate with Azure AD).
        """
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        def mint(start: datetime, expiry: datetime) -> str:
            return generate_blob_sas(
                account_name=self.account_name,
                container_name=location.container,
                blob_name=location.blob_name,
                permission=BlobSasPermissions(read=True, write=write, create=write),
                start=start,
                expiry=expiry,
                **self._signing(start, expiry),
            )

        key = ("blob", self.account_name, location.container, location.blob_name, write, lifetime)
        return self._reused_token(key, SAS_REUSE_WINDOW, lifetime, mint)

    def output_sas_token(self, container: str, *, lifetime: timedelta) -> str:
        """A container-scoped SAS (with a leading ``?``) that creates and writes blobs in ``container``
        and nothing else: no read, list or delete. Valid for at least ``lifetime`` from now.

        One token serves every job that writes into the container within
        :data:`OUTPUT_SAS_REUSE_WINDOW` (it is minted valid for ``lifetime`` plus that window): each
        new token is a secret the process's masker keeps for good and rebuilds its pattern for.
        Callers keep it away from containers that hold a job's inputs (see :func:`bes.build_request`).
        """
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        def mint(start: datetime, expiry: datetime) -> str:
            return generate_container_sas(
                account_name=self.account_name,
                container_name=container,
                permission=ContainerSasPermissions(create=True, write=True),
                start=start,
                expiry=expiry,
                **self._signing(start, expiry),
            )

        key = ("container-output", self.account_name, container, lifetime)
        return self._reused_token(key, OUTPUT_SAS_REUSE_WINDOW, lifetime + OUTPUT_SAS_REUSE_WINDOW, mint)

    def _signing(self, start: datetime, expiry: datetime) -> dict[str, Any]:
        if self._account_key:
            return {"account_key": self._account_key}
        if expiry - start > MAX_USER_DELEGATION:
            raise ConfigurationError(
                f"a SAS signed with a user delegation key (connection '{self.wasb_conn_id}' has no account key) is "
                f"valid for at most 7 days, and this one would need {expiry - start}: shorten job_timeout (a BES "
                "job's outputs) or sas_lifetime (a promotion's model), or give the connection an account key"
            )
        return {"user_delegation_key": self._user_delegation_key(start, expiry)}

    @staticmethod
    def _reused_token(
        key: tuple[Any, ...], window: timedelta, valid_for: timedelta, mint: Callable[[datetime, datetime], str]
    ) -> str:
        """The token cached under ``key`` if minted within ``window``, else a new one,
        ``mint(start, expiry)`` valid for ``valid_for`` from now, registered with the masker and cached."""
        now = datetime.now(UTC)
        with _recent_tokens_lock:
            reusable = _recent_tokens.get(key)
        if reusable is not None and now - reusable[0] < window:
            return reusable[1]
        token = mint(now - timedelta(minutes=5), now + valid_for)  # the start tolerates clock skew
        # The signature is the secret part: masking it alone hides the token in any log line, and keeps
        # the masker's pattern (rebuilt for each new secret) short in processes that mint many.
        mask_once(sas_signature(token) or token)
        longest = max(SAS_REUSE_WINDOW, OUTPUT_SAS_REUSE_WINDOW)
        with _recent_tokens_lock:
            for stale in [k for k, (minted, _) in _recent_tokens.items() if now - minted >= longest]:
                del _recent_tokens[stale]
            _recent_tokens[key] = (now, f"?{token}")
        return f"?{token}"

    def _user_delegation_key(self, start: datetime, expiry: datetime) -> Any:
        with self.call(f"getting a user delegation key to sign a SAS in {self.account_name}"):
            return self.client.get_user_delegation_key(start, expiry)

    def connection_string(self) -> str:
        """An account-key connection string for the account (BES's ``ConnectionString`` form)."""
        if not self._account_key:
            raise ConfigurationError(
                f"reference_mode='connection_string' needs an account key in connection '{self.wasb_conn_id}'; "
                "use reference_mode='sas' for connections that authenticate with Azure AD"
            )
        protocol = "https" if self.base_location.startswith("https") else "http"
        value = (
            f"DefaultEndpointsProtocol={protocol};AccountName={self.account_name};AccountKey={self._account_key};"
            f"BlobEndpoint={self.base_location.rstrip('/')};"
        )
        mask_once(value)
        return value

    def bes_reference(
        self,
        location: BlobLocation,
        *,
        mode: ReferenceMode,
        write: bool,
        lifetime: timedelta = DEFAULT_SAS_LIFETIME,
        container_token: bool = False,
    ) -> dict[str, str]:
        """A BES ``AzureBlobDataReference`` for the blob, in the SAS or connection-string form.

        In the SAS form the token is valid for ``lifetime``: blob-scoped (read-only, or with ``write``
        read+create+write), or with ``container_token`` the container's shared create+write token
        (:meth:`output_sas_token`).
        """
        if mode == "sas":
            if container_token:
                token = self.output_sas_token(location.container, lifetime=lifetime)
            else:
                token = self.sas_token(location, write=write, lifetime=lifetime)
            return {
                "BaseLocation": self.base_location,
                "RelativeLocation": location.relative_location,
                "SasBlobToken": token,
            }
        if mode == "connection_string":
            return {"ConnectionString": self.connection_string(), "RelativeLocation": location.relative_location}
        raise ConfigurationError(f"reference_mode: expected one of {REFERENCE_MODES}, got {mode!r}")
