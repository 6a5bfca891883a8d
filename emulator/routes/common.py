"""Helpers shared by the route modules."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from emulator.errors import EmulatorError, api_error, arm_error

if TYPE_CHECKING:
    from emulator.app import Emulator

T = TypeVar("T")


def emulator(request: Request) -> Emulator:
    instance: Emulator = request.app.state.emulator
    return instance


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
