"""Keep azure-core's per-request HTTP logging out of task and trigger logs.

azure-core's ``HttpLoggingPolicy`` logs every request and response (headers redacted, about 800 bytes
a round trip) at INFO, which Airflow's logging lets through: a sensor waiting 12 hours would write tens
of megabytes of them. The Azure provider's sync ``WasbHook`` raises that logger to WARNING when it is
built, its ``WasbAsyncHook`` (the triggerer's) does not; so every client the project builds calls
:func:`quiet_azure_http_logging` first. It is called when a client is built, never at import: DAG files
import these modules, and importing must not change a process's logging.
"""

from __future__ import annotations

import logging
import os

HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
# The Azure provider's opt-in to see the requests again (e.g. AZURE_HTTP_LOGGING_LEVEL=INFO), honoured
# the same way here so that one setting governs the sync and async clients alike.
LEVEL_VARIABLE = "AZURE_HTTP_LOGGING_LEVEL"


def quiet_azure_http_logging() -> None:
    """Set azure-core's HTTP logger to WARNING (or to ``AZURE_HTTP_LOGGING_LEVEL`` when that is set)."""
    logger = logging.getLogger(HTTP_LOGGER)
    try:
        logger.setLevel(os.environ.get(LEVEL_VARIABLE) or logging.WARNING)
    except ValueError:  # not a level name: the quiet default rather than a failing task
        logger.setLevel(logging.WARNING)
