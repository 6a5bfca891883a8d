"""Progress lines of a followed BES job: bounded both ways, checked on a simulated clock (no waiting)."""

from __future__ import annotations

from typing import Any

from azureml_retrain.bes import PROGRESS_EVERY_SECONDS, JobProgress
from azureml_retrain.triggers.bes_job import next_poll_interval

JOB = "0123456789abcdef0123456789abcdef"
LINK = "https://services.azureml.net/"
SIX_HOURS = 6 * 3600.0


class RecordingLog:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.lines: list[tuple[float, str]] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append((self.clock[0], message % args))


def follow(statuses: list[str], *, first: float = 1.0, cap: float = 60.0) -> tuple[RecordingLog, int]:
    """Poll a job on the real schedule (doubling, capped) over a simulated clock: the log and how many
    polls were made. ``statuses`` holds what each poll sees; the last one is terminal."""
    now = [1_000_000.0]
    log = RecordingLog(now)
    progress = JobProgress(JOB, LINK, log, status="NotStarted", submitted_at=None, clock=lambda: now[0])
    interval = first
    for number, status in enumerate(statuses):
        last = number == len(statuses) - 1
        progress.polled(status, next_check=None if last else interval)
        if not last:
            now[0] += interval
            interval = next_poll_interval(interval, cap)
    return log, len(statuses)


def schedule_over(seconds: float, first: float = 1.0, cap: float = 60.0) -> int:
    """How many polls the schedule makes in ``seconds``."""
    elapsed, interval, polls = 0.0, first, 1
    while elapsed + interval <= seconds:
        elapsed += interval
        interval = next_poll_interval(interval, cap)
        polls += 1
    return polls


def test_a_six_hour_job_is_never_silent_for_more_than_five_minutes_and_logs_at_most_once_per_poll() -> None:
    polls = schedule_over(SIX_HOURS)
    log, made = follow(["Running"] * (polls - 1) + ["Finished"])
    times = [at for at, _ in log.lines]
    started = 1_000_000.0
    gaps = [b - a for a, b in zip([started, *times], times, strict=False)]
    assert max(gaps) <= PROGRESS_EVERY_SECONDS
    assert len(log.lines) <= made
    # Bounded from above too: about one line every 5 minutes, not one per poll (~360 polls).
    assert len(log.lines) <= SIX_HOURS / PROGRESS_EVERY_SECONDS * 1.5 + 2
    assert started + SIX_HOURS - times[-1] <= 60  # the end is logged at the poll that sees it


def test_every_state_change_is_logged_with_its_state_elapsed_time_next_check_and_link() -> None:
    log, _ = follow(["NotStarted", "Running", "Running", "Failed"])
    lines = [line for _, line in log.lines]
    assert lines == [
        f"BES job {JOB}: NotStarted -> Running, 1s since the watch began; next check in 2s; see {LINK}",
        f"BES job {JOB}: Running -> Failed, 7s since the watch began; no further checks; see {LINK}",
    ]


def test_elapsed_time_counts_from_the_submission() -> None:
    now = [1_764_237_600.0]  # 2025-11-27T10:00:00Z
    log = RecordingLog(now)
    progress = JobProgress(
        JOB, LINK, log, status="Running", submitted_at="2025-11-27T08:58:55+00:00", clock=lambda: now[0]
    )
    assert progress.polled("Running", next_check=60) is False  # just began: nothing to say yet
    now[0] += 250
    assert progress.polled("Running", next_check=60) is True  # the next check would come after 5 minutes
    assert log.lines[-1][1] == (
        f"BES job {JOB}: still Running, 1h 05m 15s since submission; next check in 1m 00s; see {LINK}"
    )
