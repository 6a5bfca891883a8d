"""Which failed requests are retried, decided by what the failure was (its exception types, never its text).

Each class of failure is produced for real on loopback (a closed port, a server that resets the
connection once the request is in, a TLS server whose certificate is not trusted) or, where loopback
cannot produce it (a resolver that fails, a connect that times out), by failing the one socket call
underneath urllib3, so requests and urllib3 build their real exception chains.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3.util.connection

from azureml_retrain.exceptions import AzureMLServiceError
from azureml_retrain.hooks.base import ConnectionFailureStage, RetryPolicy, connection_failure_stage
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from emulator.tls import write_self_signed_certificate

KEY = "bes-api-key-0123456789abcdef"
JOB_ID = "0123456789abcdef0123456789abcdef"
RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 34\r\nConnection: close\r\n\r\n"'
    + JOB_ID.encode()
    + b'"'
)


class LoopbackServer:
    """Answers each connection per ``mode``: ``answer`` (a submitted job id) or ``reset`` (RST once
    the whole request is in: the service may have acted on it)."""

    def __init__(self, mode: str, tls_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.mode = mode
        self.tls_context = tls_context
        self.requests_received = 0
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                self._answer(conn)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def _answer(self, conn: socket.socket) -> None:
        if self.tls_context is not None:
            conn = self.tls_context.wrap_socket(conn, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
        )
        while len(body) < length:
            body += conn.recv(65536)
        self.requests_received += 1
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        conn.sendall(RESPONSE)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def servers() -> Iterator[list[LoopbackServer]]:
    started: list[LoopbackServer] = []
    yield started
    for server in started:
        server.close()


def hook_for(url: str, attempts: int = 3, on_sleep=None) -> AzureMLWebServiceHook:  # type: ignore[no-untyped-def]
    return AzureMLWebServiceHook.for_endpoint(
        f"{url}/workspaces/ws1/services/svc1",
        KEY,
        retry_policy=RetryPolicy(max_attempts=attempts, base_delay=0, max_delay=0),
        sleep=on_sleep or (lambda _seconds: None),
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_name_that_does_not_resolve_was_never_sent_so_a_submit_is_retried(monkeypatch, servers):
    server = LoopbackServer("answer")
    servers.append(server)
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(host)
        if host == "bes.example.invalid" and len(lookups) == 1:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    hook = hook_for(f"http://bes.example.invalid:{server.port}")
    assert hook.submit_job({"Inputs": {}}) == JOB_ID
    assert lookups == ["bes.example.invalid", "bes.example.invalid"]
    assert server.requests_received == 1


def test_a_refused_connection_was_never_sent_so_a_submit_is_retried(servers):
    port = closed_port()

    def start_listening(_seconds: float) -> None:
        servers.append(LoopbackServer("answer", port=port))  # the service comes up during the backoff

    hook = hook_for(f"http://127.0.0.1:{port}", on_sleep=start_listening)
    assert hook.submit_job({"Inputs": {}}) == JOB_ID
    assert [s.requests_received for s in servers] == [1]


def test_a_connect_timeout_was_never_sent_so_a_submit_is_retried(monkeypatch, servers):
    server = LoopbackServer("answer")
    servers.append(server)
    real_create_connection = urllib3.util.connection.create_connection
    attempts: list[int] = []

    def create_connection(*args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(1)
        if len(attempts) == 1:
            raise TimeoutError("timed out")  # what connect() raises when the SYN is never answered
        return real_create_connection(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    hook = hook_for(f"http://127.0.0.1:{server.port}")
    assert hook.submit_job({"Inputs": {}}) == JOB_ID
    assert (len(attempts), server.requests_received) == (2, 1)


def test_a_reset_after_the_request_was_written_is_not_retried_for_a_submit(servers):
    server = LoopbackServer("reset")
    servers.append(server)
    with pytest.raises(AzureMLServiceError, match="ConnectionFailed") as error:
        hook_for(f"http://127.0.0.1:{server.port}").submit_job({"Inputs": {}})
    assert "1 attempt(s)" in str(error.value)
    assert server.requests_received == 1  # the service got it once: no second job


def test_a_reset_after_the_request_was_written_is_retried_for_a_status_read(servers):
    server = LoopbackServer("reset")
    servers.append(server)
    with pytest.raises(AzureMLServiceError, match="ConnectionFailed"):
        hook_for(f"http://127.0.0.1:{server.port}", attempts=3).get_job(JOB_ID)
    assert server.requests_received == 3


def test_an_untrusted_certificate_fails_at_once_naming_the_fix(tmp_path: Path, servers):
    cert, key = write_self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = LoopbackServer("answer", tls_context=context)
    servers.append(server)
    with pytest.raises(AzureMLServiceError, match="not trusted: set the connection's CA bundle") as error:
        hook_for(f"https://127.0.0.1:{server.port}", attempts=5).get_job(JOB_ID)
    assert "1 attempt(s)" in str(error.value)
    assert (server.connections, server.requests_received) == (1, 0)


@pytest.mark.parametrize(
    ("failure", "stage"),
    [
        (requests.ConnectionError("Name or service not known"), ConnectionFailureStage.POSSIBLY_SENT),
        (requests.ConnectionError(ConnectionRefusedError(111, "refused")), ConnectionFailureStage.NOT_SENT),
        (requests.ReadTimeout("read timed out"), ConnectionFailureStage.POSSIBLY_SENT),
    ],
)
def test_the_stage_comes_from_the_wrapped_types_not_the_message(failure, stage):
    # A message that merely mentions name resolution says nothing about how far the request got.
    assert connection_failure_stage(failure) is stage


def test_a_ca_bundle_is_trusted_even_where_the_environment_names_another(tmp_path: Path, servers, monkeypatch):
    # requests lets REQUESTS_CA_BUNDLE override a session's CA; the hook's must win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    cert, key = write_self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = LoopbackServer("answer", tls_context=context)
    servers.append(server)
    hook = AzureMLWebServiceHook.for_endpoint(
        f"https://127.0.0.1:{server.port}/workspaces/ws1/services/svc1", KEY, ca_bundle=str(cert)
    )
    assert hook.submit_job({"Inputs": {}}) == JOB_ID
