"""Trigger that waits for a Resource Manager long-running operation to end, on the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from azureml_retrain.exceptions import AzureMLRetrainError, AzureMLServiceError
from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook


class ArmOperationTrigger(BaseTrigger):
    """Follow an ARM operation with ``AsyncARMPolling`` until it ends or the absolute deadline passes.

    :param arm_conn_id: ``azureml_resource_manager`` connection.
    :param continuation_token: azure-core's continuation token of the operation (from the PATCH or
        PUT that started it; JSON without credentials).
    :param end_time: absolute deadline (epoch seconds), kept across triggerer restarts.
    :param poll_interval: first wait between polls (s), doubling up to ``max_poll_interval``.
    :param max_poll_interval: the longest wait between polls (s).
    :param status_url: where the operation is watched, for the log (no query string).
    :event terminal: ``{"status": "terminal", "operation": {...}}``: the operation ended; its last
        status body, with ``status`` the terminal state (``Succeeded``, ``Failed``, ``Canceled``).
    :event timeout: ``{"status": "timeout", "message"}``: still running at ``end_time``.
    :event error: ``{"status": "error", "message"}``: a status read failed in a way another poll
        cannot fix.
    """

    def __init__(
        self,
        *,
        arm_conn_id: str,
        continuation_token: str,
        end_time: float,
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
        status_url: str | None = None,
    ) -> None:
        super().__init__()
        self.arm_conn_id = arm_conn_id
        self.continuation_token = continuation_token
        self.end_time = end_time
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.status_url = status_url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "azureml_retrain.triggers.arm_operation.ArmOperationTrigger",
            {
                "arm_conn_id": self.arm_conn_id,
                "continuation_token": self.continuation_token,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "status_url": self.status_url,
            },
        )

    def _hook(self) -> AzureMLResourceManagerHook:
        return AzureMLResourceManagerHook(self.arm_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("Waiting for the web service update %s", self.status_url or "")
        try:
            operation = await self._hook().await_operation(
                self.continuation_token,
                end_time=self.end_time,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
            )
        except AzureMLServiceError as error:
            if error.code == "Timeout":
                message = f"the update did not finish before the deadline ({error.message})"
                yield TriggerEvent({"status": "timeout", "message": message})
            else:
                yield TriggerEvent({"status": "error", "message": str(error)})
            return
        except AzureMLRetrainError as error:
            yield TriggerEvent({"status": "error", "message": str(error)})
            return
        yield TriggerEvent({"status": "terminal", "operation": operation})
