"""The fan-out smoke row's count: how many endpoint requests the emulator served at once, from its
request log (when each was answered, and how long it took)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devtools.bench.scale import most_in_flight

T0 = datetime(2026, 12, 8, tzinfo=UTC)


def logged(start_ms: int, duration_ms: int) -> dict[str, object]:
    answered = T0 + timedelta(milliseconds=start_ms + duration_ms)
    return {"time": answered.isoformat(), "duration_ms": float(duration_ms)}


def test_requests_one_after_another_are_one_at_a_time():
    # Each starts when the one before is answered (or a little before its answer is logged): a task
    # waiting its requests out in turn.
    assert most_in_flight([logged(i * 200, 200) for i in range(5)]) == 1
    assert most_in_flight([logged(i * 195, 200) for i in range(5)]) == 1


def test_overlapping_requests_are_counted_at_their_busiest_moment():
    requests = [logged(0, 200), logged(10, 200), logged(20, 200), logged(150, 200), logged(300, 200)]
    # At 150 ms the first four are all being served; by 300 ms the first three have been answered.
    assert most_in_flight(requests) == 4


def test_no_requests_none_in_flight():
    assert most_in_flight([]) == 0


def test_an_entry_without_its_time_is_an_error_not_a_request_at_the_epoch():
    with pytest.raises(ValueError, match="without its time"):
        most_in_flight([logged(0, 200), {"time": None, "duration_ms": 200.0}])
