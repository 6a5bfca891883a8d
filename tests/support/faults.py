"""Faults the emulator's admin API cannot inject: an HTTP fault proxy and a private, stoppable Azurite.

``FaultProxy`` forwards HTTP/1.1 to an upstream (Azurite or the emulator) and applies the same steps
as the emulator's fault rules (``status`` with ``Retry-After``, ``delay``, ``drop``, ``malformed``) to
requests matching a regular expression, so blob storage can be faulted like the Azure ML planes. One
difference: its ``delay`` forwards at once and answers late, so the upstream has acted on a request
whose client timed out (the emulator sleeps first, and drops the request if the client has gone).
It can also stop accepting connections for a while: its accept queue is kept full, so a client's
SYN is dropped and ``connect()`` really times out (Linux drops SYNs to a listener whose queue is full).

``PrivateAzurite`` is an Azurite of one test, persisted in a folder, that can be stopped and started
again on the same port with the same data (the session's Azurite is shared and must keep running).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from devtools.services import HOST, azurite_blob_endpoint, azurite_connection_string, azurite_service, stop_process

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
# What a broken gateway answers with a 200 (the emulator's "malformed" body).
MALFORMED_BODY = b"<html><body>Bad Gateway</body></html>"


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    steps: deque[dict[str, Any] | None]


@dataclass
class ProxiedRequest:
    method: str
    target: str
    status: int | None  # None: dropped, or the client had gone
    fault: str | None
    at: float = field(default_factory=time.monotonic)


class FaultProxy:
    """An HTTP/1.1 forwarding proxy to ``127.0.0.1:upstream_port`` with injectable faults.

    With ``tls`` (a certificate and its key, e.g. the emulator's) it speaks https on both sides: it
    serves that certificate to clients and talks TLS to the upstream (trusting the same certificate),
    so a service that names URLs after the request's scheme and host names the proxy's https URLs.
    """

    def __init__(self, upstream_port: int, tls: tuple[Path, Path] | None = None) -> None:
        self.upstream_port = upstream_port
        self.tls = tls
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.log: list[ProxiedRequest] = []
        self._held_until = 0.0
        self.held: tuple[float, float, int] | None = None  # start, end, requests served before
        self.refused: bool | None = None  # after a hold: whether a client's connect met it
        self._refusals_before: int | None = None
        self._refused_by = 0.0
        self._plug: socket.socket | None = None
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        if self._plug is not None:
            self._plug.close()

    # --- faults ------------------------------------------------------------------------------

    def add(self, match: str, *steps: dict[str, Any] | None) -> None:
        """Apply ``steps`` (None = forward normally) one per request whose ``METHOD /path?query`` matches."""
        with self._lock:
            self._rules.append(_Rule(re.compile(match), deque(steps)))

    def refuse_connections_for(self, seconds: float, *, until_refused: float = 120.0) -> None:
        """Accept no connection for ``seconds`` and, beyond that, until a client's connection attempt
        has been refused (at most ``until_refused`` seconds): clients' connects time out, then go
        through again. A client that starts late on a slow machine still meets the fault.

        A dropped SYN shows in the kernel's ``ListenOverflows`` counter; the client's first SYN is
        resent only after a second, so a connect timeout shorter than that has then failed for sure.
        """
        with self._lock:
            now = time.monotonic()
            self._held_until = now + seconds
            self._refusals_before = listen_overflows()
            self._refused_by = now + until_refused
            self.held = (now, self._held_until, len(self.log))
            self._paused.clear()
        # The plug below must stay queued: wait until the acceptor has stopped accepting.
        if not self._paused.wait(5):
            raise RuntimeError("the fault proxy's acceptor did not pause")
        with self._lock:
            # Backlog 0 holds one queued connection; queue our own so every other SYN is dropped.
            self._listener.listen(0)
            self._plug = socket.create_connection((HOST, self.port), timeout=5)

    def pending_steps(self) -> int:
        """Injected steps no request has met yet."""
        with self._lock:
            return sum(len(rule.steps) for rule in self._rules)

    def _holding(self, now: float) -> bool:
        """Whether the hold goes on (called by the acceptor, under the lock)."""
        if now < self._held_until:
            return True
        if self._refusals_before is None:
            return False
        if listen_overflows() > self._refusals_before or now >= self._refused_by:
            self.refused = listen_overflows() > self._refusals_before
            self._refusals_before = None
            assert self.held is not None
            self.held = (self.held[0], now, self.held[2])
            return False
        return True

    def served_since_hold(self) -> tuple[int, int]:
        """Requests answered since the hold began: (during it, after it)."""
        assert self.held is not None
        _, end, before = self.held
        with self._lock:
            since = self.log[before:]
        return sum(1 for r in since if r.at < end), sum(1 for r in since if r.at >= end)

    def _take(self, method: str, target: str) -> dict[str, Any] | None:
        with self._lock:
            for rule in self._rules:
                if rule.steps and rule.pattern.search(f"{method} {target}"):
                    return rule.steps.popleft()
        return None

    def _record(self, method: str, target: str, status: int | None, fault: str | None) -> ProxiedRequest:
        entry = ProxiedRequest(method, target, status, fault)
        with self._lock:
            self.log.append(entry)
        return entry

    # --- serving -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                held = self._holding(time.monotonic())
                if not held and self._plug is not None:
                    self._listener.listen(64)
                    self._plug.close()  # the acceptor below takes it and reads its end-of-stream
                    self._plug = None
            if held:
                self._paused.set()
                time.sleep(0.02)
                continue
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: http.client.HTTPConnection
        if self.tls is None:
            upstream = http.client.HTTPConnection(HOST, self.upstream_port, timeout=60)
        else:
            cert, key = self.tls
            server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_side.load_cert_chain(cert, key)
            try:
                client = server_side.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):
                client.close()
                return
            upstream = http.client.HTTPSConnection(
                HOST, self.upstream_port, timeout=60, context=ssl.create_default_context(cafile=str(cert))
            )
        reader = client.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, target, headers, body = request
                step = self._take(method, target)
                kind = step["kind"] if step else None
                if kind == "drop":
                    self._record(method, target, None, kind)
                    return  # closes the connection without an answer, like the emulator
                # Each answer is logged before it is sent: once the client has it, the log shows it.
                if kind == "status":
                    assert step is not None
                    status = int(step["status"])
                    extra = {"Retry-After": str(step["retry_after_seconds"])} if "retry_after_seconds" in step else {}
                    self._record(method, target, status, kind)
                    _send_error(client, status, extra)
                    continue
                if kind == "malformed":
                    self._record(method, target, 200, kind)
                    _send(client, 200, "OK", [("Content-Type", "application/xml")], MALFORMED_BODY, method)
                    continue
                # Served (a delay answers late: the upstream has acted, the client may have given up).
                try:
                    status, reason, reply_headers, reply_body = _forward(upstream, method, target, headers, body)
                except (OSError, http.client.HTTPException):
                    self._record(method, target, None, "upstream unreachable")
                    return
                if kind == "delay":
                    assert step is not None
                    time.sleep(float(step["delay_seconds"]))
                entry = self._record(method, target, status, kind)
                try:
                    _send(client, status, reason, reply_headers, reply_body, method)
                except OSError:
                    entry.status = None  # the client had gone
                    return
        finally:
            reader.close()
            client.close()
            upstream.close()


def listen_overflows() -> int:
    """SYNs the kernel dropped because a listener's accept queue was full (this network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    raise RuntimeError("the kernel reports no TcpExt ListenOverflows counter")


def _read_request(reader: BinaryIO) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
    try:
        line = reader.readline()
    except OSError:
        return None
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        raw = reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    lengths = [int(v) for k, v in headers if k.lower() == "content-length"]
    if any(k.lower() == "transfer-encoding" for k, _ in headers):
        raise NotImplementedError("chunked request bodies are not supported by the fault proxy")
    body = reader.read(lengths[0]) if lengths else b""
    return method, target, headers, body


def _forward(
    upstream: http.client.HTTPConnection, method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        if name.lower() not in _HOP_BY_HOP:
            upstream.putheader(name, value)
    upstream.endheaders(body or None)
    response = upstream.getresponse()
    data = response.read()
    return response.status, response.reason, [(k, v) for k, v in response.getheaders()], data


def _send(
    client: socket.socket, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, method: str
) -> None:
    lines = [f"HTTP/1.1 {status} {reason}"]
    # HEAD answers keep the upstream's Content-Length (the blob's size) without a body.
    keep_length = method == "HEAD" or status in (204, 304)
    for name, value in headers:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP or (lowered == "content-length" and not keep_length):
            continue
        lines.append(f"{name}: {value}")
    if not keep_length:
        lines.append(f"Content-Length: {len(body)}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    client.sendall(payload + (b"" if keep_length else body))


def _send_error(client: socket.socket, status: int, extra_headers: dict[str, str]) -> None:
    """An error in Azure Storage's shape (error code header and XML body)."""
    code = {429: "TooManyRequests", 500: "InternalError", 503: "ServerBusy"}.get(status, "InternalError")
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>Injected fault: HTTP {status}.</Message></Error>"
    ).encode()
    headers = [("Content-Type", "application/xml"), ("x-ms-error-code", code), *extra_headers.items()]
    reason = http.client.responses.get(status, "Error")
    _send(client, status, reason, headers, body, "GET")


# --- a private Azurite -------------------------------------------------------------------------


class PrivateAzurite:
    """An Azurite on ``port`` persisted in ``location``, that can be down for a while."""

    def __init__(self, port: int, location: Path, log_path: Path) -> None:
        self.port = port
        self.location = location
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._restarter: threading.Thread | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.port)

    @property
    def blob_endpoint(self) -> str:
        return azurite_blob_endpoint(self.port)

    def start(self) -> None:
        if self._process is None:
            self._process = azurite_service(self.port, self.location).start(self.log_path)

    def stop(self) -> None:
        # SIGTERM: Azurite saves its state, as durable storage would have it (SIGKILL loses recent writes).
        if self._process is not None:
            stop_process(self._process.pid)
            self._process.wait(timeout=30)
            self._process = None

    def restart_after(self, seconds: float) -> None:
        """Come back on the same port with the same data after ``seconds``, in the background."""

        def later() -> None:
            time.sleep(seconds)
            self.start()

        self._restarter = threading.Thread(target=later, name="azurite-restart", daemon=True)
        self._restarter.start()

    def wait_until_running(self, timeout: float = 90.0) -> None:
        if self._restarter is not None:
            self._restarter.join(timeout)
            self._restarter = None
        self.start()

    def close(self) -> None:
        """Stop for good (after a pending restart, so none is left running)."""
        if self._restarter is not None:
            self._restarter.join(90)
            self._restarter = None
        self.stop()
