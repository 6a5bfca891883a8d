"""Fixtures of the reliability tests that run a real Airflow against the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.emulator import RunningEmulator
from support.held_jobs import reset_emulator


@pytest.fixture
def fresh_emulator(emulator_session: RunningEmulator) -> Iterator[RunningEmulator]:
    """The emulator with no faults or knobs; the request log cleared (jobs of earlier runs stay)."""
    reset_emulator(emulator_session)
    yield emulator_session
    reset_emulator(emulator_session)
