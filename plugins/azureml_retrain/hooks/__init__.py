"""Hooks of the azureml_retrain package."""

from __future__ import annotations
