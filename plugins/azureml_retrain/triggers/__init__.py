"""Triggers: waits that run in the triggerer instead of holding a worker slot.

The classes are imported on first use: importing one trigger module (the blob sensor shares its
arrival logic with its trigger) then does not import the others and their hooks while a DAG parses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azureml_retrain.triggers.arm_operation import ArmOperationTrigger
    from azureml_retrain.triggers.bes_job import BesJobTrigger
    from azureml_retrain.triggers.blob_arrival import BlobArrivalTrigger

__all__ = ["ArmOperationTrigger", "BesJobTrigger", "BlobArrivalTrigger"]

_MODULES = {
    "ArmOperationTrigger": "azureml_retrain.triggers.arm_operation",
    "BesJobTrigger": "azureml_retrain.triggers.bes_job",
    "BlobArrivalTrigger": "azureml_retrain.triggers.blob_arrival",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
