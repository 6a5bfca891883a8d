"""A requests transport adapter that answers from a script: HTTP faked at the transport level."""

from __future__ import annotations

import io
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
from requests.adapters import BaseAdapter


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as-is instead of JSON-encoding ``body``


class FakeTransport(BaseAdapter):
    """Pops one scripted Reply (or raises one scripted exception) per request; records requests."""

    def __init__(self, *script: Reply | Exception) -> None:
        super().__init__()
        self.script: deque[Reply | Exception] = deque(script)
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # type: ignore[override]
        self.requests.append(request)
        if not self.script:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        step = self.script.popleft()
        if isinstance(step, Exception):
            raise step
        response = requests.Response()
        response.status_code = step.status
        response.headers.update(step.headers)
        if step.raw is not None:
            response._content = step.raw
        elif step.body is None:
            response._content = b""
        else:
            response._content = json.dumps(step.body).encode()
            response.headers.setdefault("Content-Type", "application/json")
        response.url = request.url or ""
        response.request = request
        # What azure-core's RequestsTransport reads besides the content (the Resource Manager hook).
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(response._content), headers=dict(response.headers), status=step.status
        )
        response.reason = "scripted"
        return response

    def close(self) -> None:
        pass

    def json_bodies(self) -> list[Any]:
        return [json.loads(r.body) if r.body else None for r in self.requests]


def install(hook: Any, transport: FakeTransport) -> FakeTransport:
    hook.session.mount("https://", transport)
    hook.session.mount("http://", transport)
    return transport


def _session_over(transport: FakeTransport) -> requests.Session:
    session = requests.Session()
    session.mount("https://", transport)
    session.mount("http://", transport)
    return session


class FakeCredential:
    """An azure-identity credential that hands out one fixed token (Resource Manager hooks in unit tests)."""

    token = "aad-token-value-xyz"

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        import time

        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


def install_arm(hook: Any, transport: FakeTransport) -> FakeTransport:
    """Script a Resource Manager hook's azure-core pipeline: its RequestsTransport runs over a session
    whose adapter is ``transport`` (so azure-core's own error mapping and retries still apply)."""
    from azure.core.pipeline.transport import RequestsTransport

    hook._transport = RequestsTransport(session=_session_over(transport), session_owner=False)
    hook.credential = FakeCredential()
    return transport


class FakeAsyncCredential:
    """The async counterpart of :class:`FakeCredential`."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return FakeCredential().get_token(*scopes)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeAsyncCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


def install_async_arm(hook: Any, transport: FakeTransport) -> FakeTransport:
    """Script a Resource Manager hook's async pipeline (azure-core's asyncio transport over requests)."""
    from azure.core.pipeline.transport import AsyncioRequestsTransport

    hook._async_transport = AsyncioRequestsTransport(session=_session_over(transport), session_owner=False)
    hook._async_credential = FakeAsyncCredential()
    return transport


CLASSIC_MANAGEMENT_HOST = "https://management.azureml.net"


def set_classic_management_connection(monkeypatch: Any, host: str = CLASSIC_MANAGEMENT_HOST) -> None:
    """The default classic management connection (workspace ``ws1``, a 24-character token) as its
    environment variable, for hooks whose HTTP the test fakes."""
    connection = {"conn_type": "azureml_classic_management", "host": host, "schema": "ws1", "password": "t" * 24}
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_CLASSIC_MANAGEMENT_DEFAULT", json.dumps(connection))
