"""Sensors: wait for training data to land, complete, before a retraining run trains on it."""

from __future__ import annotations

from azureml_retrain.sensors.blob_arrival import BlobArrivalSensor

__all__ = ["BlobArrivalSensor"]
