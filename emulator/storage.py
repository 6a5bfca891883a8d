"""Blob references as Studio takes them, and the blob I/O behind them (azure-storage-blob).

A reference is ``{ConnectionString, RelativeLocation}`` or ``{BaseLocation, RelativeLocation,
SasBlobToken}``; ``RelativeLocation`` is ``container/path`` with or without a leading slash. ARM
assets name a blob by URI instead and are read with the web service's storage account key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

# Every SAS captured from the real service spans 24 h 5 min between ``st`` and ``se``.
RESULT_SAS_VALIDITY = timedelta(hours=24, minutes=5)
# Azurite's public, documented development account ("UseDevelopmentStorage=true").
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_TIMEOUTS: dict[str, Any] = {"connection_timeout": 5, "read_timeout": 30, "retry_total": 1}


class BlobReferenceError(ValueError):
    """A reference that cannot be used; ``code`` is the catalogue's specific error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BlobTarget:
    """One blob and the credential to reach it (account key or SAS)."""

    account_url: str  # no trailing slash, e.g. http://127.0.0.1:10000/devstoreaccount1
    account_name: str
    container: str
    blob: str
    account_key: str | None = None
    sas_token: str | None = None  # without the leading "?"

    @property
    def base_location(self) -> str:
        return self.account_url + "/"

    @property
    def relative_location(self) -> str:
        return f"{self.container}/{self.blob}"

    @property
    def uri(self) -> str:
        return f"{self.account_url}/{self.relative_location}"

    @property
    def extension(self) -> str:
        name = self.blob.rsplit("/", 1)[-1]
        return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""

    def with_key(self, account_key: str | None) -> BlobTarget:
        return replace(self, account_key=account_key)

    def _client(self) -> BlobClient:
        credential: Any
        if self.account_key:
            credential = {"account_name": self.account_name, "account_key": self.account_key}
        else:
            credential = self.sas_token
        return BlobClient(self.account_url, self.container, self.blob, credential=credential, **_TIMEOUTS)

    def download(self) -> bytes:
        try:
            return self._client().download_blob().readall()
        except Exception as exc:
            raise _storage_error(self, exc) from exc

    def check_exists(self) -> None:
        try:
            self._client().get_blob_properties()
        except Exception as exc:
            raise _storage_error(self, exc) from exc

    def upload(self, data: bytes) -> None:
        try:
            self._client().upload_blob(data, overwrite=True)
        except Exception as exc:
            raise _storage_error(self, exc) from exc

    def read_sas(self, now: datetime | None = None) -> str | None:
        """A fresh blob-scoped read-only SAS (with ``?``), or None without an account key."""
        if not self.account_key:
            return None
        start = (now or datetime.now(UTC)).replace(microsecond=0)
        token = generate_blob_sas(
            self.account_name,
            self.container,
            self.blob,
            account_key=self.account_key,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=start + RESULT_SAS_VALIDITY,
        )
        return "?" + token


def _storage_error(target: BlobTarget, exc: Exception) -> BlobReferenceError:
    where = f"'{target.relative_location}' in account '{target.account_name}'"
    if isinstance(exc, ResourceNotFoundError):
        return BlobReferenceError("BlobNotFound", f"Blob {where} was not found.")
    if isinstance(exc, ClientAuthenticationError) or (
        isinstance(exc, HttpResponseError) and exc.status_code in (401, 403)
    ):
        return BlobReferenceError("InvalidBlob", f"Access to blob {where} was denied by the storage service.")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        # Nothing is wrong with the reference: the account did not answer (refused, timed out, dropped).
        # The contract's table files that under 500 InternalError / ResourceDownload, which clients retry.
        return BlobReferenceError("ResourceDownload", f"The storage service for blob {where} cannot be reached.")
    if isinstance(exc, HttpResponseError):
        return BlobReferenceError("InvalidBlob", f"The storage service refused blob {where} ({exc.status_code}).")
    return BlobReferenceError("InvalidBlob", f"Blob {where} cannot be used ({type(exc).__name__}).")


def _is_path_style(host: str) -> bool:
    """Whether a blob URL names its account in the path, as Azurite does (``http://127.0.0.1:10000/
    devstoreaccount1/c/b``, ``http://azurite:10000/devstoreaccount1/c/b`` in a container network),
    rather than in the host, as Azure does (``https://acct.blob.core.windows.net/c/b``)."""
    labels = host.lower().split(".")
    return not (len(labels) >= 3 and labels[0] and labels[1] == "blob")


def split_relative_location(relative: str) -> tuple[str, str]:
    container, _, blob = relative.strip().lstrip("/").partition("/")
    if not container or not blob:
        raise BlobReferenceError("InvalidBlob", f"RelativeLocation '{relative}' must be 'container/path/to/blob'.")
    return container, blob


def parse_connection_string(connection_string: str) -> tuple[str, str, str]:
    """(account name, account key, account URL) of a storage connection string."""
    # Values may contain "=" (base64 keys): split each item at its first "=" only.
    items = (item.partition("=") for item in connection_string.split(";") if item.strip())
    parts = {key.strip(): value.strip() for key, _, value in items}
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return AZURITE_ACCOUNT, AZURITE_KEY, f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"
    name, key = parts.get("AccountName"), parts.get("AccountKey")
    if not name or not key:
        raise BlobReferenceError(
            "InvalidBlobConnectionString", "The connection string must give AccountName and AccountKey."
        )
    endpoint = parts.get("BlobEndpoint")
    if endpoint:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise BlobReferenceError("InvalidBlobConnectionString", "BlobEndpoint is not an http(s) URL.")
        return name, key, endpoint.rstrip("/")
    protocol = parts.get("DefaultEndpointsProtocol", "https")
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    if protocol not in ("http", "https"):
        raise BlobReferenceError("InvalidBlobConnectionString", "DefaultEndpointsProtocol must be http or https.")
    return name, key, f"{protocol}://{name}.blob.{suffix}"


def _account_of(url: str) -> tuple[str, str]:
    """(account URL without trailing slash, account name) of a base location / blob URL prefix."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlobReferenceError("InvalidBlob", f"'{url}' is not an http(s) storage URL.")
    origin = f"{parts.scheme}://{parts.netloc}"
    if _is_path_style(parts.hostname):
        account = parts.path.strip("/").split("/")[0]
        if not account:
            raise BlobReferenceError("InvalidBlob", f"'{url}' names no storage account.")
        return f"{origin}/{account}", account
    return origin, parts.hostname.split(".")[0]


def blob_from_reference(reference: object, what: str) -> BlobTarget:
    """A BES / classic PATCH blob reference (see module docstring); ``what`` names it in errors."""
    if not isinstance(reference, dict):
        raise BlobReferenceError("RequestBodyInvalid", f"{what} must be an object.")
    relative = reference.get("RelativeLocation")
    connection_string = reference.get("ConnectionString")
    base = reference.get("BaseLocation")
    sas = reference.get("SasBlobToken")
    if not isinstance(relative, str) or not relative.strip():
        raise BlobReferenceError("MissingInputBlobInformation", f"{what} has no RelativeLocation.")
    container, blob = split_relative_location(relative)
    if isinstance(connection_string, str) and connection_string.strip():
        name, key, account_url = parse_connection_string(connection_string)
        return BlobTarget(account_url, name, container, blob, account_key=key)
    if isinstance(base, str) and base.strip() and isinstance(sas, str) and sas.strip():
        account_url, name = _account_of(base)
        return BlobTarget(account_url, name, container, blob, sas_token=sas.strip().lstrip("?"))
    raise BlobReferenceError(
        "MissingInputBlobInformation",
        f"{what} needs either ConnectionString or BaseLocation and SasBlobToken.",
    )


def blob_from_uri(uri: str, account_name: str | None, account_key: str | None) -> BlobTarget:
    """The blob an ARM asset ``locationInfo.uri`` names: with the SAS in its query if it has one,
    otherwise with the web service's storage account (``account_name``, ``account_key``)."""
    parts = urlsplit(uri)
    account_url, name = _account_of(uri)
    rest = parts.path.lstrip("/")
    if _is_path_style(parts.hostname or ""):
        rest = rest.partition("/")[2]
    container, blob = split_relative_location(rest)
    if parts.query:
        return BlobTarget(account_url, name, container, blob, sas_token=parts.query)
    # Storage account names are lowercase; compare as Azure does, ignoring case.
    if (account_name or "").lower() != name.lower():
        raise BlobReferenceError(
            "InvalidBlob",
            f"The blob's account '{name}' is not the web service's storage account '{account_name}' "
            "(properties.storageAccount), and its uri has no SAS.",
        )
    if not account_key:
        raise BlobReferenceError(
            "InvalidBlob",
            f"No key is known for the web service's storage account '{account_name}': send "
            "properties.storageAccount.key, or a uri with a SAS.",
        )
    return BlobTarget(account_url, name, container, blob, account_key=account_key)
