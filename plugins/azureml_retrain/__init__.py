"""Retraining building blocks for Azure Machine Learning Studio (classic) web services.

Hooks talk to the services, operators/sensors/triggers orchestrate them. DAG files only wire these
together.
"""

from __future__ import annotations
