"""Trigger that waits for a BES job to end, in the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from azureml_retrain.exceptions import AzureMLServiceError
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook, BesJobStatus


def next_poll_interval(current: float, maximum: float) -> float:
    """Poll less often the longer a job runs: doubling per poll, capped.

    Starting small answers a short job (or one BES fails at once) within seconds; doubling keeps a
    long job to a handful of calls: 15 status polls over 10 minutes from 1 s, capped at 60 s."""
    return min(maximum, current * 2)


def is_transient(error: AzureMLServiceError) -> bool:
    """Errors that a later poll may not see again (the hook already retried them)."""
    return error.status is None or error.status >= 500 or error.status == 429 or error.code == "MalformedResponse"


class BesJobTrigger(BaseTrigger):
    """Poll a BES job until it is Finished, Failed or Cancelled, or the absolute deadline passes.

    :param azureml_conn_id: connection of the endpoint that runs the job.
    :param job_id: the BES job to watch.
    :param end_time: absolute deadline (epoch seconds); a triggerer restart does not reset it. On
        reaching it the job is cancelled and a ``timeout`` event is fired.
    :param poll_interval: first wait between polls, in seconds; grows to ``max_poll_interval``.
    :param cancel_on_kill: cancel the job when a user kills the deferred task.
    :param last_status: the status the operator saw before deferring, so only changes are logged.
    :param finish_task: when the job is Finished with every output in ``expected_outputs``, end the
        task here with the operator's result as its XCom (``submitted_at`` gives its duration), so it
        does not go back to a worker. Any other end resumes the task on a worker, which fails,
        retries or starts over as the operator decides.
    """

    def __init__(
        self,
        *,
        azureml_conn_id: str,
        job_id: str,
        end_time: float,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        cancel_on_kill: bool = True,
        last_status: str | None = None,
        finish_task: bool = False,
        expected_outputs: Sequence[str] = (),
        submitted_at: str | None = None,
    ) -> None:
        super().__init__()
        self.azureml_conn_id = azureml_conn_id
        self.job_id = job_id
        self.end_time = end_time
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill
        self.last_status = last_status
        self.finish_task = finish_task
        self.expected_outputs = list(expected_outputs)
        self.submitted_at = submitted_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "azureml_retrain.triggers.bes_job.BesJobTrigger",
            {
                "azureml_conn_id": self.azureml_conn_id,
                "job_id": self.job_id,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "last_status": self.last_status,
                "finish_task": self.finish_task,
                "expected_outputs": self.expected_outputs,
                "submitted_at": self.submitted_at,
            },
        )

    def _hook(self) -> AzureMLWebServiceHook:
        return AzureMLWebServiceHook(self.azureml_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        interval = self.poll_interval
        status = self.last_status
        polls = 0
        if status is not None:
            # The operator read the job's status just before deferring: polling again at once would
            # only repeat its answer, so the schedule starts one interval later.
            await asyncio.sleep(max(0.0, min(interval, self.end_time - time.time())))
            interval = next_poll_interval(interval, self.max_poll_interval)
        while True:
            try:
                job = await asyncio.to_thread(hook.get_job, self.job_id)
                polls += 1
            except AzureMLServiceError as error:
                if not is_transient(error):
                    yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": str(error)})
                    return
                # Never cancel on a polling hiccup: the job is fine, our view of it is not.
                self.log.warning("BES job %s: status unavailable (%s); will poll again", self.job_id, error)
            else:
                if job.status != status:
                    self.log.info("BES job %s: %s -> %s", self.job_id, status or "?", job.status)
                    status = job.status
                if (
                    self.finish_task
                    and job.status == BesJobStatus.FINISHED
                    and not job.missing_outputs(self.expected_outputs)
                ):
                    result = job.result(self.submitted_at)
                    self.log.info("BES job %s finished after %d poll(s); the task ends here", self.job_id, polls)
                    yield TaskSuccessEvent(xcoms={"return_value": result})
                    return
                if job.status in BesJobStatus.TERMINAL:
                    yield TriggerEvent(
                        {
                            "status": "terminal",
                            "job_id": self.job_id,
                            "job_status": job.status,
                            "details": job.details,
                            "polls": polls,
                        }
                    )
                    return
            remaining = self.end_time - time.time()
            if remaining <= 0:
                await self._cancel(hook, reason="deadline passed")
                yield TriggerEvent({"status": "timeout", "job_id": self.job_id, "job_status": status, "polls": polls})
                return
            await asyncio.sleep(min(interval, remaining))
            interval = next_poll_interval(interval, self.max_poll_interval)

    async def _cancel(self, hook: AzureMLWebServiceHook, *, reason: str) -> None:
        self.log.warning("BES job %s: cancelling (%s)", self.job_id, reason)
        try:
            await asyncio.to_thread(hook.cancel_job, self.job_id)
        except AzureMLServiceError as error:
            self.log.error("BES job %s: cancel failed: %s", self.job_id, error)

    async def on_kill(self) -> None:
        """A user marked the deferred task failed/success or cleared it: stop the remote job."""
        if self.cancel_on_kill:
            await self._cancel(self._hook(), reason="task killed by a user")
