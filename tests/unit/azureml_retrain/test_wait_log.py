"""WaitLog: which checks of a wait get a log line; and azure-core's HTTP logger, quieted when a client
is built (never at import)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from azureml_retrain.http_logging import HTTP_LOGGER, LEVEL_VARIABLE
from azureml_retrain.triggers.blob_arrival import HEARTBEAT_SECONDS, WaitLog, format_duration
from support.log_volume import SimulatedClock

START = 1_800_000_000.0
IMPORTED = (
    "azureml_retrain.storage",
    "azureml_retrain.triggers.blob_arrival",
    "azureml_retrain.sensors.blob_arrival",
    "azureml_retrain.ledger",
    "azureml_retrain.factory",
    "azureml_retrain.operators.evaluate",
    "azureml_retrain.operators.promote",
)


def wait_log(clock: SimulatedClock) -> WaitLog:
    return WaitLog(waiting_since=clock.now, deadline=clock.now + 12 * 3600, clock=clock)


def test_first_check_and_each_change_get_a_line_repeats_do_not():
    clock = SimulatedClock(START)
    log = wait_log(clock)
    verdicts = []
    for check, seen in enumerate(["3 blobs", "3 blobs", "3 blobs", "4 blobs", "4 blobs", "3 blobs"], start=1):
        verdicts.append(log.note(check, seen))
        clock.advance(30)
    assert verdicts == [WaitLog.CHANGE, None, None, WaitLog.CHANGE, None, WaitLog.CHANGE]
    assert log.seen_since_check == 6


def test_heartbeat_comes_after_the_interval_without_a_change_and_not_before():
    clock = SimulatedClock(START)
    log = wait_log(clock)
    assert log.note(1, "3 blobs") == WaitLog.CHANGE
    clock.advance(HEARTBEAT_SECONDS - 1)
    assert log.note(2, "3 blobs") is None
    clock.advance(1)
    assert log.note(3, "3 blobs") == WaitLog.HEARTBEAT
    clock.advance(HEARTBEAT_SECONDS - 1)
    assert log.note(4, "3 blobs") is None  # counted from the heartbeat, not from the change
    clock.advance(1)
    assert log.note(5, "3 blobs") == WaitLog.HEARTBEAT


def test_heartbeat_line_says_what_is_seen_and_how_long_of_how_long():
    clock = SimulatedClock(START)
    log = WaitLog(waiting_since=START - 60, deadline=START + 12 * 3600 - 60, clock=clock)
    log.note(7, "x")
    clock.advance(41 * 60)
    assert log.still_waiting("3 blob(s), 24 bytes, marker absent") == (
        "still waiting: 3 blob(s), 24 bytes, marker absent, 42 min of 12 h; unchanged since check #7"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (60, "1 min"), (2520, "42 min"), (3600, "1 h"), (5400, "1 h 30 min"), (43200, "12 h")],
)
def test_format_duration(seconds: float, text: str):
    assert format_duration(seconds) == text


def test_importing_the_storage_modules_leaves_azure_logging_alone():
    # A fresh interpreter: DAG files import these modules, and importing must not change logging.
    code = (
        "import logging, importlib\n"
        f"for name in {IMPORTED!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(logging.getLogger({HTTP_LOGGER!r}).level)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == str(logging.NOTSET)


@pytest.fixture
def http_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """azure-core's HTTP logger, unset (as in a process where no sync hook was built), restored after."""
    monkeypatch.delenv(LEVEL_VARIABLE, raising=False)
    logger = logging.getLogger(HTTP_LOGGER)
    saved = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(saved)


def test_building_the_async_hook_quiets_azure_http_logging(http_logger: logging.Logger):
    from azureml_retrain.storage import wasb_async_hook

    wasb_async_hook("wasb_default")
    assert http_logger.level == logging.WARNING


@pytest.mark.parametrize(("value", "level"), [("INFO", logging.INFO), ("not-a-level", logging.WARNING)])
def test_the_providers_opt_in_variable_is_honoured(
    http_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, value: str, level: int
):
    from azureml_retrain.storage import wasb_async_hook

    monkeypatch.setenv(LEVEL_VARIABLE, value)
    wasb_async_hook("wasb_default")
    assert http_logger.level == level
