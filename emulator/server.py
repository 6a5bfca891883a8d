"""Run the emulator: one HTTP listener (all planes) and one TLS listener (same app, for the authority).

Both uvicorn servers share one event loop in the main thread; SIGTERM/SIGINT stop both, then jobs
and operations are stopped and the state is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import signal
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from emulator.app import Emulator, create_app
from emulator.backend import Backend, Urls
from emulator.catalog import DEFAULT_SEED, load_seed
from emulator.control import Control
from emulator.redaction import configure_logging
from emulator.state import Storage
from emulator.tls import write_self_signed_certificate

log = logging.getLogger("emulator")


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 8765
    tls_port: int = 8766
    data_dir: Path | None = None
    seed: Path = DEFAULT_SEED
    in_memory: bool = False
    public_url: str | None = None
    allow_non_loopback: bool = False
    tls_hostname: str | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _TransportAwareProtocol(H11Protocol):
    """h11 protocol that puts the connection's transport in the ASGI scope.

    Fault injection needs it to drop a connection without answering; ASGI has no other way.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        app = self.app

        async def app_with_transport(scope: Any, receive: Any, send: Any) -> None:
            scope["emulator.transport"] = transport
            await app(scope, receive, send)

        self.app = app_with_transport


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals are handled once for both servers in `serve`.
        yield


async def _serve(servers: list[_Server]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve() for server in servers))


def run(options: Options) -> int:
    if not options.allow_non_loopback and not is_loopback(options.host):
        raise SystemExit(f"refusing to listen on non-loopback host {options.host!r} without --allow-non-loopback")
    seed = load_seed(options.seed)
    control = Control()
    urls = service_urls(options)
    scratch = None
    if options.data_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="azureml-emulator-"))
    base_dir = options.data_dir or scratch
    assert base_dir is not None
    storage = Storage(None if options.in_memory or options.data_dir is None else options.data_dir)
    backend = Backend(seed, storage, control, urls)
    configure_logging(backend.secrets)
    cert_path, key_path = write_self_signed_certificate(
        base_dir / "tls", [options.tls_hostname] if options.tls_hostname else []
    )
    log.info("TLS certificate: %s (trust it with REQUESTS_CA_BUNDLE)", cert_path)
    backend.boot()
    emulator = Emulator.build(backend, cert_path, options.data_dir)
    app = create_app(emulator)
    common: dict[str, Any] = {
        "host": options.host,
        "http": _TransportAwareProtocol,
        "loop": "asyncio",
        "log_config": None,
        "access_log": False,
        "lifespan": "off",
        "timeout_graceful_shutdown": 3,
        "server_header": False,
    }
    servers = [
        _Server(uvicorn.Config(app, port=options.port, **common)),
        _Server(uvicorn.Config(app, port=options.tls_port, ssl_certfile=cert_path, ssl_keyfile=key_path, **common)),
    ]
    log.info(
        "Azure ML classic emulator: %s (TLS authority %s), state %s",
        urls.public,
        urls.tls,
        storage.directory or "in memory",
    )
    try:
        asyncio.run(_serve(servers))
    finally:
        emulator.shutdown()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("stopped")
    return 0


def service_urls(options: Options) -> Urls:
    """The base URLs the emulator hands out: clients elsewhere (another container) need a name
    that resolves for them, not the listen address."""
    public = (options.public_url or f"http://{_url_host(options.host)}:{options.port}").rstrip("/")
    tls_host = options.tls_hostname or _url_host(options.host)
    return Urls(public=public, tls=f"https://{tls_host}:{options.tls_port}")


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 (a comparison, not a bind)
