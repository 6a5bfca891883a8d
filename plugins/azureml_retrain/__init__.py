"""Retraining building blocks for Azure Machine Learning Studio (classic) web services.

Hooks talk to the services, operators/sensors/triggers orchestrate them. DAG files only wire these
together.
"""

from __future__ import annotations

# The one place the version is written: the distribution (plugins/pyproject.toml) and the provider
# info read it from here.
__version__ = "0.1.0"
