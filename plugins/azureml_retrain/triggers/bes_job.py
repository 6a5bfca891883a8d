"""Trigger that waits for a BES job to end, in the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from azureml_retrain.bes import (
    STALE_CLAIM_SECONDS,
    Claim,
    JobClaims,
    JobProgress,
    build_request,
    describe_request,
    ensure_output_containers,
    job_record,
    reattach,
    start_job,
    validate_locations,
)
from azureml_retrain.blobs import BlobLocation
from azureml_retrain.exceptions import AzureMLServiceError, ConfigurationError
from azureml_retrain.hooks.base import RETRYABLE_CLIENT_ERRORS
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook, BesJobStatus
from azureml_retrain.links import LINK_XCOM_KEY, bes_job_link
from azureml_retrain.redaction import redact
from azureml_retrain.storage import StorageAccount
from azureml_retrain.triggers.blocking import run_blocking, run_status_call
from azureml_retrain.triggers.shared import shared_client

# The on_kill work under way, held so that it is not collected while it runs unawaited.
_KILLS: set[asyncio.Future[None]] = set()


def next_poll_interval(current: float, maximum: float) -> float:
    """Poll less often the longer a job runs: doubling per poll, capped.

    Starting small answers a short job (or one BES fails at once) within seconds; doubling keeps a
    long job to a handful of calls: 15 status polls over 10 minutes from 1 s, capped at 60 s."""
    return min(maximum, current * 2)


def is_transient(error: AzureMLServiceError) -> bool:
    """Errors that a later poll may not see again (the hook already retried them)."""
    if error.status is None or error.code == "MalformedResponse":
        return True
    return error.status >= 500 or error.status in RETRYABLE_CLIENT_ERRORS


class BesJobTrigger(BaseTrigger):
    """Poll a BES job until it is Finished, Failed or Cancelled, or the absolute deadline passes.

    :param azureml_conn_id: connection of the endpoint that runs the job.
    :param job_id: the BES job to watch.
    :param end_time: absolute deadline (epoch seconds); a triggerer restart does not reset it. On
        reaching it the job is cancelled and a ``timeout`` event is fired.
    :param poll_interval: first wait between polls, in seconds; grows to ``max_poll_interval``.
    :param max_poll_interval: the longest wait between polls, in seconds.
    :param cancel_on_kill: cancel the job when a user kills the deferred task.
    :param last_status: the status the operator saw before deferring, so only changes are logged.
    :param finish_task: when the job is Finished with every output in ``expected_outputs``, end the
        task here with the operator's result as its XCom (``submitted_at`` gives its duration), so it
        does not go back to a worker. Any other end resumes the task on a worker, which fails,
        retries or starts over as the operator decides.
    :param expected_outputs: the output names a Finished job must report for ``finish_task`` to end
        the task here (SubmitBesJobOperator's ``outputs``).
    :param submitted_at: when the job was submitted (ISO 8601), for the progress log and the
        result's ``duration_seconds``; None: unknown.
    :event task success: with ``finish_task``, a job Finished with every expected output ends the
        task with SubmitBesJobOperator's result as its ``return_value`` XCom (Airflow's TaskSuccessEvent).
    :event terminal: ``{"status": "terminal", "job_id", "job_status", "details", "polls"}``: the job
        ended (Finished, Failed or Cancelled) otherwise.
    :event timeout: ``{"status": "timeout", "job_id", "job_status", "polls"}``: ``end_time`` passed;
        the job was cancelled first.
    :event error: ``{"status": "error", "job_id", "message", "retryable"}``: a status read failed in
        a way another poll cannot fix; ``retryable`` is True for a job that is gone (a retry submits
        a new one), False for a rejected read.
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
        # Time sources, replaceable in tests: a six-hour job is followed in milliseconds.
        self._clock: Callable[[], float] = time.time
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

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
        conn_id = self.azureml_conn_id
        return shared_client((AzureMLWebServiceHook, conn_id), lambda: AzureMLWebServiceHook(conn_id))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        events = self.watch(
            self._hook(),
            self.job_id,
            end_time=self.end_time,
            last_status=self.last_status,
            submitted_at=self.submitted_at,
        )
        async for event in events:
            yield event

    async def watch(
        self,
        hook: AzureMLWebServiceHook,
        job_id: str,
        *,
        end_time: float,
        last_status: str | None,
        submitted_at: str | None,
        xcoms: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[TriggerEvent]:
        """Poll ``job_id`` until it ends or ``end_time`` passes; yield the one event that says how.

        With ``finish_task``, a job Finished with every expected output ends the task here (its
        result, plus ``xcoms``, become the task's XComs); anything else resumes the task on a worker.
        """
        interval = self.poll_interval
        status = last_status
        polls = 0
        progress = JobProgress(
            job_id,
            bes_job_link(hook.api_location, job_id),
            self.log,
            status=last_status,
            submitted_at=submitted_at,
            clock=self._clock,
        )
        if status is not None:
            # The operator read the job's status just before deferring: polling again at once would
            # only repeat its answer, so the schedule starts one interval later.
            await self._sleep(max(0.0, min(interval, end_time - self._clock())))
            interval = next_poll_interval(interval, self.max_poll_interval)
        while True:
            job = None
            try:
                job = await run_status_call(hook.get_job, job_id)
                polls += 1
            except AzureMLServiceError as error:
                if not is_transient(error):
                    # A job gone (404) is worth a retry, which submits a new one; another rejected read is not.
                    retryable = error.status == 404 or not isinstance(error, AirflowFailException)
                    yield TriggerEvent(
                        {"status": "error", "job_id": job_id, "message": str(error), "retryable": retryable}
                    )
                    return
                # Never cancel on a polling hiccup: the job is fine, our view of it is not.
                self.log.warning("BES job %s: status unavailable (%s); will poll again", job_id, error)
            if job is not None and job.status in BesJobStatus.TERMINAL:
                progress.polled(job.status, next_check=None)
                if (
                    self.finish_task
                    and job.status == BesJobStatus.FINISHED
                    and not job.missing_outputs(self.expected_outputs)
                ):
                    self.log.info("BES job %s finished after %d poll(s); the task ends here", job_id, polls)
                    yield TaskSuccessEvent(xcoms={**(xcoms or {}), "return_value": job.result(submitted_at)})
                    return
                yield TriggerEvent(
                    {
                        "status": "terminal",
                        "job_id": job_id,
                        "job_status": job.status,
                        "details": job.details,
                        "polls": polls,
                    }
                )
                return
            if job is not None:
                status = job.status
            remaining = end_time - self._clock()
            if remaining <= 0:
                await self._cancel(hook, job_id, reason="deadline passed")
                yield TriggerEvent({"status": "timeout", "job_id": job_id, "job_status": status, "polls": polls})
                return
            wait = min(interval, remaining)
            if job is not None:
                progress.polled(job.status, next_check=wait)
            await self._sleep(wait)
            interval = next_poll_interval(interval, self.max_poll_interval)

    async def _cancel(self, hook: AzureMLWebServiceHook, job_id: str, *, reason: str) -> None:
        self.log.warning("BES job %s: cancelling (%s)", job_id, reason)
        try:
            await run_status_call(hook.cancel_job, job_id)
        except AzureMLServiceError as error:
            self.log.error("BES job %s: cancel failed: %s", job_id, error)

    async def on_kill(self) -> None:
        """A user marked the deferred task failed/success or cleared it: stop the remote job.

        Airflow 3.3 also calls it on a triggerer that lost this trigger to another while it seemed
        dead (its heartbeat older than ``[triggerer] triggerer_health_check_threshold``, e.g. a long
        pause), as if a user had acted (apache/airflow#73454). The task is then still deferred and
        the new owner follows the job: cancelling it would cost the task a retry and a second job.

        Airflow cancels the trigger again at each exchange with its supervisor (about every second)
        until it has ended, which would cut this short: the work goes on in a task of its own."""
        work = asyncio.ensure_future(self._on_kill())
        _KILLS.add(work)
        work.add_done_callback(_KILLS.discard)
        await asyncio.shield(work)

    async def _on_kill(self) -> None:
        if not (self.cancel_on_kill and self.job_id):
            return
        if await run_blocking(self._task_still_deferred):
            self.log.info(
                "BES job %s: not cancelling it: the task is still deferred (another triggerer took it)", self.job_id
            )
            return
        await self._cancel(self._hook(), self.job_id, reason="task killed by a user")

    def _task_still_deferred(self) -> bool:
        """Whether the task is still deferred (no user acted on it); False when that cannot be known."""
        ti = self.task_instance
        if ti is None:
            return False
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        try:
            count = RuntimeTaskInstance.get_ti_count(
                dag_id=ti.dag_id,
                run_ids=[ti.run_id],
                task_ids=[ti.task_id],
                map_index=ti.map_index,
                states=["deferred"],
            )
        except Exception as error:
            self.log.warning("BES job %s: task state unavailable (%s); taking it as killed", self.job_id, error)
            return False
        return count > 0


class BesSubmitTrigger(BesJobTrigger):
    """Submit, start and follow a BES job, all in the triggerer: SubmitBesJob with ``start_from_trigger``.

    The task never takes a worker slot when its job finishes: the trigger ends it with the operator's
    result (and the ``bes_job_id`` and link XComs). ``inputs``, ``outputs`` and ``global_parameters``
    are the operator's, rendered by the triggerer. The job's record goes into a claim blob beside the
    first output (:class:`~azureml_retrain.bes.JobClaims`): a trigger that runs again reattaches to
    the job (NotStarted: starts it; Running or Finished: follows it), and a job an earlier try left
    Failed or Cancelled is replaced by a new one, as the operator does.
    """

    def __init__(
        self,
        *,
        outputs: Any,
        inputs: Any = None,
        global_parameters: Any = None,
        azureml_conn_id: str,
        wasb_conn_id: str = "wasb_default",
        reference_mode: str = "sas",
        create_output_containers: bool = True,
        job_timeout_seconds: float = 6 * 3600.0,
        poll_interval: float = 1.0,
        max_poll_interval: float = 60.0,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__(
            azureml_conn_id=azureml_conn_id,
            job_id="",
            end_time=0.0,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            cancel_on_kill=cancel_on_kill,
            finish_task=True,
        )
        self.inputs = inputs
        self.outputs = outputs
        self.global_parameters = global_parameters
        self.wasb_conn_id = wasb_conn_id
        self.reference_mode = reference_mode
        self.create_output_containers = create_output_containers
        self.job_timeout_seconds = job_timeout_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "azureml_retrain.triggers.bes_job.BesSubmitTrigger",
            {
                "outputs": self.outputs,
                "inputs": self.inputs,
                "global_parameters": self.global_parameters,
                "azureml_conn_id": self.azureml_conn_id,
                "wasb_conn_id": self.wasb_conn_id,
                "reference_mode": self.reference_mode,
                "create_output_containers": self.create_output_containers,
                "job_timeout_seconds": self.job_timeout_seconds,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        try:
            outputs = validate_locations(self.outputs, "outputs", outputs=True)
            if not outputs:
                raise ConfigurationError("outputs: name at least one web service output and where to write it")
            self.expected_outputs = sorted(outputs)
            record = await run_blocking(self._claimed_job, hook, JobClaims.location(outputs))
        except Exception as error:
            # Before a job runs nothing is lost: the task fails with the reason, and its retry starts over.
            message = redact(f"{type(error).__name__}: {error}")
            self.log.error("BES job not started: %s", message)
            retryable = not isinstance(error, AirflowFailException)  # e.g. a ConfigurationError, a rejected submit
            yield TriggerEvent({"status": "error", "job_id": None, "message": message, "retryable": retryable})
            return
        self.job_id = str(record["job_id"])
        xcoms = {"bes_job_id": self.job_id, LINK_XCOM_KEY: bes_job_link(hook.api_location, self.job_id)}
        events = self.watch(
            hook,
            self.job_id,
            end_time=float(record["deadline"]),
            last_status=None,
            submitted_at=str(record["submitted_at"]),
            xcoms=xcoms,
        )
        async for event in events:
            yield event

    def _try_number(self) -> int | None:
        number = getattr(self.task_instance, "try_number", None)
        return number if isinstance(number, int) else None

    def _claimed_job(self, hook: AzureMLWebServiceHook, location: BlobLocation) -> dict[str, Any]:
        """The job this task instance runs: the claimed one if it can still be used, else a new one."""
        # One storage client for the claim and the request, shared with the process's other triggers:
        # each connection lookup is a round trip to the triggerer's supervisor.
        wasb_conn_id = self.wasb_conn_id
        storage = shared_client((StorageAccount, wasb_conn_id), lambda: StorageAccount(wasb_conn_id))
        if self.create_output_containers:  # the claim blob goes there too
            ensure_output_containers(storage, self.outputs)
        claims = JobClaims(storage)
        try_number = self._try_number()
        give_up_at = time.time() + STALE_CLAIM_SECONDS + 10
        while True:
            claim = claims.read(location)
            record = claim.content if claim.job_id is not None else None
            if record is not None and reattach(hook, record, self.log, keep_failure_of_try=try_number):
                return dict(record)
            if claim.submitting_elsewhere:
                if time.time() > give_up_at:
                    raise TimeoutError(f"{location} stayed claimed by another run of this trigger without a job")
                time.sleep(1.0)
                continue
            taken = claims.write(location, {"claimed_at": time.time(), "try_number": try_number}, replacing=claim)
            if taken is None:
                continue  # another run of this trigger changed the claim: look again
            body = build_request(
                self.inputs,
                self.outputs,
                self.global_parameters,
                storage=storage,
                reference_mode=self.reference_mode,
                job_timeout=timedelta(seconds=self.job_timeout_seconds),
            )
            self.log.info("Submitting BES job: %s", describe_request(body))
            job_id = hook.submit_job(body)
            record = job_record(job_id, job_timeout_seconds=self.job_timeout_seconds, try_number=try_number)
            # Recorded before it starts: a trigger that dies from here on leaves a job the next run finds.
            if claims.write(location, record, replacing=Claim(None, taken)) is None:
                raise RuntimeError(f"BES job {job_id} was submitted, but {location} changed meanwhile: not started")
            start_job(hook, job_id)
            self.log.info("BES job %s submitted and started", job_id)
            return record
