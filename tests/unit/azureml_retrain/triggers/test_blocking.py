"""``run_blocking``: the triggers' blocking calls on a pool of their own, in the caller's context."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from azureml_retrain.triggers.blocking import MAX_THREADS, run_blocking, run_status_call

TRIGGER = contextvars.ContextVar("trigger", default="none")


def test_runs_in_the_pool_with_the_callers_context():
    async def main() -> tuple[str, str]:
        TRIGGER.set("trigger 7")
        return await run_blocking(lambda: (threading.current_thread().name, TRIGGER.get()))

    thread, trigger = asyncio.run(main())
    assert thread.startswith("azureml-retrain")
    assert trigger == "trigger 7"  # the triggerer routes a trigger's log lines by its context


def test_more_blocking_calls_wait_at_once_than_the_default_executor_has_threads():
    # The default executor has min(32, CPUs + 4) threads (6 on 2 cores): 12 calls that each wait for
    # all the others could never all be waiting at once there.
    waiting = 12
    assert waiting <= MAX_THREADS
    barrier = threading.Barrier(waiting)

    async def main() -> list[int]:
        return await asyncio.gather(*(run_blocking(barrier.wait, 10) for _ in range(waiting)))

    assert sorted(asyncio.run(main())) == list(range(waiting))


def test_a_status_read_does_not_wait_behind_jobs_being_started() -> None:
    """Every thread of the main pool busy (jobs being started): a status read still runs at once."""
    release = threading.Event()

    async def main() -> str:
        starting = [asyncio.ensure_future(run_blocking(release.wait, 10)) for _ in range(MAX_THREADS + 5)]
        try:
            return await asyncio.wait_for(run_status_call(lambda: threading.current_thread().name), timeout=5)
        finally:
            release.set()
            await asyncio.gather(*starting)

    assert asyncio.run(main()).startswith("azureml-retrain-status")
