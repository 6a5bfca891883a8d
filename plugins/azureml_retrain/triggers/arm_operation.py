"""Trigger that waits for a Resource Manager async operation (``Azure-AsyncOperation``) to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from azureml_retrain.exceptions import AzureMLServiceError
from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook, ProvisioningState, operation_state
from azureml_retrain.triggers.bes_job import is_transient, next_poll_interval
from azureml_retrain.triggers.blocking import run_blocking


class ArmOperationTrigger(BaseTrigger):
    """Poll an ARM async operation until Succeeded/Failed or the absolute deadline passes.

    :param arm_conn_id: ``azureml_resource_manager`` connection.
    :param operation_url: the ``Azure-AsyncOperation`` URL returned by the PATCH.
    :param end_time: absolute deadline (epoch seconds), kept across triggerer restarts.
    :param poll_interval: first wait between polls (s), doubling up to ``max_poll_interval``.
    """

    def __init__(
        self,
        *,
        arm_conn_id: str,
        operation_url: str,
        end_time: float,
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.arm_conn_id = arm_conn_id
        self.operation_url = operation_url
        self.end_time = end_time
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "azureml_retrain.triggers.arm_operation.ArmOperationTrigger",
            {
                "arm_conn_id": self.arm_conn_id,
                "operation_url": self.operation_url,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
            },
        )

    def _hook(self) -> AzureMLResourceManagerHook:
        return AzureMLResourceManagerHook(self.arm_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        interval = self.poll_interval
        while True:
            try:
                operation = await run_blocking(hook.get_async_operation, self.operation_url)
            except AzureMLServiceError as error:
                if not is_transient(error):
                    yield TriggerEvent({"status": "error", "message": str(error)})
                    return
                self.log.warning("operation status unavailable (%s); will poll again", error)
            else:
                state = operation_state(operation)
                if state in ProvisioningState.TERMINAL:
                    yield TriggerEvent({"status": "terminal", "operation": operation})
                    return
            remaining = self.end_time - time.time()
            if remaining <= 0:
                yield TriggerEvent({"status": "timeout", "message": "the update did not finish before the deadline"})
                return
            await asyncio.sleep(min(interval, remaining))
            interval = next_poll_interval(interval, self.max_poll_interval)
