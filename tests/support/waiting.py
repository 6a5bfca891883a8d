"""Waiting for a state a test cannot hold with the emulator (a process starting, a DAG parsed): poll a
condition until it holds, with a deadline generous enough for a loaded machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float = 120.0,
    interval: float = 0.5,
    abort: Callable[[], str | None] | None = None,
) -> Any:
    """``condition()``'s first truthy value; AssertionError after ``timeout`` seconds, or as soon as
    ``abort()`` says why waiting is pointless (e.g. the process that should get there exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        reason = abort() if abort is not None else None
        if reason:
            raise AssertionError(f"{reason} before {what}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
