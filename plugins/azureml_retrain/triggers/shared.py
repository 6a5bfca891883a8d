"""Hooks and storage clients shared by the triggers of one triggerer process, for a short while.

Each trigger used to build its own: every build reads its Airflow connection, which in the
triggerer is a round trip to its supervisor (one process answering every trigger, between its
database work), and Airflow registers the connection's secrets again on each read (another round
trip each). 500 jobs starting at once made 1,000 connection reads and about 2,000 registrations. A
shared client is read again after :data:`SHARED_SECONDS`, so a rotated key is picked up within that.
Hooks and Azure storage clients are safe to use from the triggers' threads at once; each call still
names its own job, and the triggerer routes log lines by the calling trigger's context.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

SHARED_SECONDS = 60.0
_clients: dict[Hashable, tuple[float, Any]] = {}
_lock = threading.Lock()


def shared_client(key: Hashable, build: Callable[[], T], *, clock: Callable[[], float] = time.monotonic) -> T:
    """The client for ``key`` (e.g. the hook class and connection id) built by ``build`` at most
    :data:`SHARED_SECONDS` ago, else a new one."""
    now = clock()
    with _lock:
        entry = _clients.get(key)
        if entry is not None and now - entry[0] < SHARED_SECONDS:
            return entry[1]  # type: ignore[no-any-return]
        client = build()  # builds are cheap: connections are read on first use, not here
        _clients[key] = (now, client)
        return client
