"""The emulator as a real subprocess on free ports (via devtools), plus helpers that speak HTTP to it.

The session-wide instance is reset to its seed before every test, so tests do not see each other's
jobs, endpoints, faults or knobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from support.emulator import DataPlane, RunningEmulator, connection_reference


@pytest.fixture
def churn_training(emulator: RunningEmulator) -> DataPlane:
    endpoint = emulator.classic_endpoint("training")
    return DataPlane(endpoint["api_location"], endpoint["primary_key"])


@pytest.fixture
def churn_scoring(emulator: RunningEmulator) -> DataPlane:
    endpoint = emulator.classic_endpoint("predictive", "retrain01")
    return DataPlane(endpoint["api_location"], endpoint["primary_key"])


@pytest.fixture
def energy_training(emulator: RunningEmulator) -> DataPlane:
    service = emulator.arm_service("training")
    return DataPlane(service["api_location"], service["primary_key"])


@pytest.fixture
def energy_scoring(emulator: RunningEmulator) -> DataPlane:
    service = emulator.arm_service("predictive")
    return DataPlane(service["api_location"], service["primary_key"])


@pytest.fixture
def churn_job(azurite: str, upload: Callable[..., str], container: str) -> Callable[..., dict[str, Any]]:
    """A valid BES body for the churn training service (input uploaded; window/rows adjustable)."""

    def _body(window: int = 0, rows: int = 300, seed: int = 1, tag: str = "", **parameters: str) -> dict[str, Any]:
        relative = upload(f"in/churn-w{window}.csv", dataset="churn", rows=rows, window=window, seed=seed)
        return {
            "Inputs": {"input1": connection_reference(azurite, relative)},
            "Outputs": {
                "output1": connection_reference(azurite, f"{container}/out/model-w{window}{tag}.ilearner"),
                "output2": connection_reference(azurite, f"{container}/out/eval-w{window}{tag}.csv"),
            },
            "GlobalParameters": parameters,
        }

    return _body
