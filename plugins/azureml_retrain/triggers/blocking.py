"""Blocking calls of the triggers (HTTP through the hooks, storage, connection lookups), off the event loop.

The event loop's default executor has ``min(32, CPUs + 4)`` threads: 6 on a 2-core triggerer. Our
blocking calls mostly wait (on the service, and on the triggerer's supervisor, which answers every
connection lookup and secret registration), so 100 jobs starting at once would queue behind those
6. They get a pool of their own, shared by every trigger of the process: 100 jobs then start within
13-14 s instead of 18-22 s (the bench's worker-slots measurement, three runs of each).

Reads of a running job's status (and cancels) have a small pool apart (:func:`run_status_call`):
starting a job is a long chain of calls (claim, SAS tokens, submit, start), and with hundreds
starting at once a status read queued behind them in one FIFO pool. Jobs that had ended were then
seen minutes late (500 jobs: none of the first 270 started was seen to end within 2.5 minutes).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

MAX_THREADS = 32
# One status read is one short GET: a few threads keep up with hundreds of jobs on their schedule.
STATUS_THREADS = 8
# Threads start on first use (not at import, which may precede a fork).
_POOL = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="azureml-retrain")
_STATUS_POOL = ThreadPoolExecutor(max_workers=STATUS_THREADS, thread_name_prefix="azureml-retrain-status")


async def _run_in(pool: ThreadPoolExecutor, func: Callable[..., R], *args: object, **kwargs: object) -> R:
    # A copy of the caller's context: the triggerer routes a trigger's log lines by it.
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await loop.run_in_executor(pool, call)


async def run_blocking(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``asyncio.to_thread`` on the triggers' own pool, in a copy of the caller's context."""
    return await _run_in(_POOL, func, *args, **kwargs)


async def run_status_call(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """:func:`run_blocking` for reading (or cancelling) a running job: on its own pool, so it never
    waits behind other jobs being started."""
    return await _run_in(_STATUS_POOL, func, *args, **kwargs)
