"""Triggers: waits that run in the triggerer instead of holding a worker slot."""

from __future__ import annotations

from azureml_retrain.triggers.arm_operation import ArmOperationTrigger
from azureml_retrain.triggers.bes_job import BesJobTrigger
from azureml_retrain.triggers.blob_arrival import BlobArrivalTrigger

__all__ = ["ArmOperationTrigger", "BesJobTrigger", "BlobArrivalTrigger"]
