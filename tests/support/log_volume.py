"""Measure what a wait writes to its log, as the triggerer (or a worker) would write it, in simulated time."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from azureml_retrain.http_logging import HTTP_LOGGER, LEVEL_VARIABLE
from azureml_retrain.triggers.blob_arrival import Clock

# Airflow writes one JSON object per line; this timestamp has the width of the ones it writes.
TIMESTAMP = "2026-11-27T12:00:00.000000Z"


class SimulatedClock(Clock):
    """Time that passes only when the code under test sleeps: hours of polling run in moments.

    ``at(seconds, action)`` runs ``action`` once, at the first sleep that reaches that much simulated time.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self.now = start
        self._actions: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [a for a in self._actions if self.start + a[0] <= self.now]
        self._actions = [a for a in self._actions if a not in due]
        for _, action in due:
            action()

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)  # still yield to the event loop, as a real sleep would

    def at(self, seconds: float, action: Callable[[], None]) -> None:
        self._actions.append((seconds, action))

    @property
    def hours(self) -> float:
        return (self.now - self.start) / 3600


@dataclass
class CapturedLog:
    """The lines a wait wrote, each as the JSON line Airflow would store (order: stdlib records, then
    the operator's own events)."""

    operator_logger: str
    stdlib: list[dict[str, str]] = field(default_factory=list)
    structlog_events: list[dict[str, object]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, str]]:
        own = [
            {"level": str(e.get("log_level")), "logger": self.operator_logger, "event": str(e.get("event"))}
            for e in self.structlog_events
        ]
        return [{"timestamp": TIMESTAMP, **r} for r in [*self.stdlib, *own]]

    @property
    def bytes(self) -> int:
        return sum(len(json.dumps(record).encode()) + 1 for record in self.records)

    def events(self, logger_prefix: str = "") -> list[str]:
        return [r["event"] for r in self.records if r["logger"].startswith(logger_prefix)]


class _Collect(logging.Handler):
    def __init__(self, captured: CapturedLog) -> None:
        super().__init__(logging.NOTSET)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        self.captured.stdlib.append(
            {"level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
        )


@contextmanager
def captured_log(operator_logger: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedLog]:
    """Every line written while the block runs: the structlog events of Airflow's ``self.log`` (named
    ``operator_logger``) and the stdlib records (azure.* and the rest) that pass their loggers' effective
    levels under Airflow's INFO root.

    azure-core's HTTP logger starts unset, as in a triggerer where no sync hook was ever built, and the
    provider's opt-in variable is cleared: whatever quiets it must be the code under test.
    """
    monkeypatch.delenv(LEVEL_VARIABLE, raising=False)
    http_logger = logging.getLogger(HTTP_LOGGER)
    root = logging.getLogger()
    saved = (http_logger.level, root.level)
    http_logger.setLevel(logging.NOTSET)
    root.setLevel(logging.INFO)
    handler = _Collect(CapturedLog(operator_logger))
    root.addHandler(handler)
    try:
        with capture_logs() as events:
            handler.captured.structlog_events = events
            yield handler.captured
    finally:
        root.removeHandler(handler)
        http_logger.setLevel(saved[0])
        root.setLevel(saved[1])
