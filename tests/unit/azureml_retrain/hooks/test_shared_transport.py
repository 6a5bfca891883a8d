"""Hooks share the process's connection pools: a triggerer following many jobs must not hold a pool,
an open connection and a TLS context per job (issue 20's triggerer memory)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import urllib3

from azureml_retrain.hooks import base
from azureml_retrain.hooks.base import RetryPolicy
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook


class _JobStatus(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the services answer
    connections: ClassVar[set[tuple[str, int]]] = set()
    authorizations: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).connections.add(self.client_address)
        type(self).authorizations.append(self.headers["Authorization"])
        body = json.dumps({"StatusCode": "Running", "Results": None, "Details": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    _JobStatus.connections = set()
    _JobStatus.authorizations = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JobStatus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/workspaces/ws/services/svc"
    finally:
        server.shutdown()
        server.server_close()


def test_many_hooks_share_one_pool_and_keep_their_own_keys(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[object] = []
    original = urllib3.HTTPConnectionPool.__init__

    def counting_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        pools.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "__init__", counting_init)
    monkeypatch.setattr(base, "_shared_adapters", {})
    hooks = [
        AzureMLWebServiceHook.for_endpoint(service, f"key-{i:04d}-0123456789", retry_policy=RetryPolicy(max_attempts=1))
        for i in range(100)
    ]
    # Four rounds of polls from 8 threads, as the triggers' pool runs them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(4):
            statuses = list(pool.map(lambda hook: hook.get_job("job1").status, hooks))
            assert statuses == ["Running"] * 100
    assert len(pools) == 1  # a pool per hook before: 100
    assert len(_JobStatus.connections) <= 8  # at most one connection per thread, reused across hooks
    assert sorted(set(_JobStatus.authorizations)) == sorted(f"Bearer key-{i:04d}-0123456789" for i in range(100))


def test_a_hook_can_still_mount_its_own_transport() -> None:
    """Tests (and a user's get_conn()) may mount a transport on one hook's session: the others keep theirs."""
    from requests.adapters import BaseAdapter

    first = AzureMLWebServiceHook.for_endpoint("https://h/workspaces/w/services/s", "k" * 20)
    second = AzureMLWebServiceHook.for_endpoint("https://h/workspaces/w/services/s", "k" * 20)
    first.session.mount("https://", BaseAdapter())
    assert second.session.get_adapter("https://h/") is base.shared_adapter()
    assert first.session.get_adapter("https://h/") is not base.shared_adapter()
