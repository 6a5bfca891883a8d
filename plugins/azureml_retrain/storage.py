"""Blob references the services need, built from a wasb connection through the Azure provider's WasbHook.

BES requests and endpoint PATCHes carry storage credentials (a connection string or a SAS); they are
built here at the moment of use, registered with the secrets masker, and never returned to XCom.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from azureml_retrain.blobs import BlobLocation
from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.lazy import cached_property
from azureml_retrain.redaction import mask_once

ReferenceMode = Literal["sas", "connection_string"]
REFERENCE_MODES: tuple[str, ...] = ("sas", "connection_string")
# SAS lifetimes: long enough for the consumer to read once, short enough to be useless later.
DEFAULT_SAS_LIFETIME = timedelta(hours=1)


# Jobs that read the same blob within a few minutes (many models trained on one dataset) share its
# token: each new token is one more secret for the process's masker, which never forgets one and
# rebuilds its pattern on every addition (a long-lived triggerer minting per job slows down).
SAS_REUSE_WINDOW = timedelta(minutes=5)
_recent_tokens: dict[tuple[str, str, str, bool, timedelta], tuple[datetime, str]] = {}


def sas_signature(token: str) -> str | None:
    """The ``sig`` value of a SAS query string, as it appears in the string (URL-encoded)."""
    for part in token.lstrip("?").split("&"):
        name, _, value = part.partition("=")
        if name == "sig" and value:
            return value
    return None


@dataclass
class StorageAccount:
    """The storage account behind a wasb connection, as the Azure ML services need to reach it."""

    wasb_conn_id: str

    @cached_property
    def hook(self) -> Any:
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        return WasbHook(wasb_conn_id=self.wasb_conn_id)

    @cached_property
    def client(self) -> Any:
        return self.hook.blob_service_client

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
        """A blob-scoped SAS (with a leading ``?``): read-only, or create+write for outputs.

        Signed with the account key when the connection has one, else with a user delegation key
        (connections that authenticate with Azure AD).
        """
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = datetime.now(UTC)
        key = (self.account_name, location.container, location.blob_name, write, lifetime)
        reusable = _recent_tokens.get(key)
        if reusable is not None and now - reusable[0] < SAS_REUSE_WINDOW:
            return reusable[1]
        start, expiry = now - timedelta(minutes=5), now + lifetime  # tolerate clock skew
        permission = BlobSasPermissions(read=True, write=write, create=write)
        signing: dict[str, Any] = (
            {"account_key": self._account_key}
            if self._account_key
            else {"user_delegation_key": self.client.get_user_delegation_key(start, expiry)}
        )
        token = generate_blob_sas(
            account_name=self.account_name,
            container_name=location.container,
            blob_name=location.blob_name,
            permission=permission,
            start=start,
            expiry=expiry,
            **signing,
        )
        # The signature is the secret part: masking it alone hides the token in any log line, and keeps
        # the masker's pattern (rebuilt for each new secret) short in processes that mint many.
        mask_once(sas_signature(token) or token)
        for stale in [k for k, (minted, _) in _recent_tokens.items() if now - minted >= SAS_REUSE_WINDOW]:
            del _recent_tokens[stale]
        _recent_tokens[key] = (now, f"?{token}")
        return f"?{token}"

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

    def bes_reference(self, location: BlobLocation, *, mode: ReferenceMode, write: bool) -> dict[str, str]:
        """A BES ``AzureBlobDataReference`` for the blob, in the SAS or connection-string form."""
        if mode == "sas":
            return {
                "BaseLocation": self.base_location,
                "RelativeLocation": location.relative_location,
                "SasBlobToken": self.sas_token(location, write=write),
            }
        if mode == "connection_string":
            return {"ConnectionString": self.connection_string(), "RelativeLocation": location.relative_location}
        raise ConfigurationError(f"reference_mode: expected one of {REFERENCE_MODES}, got {mode!r}")
