"""A requests transport adapter that answers from a script: HTTP faked at the transport level."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import requests
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
