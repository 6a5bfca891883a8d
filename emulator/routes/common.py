"""Helpers shared by the route modules."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from emulator.errors import EmulatorError, api_error, arm_error

if TYPE_CHECKING:
    from emulator.app import Emulator

T = TypeVar("T")


# A Host header value worth echoing into a URL: a name or IP literal, optional port.
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def emulator(request: Request) -> Emulator:
    instance: Emulator = request.app.state.emulator
    return instance


def base_url(request: Request) -> str:
    """Scheme, host and port of what this request reached, for the URLs its answer hands out.

    The scheme is the listener's (https on the TLS one); host and port are the request's ``Host``,
    which is by definition a name that resolved for this client (a container's service name, a
    published port). Without a usable ``Host`` the listener's configured base (``--public-url``,
    ``--tls-hostname``) stands in.
    """
    host = request.headers.get("host", "")
    scheme = request.url.scheme
    if _HOST.fullmatch(host):
        return f"{scheme}://{host}"
    urls = emulator(request).backend.urls
    return urls.tls if scheme == "https" else urls.public


async def json_body(request: Request, *, arm: bool = False) -> Any:
    """The parsed JSON body (None when empty), or the plane's body-invalid error."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        if arm:
            raise arm_error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            ) from None
        raise api_error("RequestBodyInvalid", "The request body is not valid JSON.") from None


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a (blocking) service call off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)


def raise_error(error: EmulatorError) -> None:
    raise error
