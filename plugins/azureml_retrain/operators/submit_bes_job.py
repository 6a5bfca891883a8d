"""SubmitBesJobOperator: run a training experiment through the Batch Execution Service (BES)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, Context, conf

from azureml_retrain.bes import (
    JobProgress,
    build_request,
    describe_request,
    ensure_output_containers,
    job_failure,
    job_record,
    job_status,
    reattach,
    start_job,
)
from azureml_retrain.exceptions import AzureMLServiceError, BesJobFailedError, BesJobRejectedError, ConfigurationError
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook, BesJob, BesJobStatus
from azureml_retrain.lazy import cached_property
from azureml_retrain.lineage import BES_JOB_FACET
from azureml_retrain.links import LINK_XCOM_KEY, AzureMLLink, bes_job_link
from azureml_retrain.storage import StorageAccount

if TYPE_CHECKING:
    from azureml_retrain.lineage import Lineage

# The triggers module (and Airflow's trigger base) is imported where a trigger is made or its poll
# schedule is used, not when a DAG file that uses this operator is parsed.

# Key in the task-instance state store (it survives retries, unlike XCom).
JOB_STATE_KEY = "bes_job"
# The payload of a TaskSuccessEvent, which is all a resumed task sees of it.
ENDED_IN_TRIGGERER = "success"


class SubmitBesJobOperator(BaseOperator):
    """Submit a BES job to a training web service, start it, and wait until it ends.

    Inputs and outputs are blob locations (``"container/path.csv"`` or ``{"container", "blob_name"}``)
    in the storage account of ``wasb_conn_id``; the operator turns them into the credentials BES
    needs at submit time. The job id is kept in the task-instance state store before the job is
    started, so a retry or a re-run of the same task instance reattaches to the job instead of
    starting another: NotStarted → start it, Running → wait, Finished → reuse its results,
    Failed/Cancelled → submit a new job. A task *cleared* since its job was submitted starts over
    with a new job, as a user clearing it expects; a job still running from before the clear is
    cancelled first (unless ``cancel_on_kill=False``), as the cleared try's kill would do.

    Fails fast when a retry cannot help: a job whose ``Details`` blame its input (a Studio module
    error numbered below 1000, e.g. "Error 0018", or class ``ModuleExecutionError`` /
    ``BadUserArgument``) fails the task without Airflow's retries (:class:`BesJobInputError`, naming
    the module, the error and the job), as does a request the service rejects (a 4xx other than 408
    and 429). Other failures (plain-text ``Details``, library or internal errors, a cancelled job)
    are retried with a new job. While it waits, the task logs the job's state, time since submission,
    next check and link at every state change and at least every 5 minutes (at most once per poll).

    :param inputs: web service input name → blob location (datasets: .csv, .tsv, .arff). (templated)
    :param outputs: web service output name → blob location (.ilearner for models). Names are
        case-sensitive and must match the experiment's Web Service Outputs. (templated)
    :param global_parameters: the experiment's web service parameters (names case-sensitive). (templated)
    :param azureml_conn_id: ``azureml_web_service`` connection of the training endpoint (Host: its API
        location; Password: its API key). (templated)
    :param wasb_conn_id: storage connection holding the inputs and outputs. (templated)
    :param reference_mode: ``"sas"`` (default: short-lived tokens, read-only for an input's blob,
        create+write for the outputs' container, or for an output's own blob when an input shares
        its container) or ``"connection_string"`` (the account key travels to the service). (templated)
    :param create_output_containers: create the outputs' containers when missing, before submitting
        (BES writes into existing containers only: a missing one fails the job with a "blob not
        found"). Turn off for a credential that may not create containers.
    :param deferrable: wait in the triggerer instead of holding a worker slot (default: Airflow's
        ``[operators] default_deferrable``).
    :param defer_after: seconds a deferrable task follows its job in the worker before deferring, on
        the same polling schedule: a job that ends that soon spares the deferral's round trip through
        the triggerer (about 2 s). 0 defers at once.
    :param poll_interval: first wait between status polls (s); doubles up to ``max_poll_interval``.
        A deferred job that finishes ends the task in the triggerer (no second worker run).
    :param max_poll_interval: the longest wait between status polls (s), however long the job runs.
    :param job_timeout: the job is cancelled and the task fails if it has not ended by then,
        measured from submission (a reattaching retry keeps the original deadline).
    :param cancel_on_kill: cancel the remote job when the task is killed or marked failed.
    :param start_from_trigger: submit, start and follow the job in the triggerer, so a task whose job
        finishes never takes a worker slot (for fanning out many jobs). Inputs and outputs must then
        be values or Jinja templates, not another task's output; the job's record goes into a claim
        blob ``<first output>.bes-job.json`` instead of the state store (triggers cannot reach it).
        Not for mapped tasks (Airflow starts those on a worker).
    :returns: the finished job's output locations only, never a SAS token or key: ``{"job_id",
        "status", "submitted_at", "finished_at", "duration_seconds", "outputs": {"output1":
        {"base_location", "relative_location", "container", "blob_name"}, ...}}``.
    :xcom bes_job_id: the BES job's id, as soon as the task follows the job (before it ends).
    :xcom azureml_link: the URL the task's "Azure ML" extra link opens (:class:`AzureMLLink`): the
        Studio web services portal, or the local emulator's view of the job.
    :raises BesJobInputError: the job failed because of its input (a Studio module error); no retries.
    :raises AzureMLRequestRejectedError: the service rejected a request (a 4xx other than 408 and
        429); no retries.
    :raises BesJobRejectedError: the trigger met an error a retry cannot help with; no retries.
    :raises BesJobFailedError: the job ended Failed or Cancelled for another reason, did not end
        within ``job_timeout`` (it is cancelled), finished without one of ``outputs``, or is gone;
        retried, with a new job.
    :raises ConfigurationError: an argument or connection field is invalid (the poll intervals,
        ``defer_after`` and ``start_from_trigger``'s inputs are checked when the DAG is parsed); no
        retries.
    """

    template_fields: Sequence[str] = (
        "inputs",
        "outputs",
        "global_parameters",
        "azureml_conn_id",
        "wasb_conn_id",
        "reference_mode",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "inputs": "json",
        "outputs": "json",
        "global_parameters": "json",
    }
    ui_color = "#cce5ff"
    operator_extra_links = (AzureMLLink(),)

    def __init__(
        self,
        *,
        outputs: Mapping[str, Any],
        inputs: Mapping[str, Any] | None = None,
        global_parameters: Mapping[str, Any] | None = None,
        azureml_conn_id: str = AzureMLWebServiceHook.default_conn_name,
        wasb_conn_id: str = "wasb_default",
        reference_mode: str = "sas",
        create_output_containers: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=True),
        defer_after: float = 3.0,
        poll_interval: float = 1.0,
        max_poll_interval: float = 60.0,
        job_timeout: timedelta = timedelta(hours=6),
        cancel_on_kill: bool = True,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inputs = inputs
        self.outputs = outputs
        self.global_parameters = global_parameters
        self.azureml_conn_id = azureml_conn_id
        self.wasb_conn_id = wasb_conn_id
        self.reference_mode = reference_mode
        self.create_output_containers = create_output_containers
        self.deferrable = deferrable
        self.defer_after = defer_after
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.job_timeout = job_timeout
        self.cancel_on_kill = cancel_on_kill
        if poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ConfigurationError("poll_interval must be > 0 and max_poll_interval >= poll_interval")
        if defer_after < 0:
            raise ConfigurationError("defer_after must be >= 0 seconds (0 defers at once)")
        if job_timeout <= timedelta(0):
            raise ConfigurationError("job_timeout must be a positive timedelta")
        self._active_job_id: str | None = None
        # The job this execution followed and how it ended, for the OpenLineage events.
        self._lineage_job: tuple[str, str | None] | None = None
        if start_from_trigger:
            self._start_in_triggerer()

    def _start_in_triggerer(self) -> None:
        """Run the whole task in the triggerer: no worker slot unless the job fails (see BesSubmitTrigger)."""
        from airflow.sdk.definitions.xcom_arg import XComArg
        from airflow.triggers.base import StartTriggerArgs

        from azureml_retrain.triggers.bes_job import BesSubmitTrigger

        for field in ("inputs", "outputs", "global_parameters"):
            if any(True for _ in XComArg.iter_xcom_references(getattr(self, field))):
                raise ConfigurationError(
                    f"{field}: start_from_trigger=True needs values or Jinja templates here, not another task's "
                    "output (the triggerer starts the task without running it on a worker); pass the output "
                    "through a template such as \"{{ ti.xcom_pull(task_ids='plan')['input'] }}\" or drop "
                    "start_from_trigger"
                )
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="azureml_retrain.triggers.bes_job.BesSubmitTrigger",
            trigger_kwargs=BesSubmitTrigger(
                outputs=self.outputs,
                inputs=self.inputs,
                global_parameters=self.global_parameters,
                azureml_conn_id=self.azureml_conn_id,
                wasb_conn_id=self.wasb_conn_id,
                reference_mode=self.reference_mode,
                create_output_containers=self.create_output_containers,
                job_timeout_seconds=self.job_timeout.total_seconds(),
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                cancel_on_kill=self.cancel_on_kill,
            ).serialize()[1],
            next_method="execute_complete",
            # Backstop only: the trigger cancels the job and reports at its own deadline.
            timeout=self.job_timeout + timedelta(seconds=300),
        )

    @cached_property
    def hook(self) -> AzureMLWebServiceHook:
        return AzureMLWebServiceHook(self.azureml_conn_id)

    # --- request -------------------------------------------------------------------------------

    def build_request(self) -> dict[str, Any]:
        """The BES request body. It carries storage credentials: never log or return it."""
        return build_request(
            self.inputs,
            self.outputs,
            self.global_parameters,
            storage=StorageAccount(self.wasb_conn_id),
            reference_mode=self.reference_mode,
            job_timeout=self.job_timeout,
        )

    # --- lifecycle -----------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        store = context.get("task_state_store")
        record = self._reattach(store, _clear_number(context))
        if record is not None:
            return self._follow(context, record)
        return self._follow(context, self._submit_and_start(store, context), just_started=True)

    def _follow(self, context: Context, record: Mapping[str, Any], *, just_started: bool = False) -> dict[str, Any]:
        """Wait for the job of ``record`` to end: here, or deferred to the triggerer."""
        job_id = str(record["job_id"])
        self._active_job_id = job_id
        self._lineage_job = (job_id, None)
        context["ti"].xcom_push(key="bes_job_id", value=job_id)
        context["ti"].xcom_push(key=LINK_XCOM_KEY, value=bes_job_link(self.hook.api_location, job_id))
        deadline = float(record["deadline"])
        # A job this try has just started is not worth a status call now: its first poll is one
        # interval away (and, deferring at once, the trigger's first poll is moments away).
        job = None if just_started else self.hook.get_job(job_id)
        if job is not None and job.status in BesJobStatus.TERMINAL:
            return self._finish(context, job, record)
        status = job.status if job is not None else None
        progress = JobProgress(
            job_id,
            bes_job_link(self.hook.api_location, job_id),
            self.log,
            status=status,
            submitted_at=str(record["submitted_at"]) if record.get("submitted_at") else None,
        )
        if not self.deferrable:
            ended, _ = self._wait(job_id, progress, deadline)
            assert ended is not None  # without a hand-over, only an ended job comes back
            return self._finish(context, ended, record)
        job, interval = self._wait(job_id, progress, deadline, hand_over_after=self.defer_after)
        if job is not None and job.status in BesJobStatus.TERMINAL:
            return self._finish(context, job, record)
        from azureml_retrain.triggers.bes_job import BesJobTrigger

        remaining = max(0.0, deadline - time.time())
        self.defer(
            trigger=BesJobTrigger(
                azureml_conn_id=self.azureml_conn_id,
                job_id=job_id,
                end_time=deadline,
                # The trigger goes on with the schedule where the worker left it.
                poll_interval=interval,
                max_poll_interval=self.max_poll_interval,
                cancel_on_kill=self.cancel_on_kill,
                last_status=job.status if job is not None else None,
                finish_task=True,
                expected_outputs=sorted((self.outputs or {}).keys()),
                submitted_at=str(record["submitted_at"]) if record.get("submitted_at") else None,
            ),
            method_name="execute_complete",
            # Backstop only: the trigger cancels the job and reports at its own deadline.
            timeout=timedelta(seconds=remaining + 300),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | str | None = None) -> dict[str, Any]:
        if event == ENDED_IN_TRIGGERER:
            # Only ``airflow dags test`` resumes a task its trigger already ended (it runs the trigger
            # inline and hands over the event's bare payload): read the job's result again.
            record = self._record(context.get("task_state_store"))
            if record is None:  # no state store: the id this try pushed before deferring
                job_id = context["ti"].xcom_pull(task_ids=self.task_id, key="bes_job_id")
                if not job_id:
                    raise BesJobFailedError(f"{self.task_id}: the trigger ended the task, but no BES job is recorded")
                record = {"job_id": str(job_id)}
            return self._finish(context, self.hook.get_job(str(record["job_id"])), record)
        if not isinstance(event, Mapping) or "job_id" not in event:
            raise BesJobFailedError(f"{self.task_id}: did not receive a valid event from the trigger: {event!r}")
        if event["status"] == "error":
            # Events of triggers from before "retryable" existed: retried, as they always were.
            error = BesJobFailedError if event.get("retryable", True) else BesJobRejectedError
            raise error(f"BES job {event['job_id'] or '(not submitted)'}: {event.get('message')}")
        record = self._record(context.get("task_state_store")) or {"job_id": event["job_id"]}
        if event["status"] == "timeout":
            raise BesJobFailedError(
                f"BES job {event['job_id']} did not end within job_timeout={self.job_timeout}; it was cancelled"
            )
        if event.get("job_status") in BesJobStatus.FAILURE:
            # The event carries what a failed job has to say: no need to read its status once more.
            ended = BesJob(str(event["job_id"]), str(event["job_status"]), {}, event.get("details"))
            return self._finish(context, ended, record)
        return self._finish(context, self.hook.get_job(str(event["job_id"])), record)

    def _finish(self, context: Context, job: BesJob, record: Mapping[str, Any]) -> dict[str, Any]:
        # A job an *earlier* try left that ends Cancelled after this try reattached to it was
        # cancelled by that try's kill (which can land late, after a clear the run did not record),
        # not by this try: start over with one new job instead of failing.
        submitted_by = record.get("try_number")
        current = _try_number(context)
        if job.status == BesJobStatus.CANCELLED and submitted_by is not None and current not in (None, submitted_by):
            self.log.warning(
                "BES job %s from try %s was cancelled (that try was killed); submitting a new one",
                job.job_id,
                submitted_by,
            )
            record = self._submit_and_start(context.get("task_state_store"), context)
            return self._follow(context, record, just_started=True)
        return self._complete(job, record)

    def on_kill(self) -> None:
        if self._active_job_id and self.cancel_on_kill:
            self.log.warning("Task killed: cancelling BES job %s", self._active_job_id)
            self.hook.cancel_job(self._active_job_id)

    # --- lineage -------------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """Inputs: the blobs the job trained on; outputs: its blobs (the ``.ilearner``, the evaluation
        CSV); the BES job's id, status and training web service in the ``azuremlBesJob`` run facet."""
        from azureml_retrain.blobs import BlobLocation
        from azureml_retrain.lineage import bes_job_facet, blob_dataset, operator_lineage

        account = StorageAccount(self.wasb_conn_id).account_name
        facets = {}
        if self._lineage_job is not None:
            job_id, status = self._lineage_job
            facets[BES_JOB_FACET] = bes_job_facet(job_id, self.hook.api_location, status)
        return operator_lineage(
            inputs=[blob_dataset(account, BlobLocation.parse(v, "inputs")) for v in (self.inputs or {}).values()],
            outputs=[blob_dataset(account, BlobLocation.parse(v, "outputs")) for v in (self.outputs or {}).values()],
            run_facets=facets,
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage:
        """As on completion: a failed job's inputs, intended outputs and the job that failed."""
        return self.get_openlineage_facets_on_complete(task_instance)

    # --- steps ---------------------------------------------------------------------------------

    @staticmethod
    def _record(store: Any) -> dict[str, Any] | None:
        if store is None:
            return None
        value = store.get(JOB_STATE_KEY)
        return dict(value) if isinstance(value, Mapping) and value.get("job_id") else None

    def _reattach(self, store: Any, clear_number: int | None) -> dict[str, Any] | None:
        """The job an earlier try of this task instance left, if it can still be used."""
        record = self._record(store)
        if record is None:
            return None
        recorded_clear = record.get("clear_number")
        if isinstance(recorded_clear, int) and clear_number is not None and clear_number > recorded_clear:
            self._retire_job_from_before_a_clear(str(record["job_id"]))
            return None
        return record if reattach(self.hook, record, self.log) else None

    def _retire_job_from_before_a_clear(self, job_id: str) -> None:
        """The task was cleared since ``job_id`` was submitted: that try's kill (its trigger's or its
        worker's ``on_kill``) cancels the job, possibly only after this rerun has started. Cancel it
        now rather than follow a job about to be cancelled."""
        status = job_status(self.hook, job_id)
        if status is None or status in BesJobStatus.TERMINAL:
            self.log.info("The task was cleared since BES job %s (%s); submitting a new one", job_id, status or "gone")
        elif self.cancel_on_kill:
            self.log.warning(
                "The task was cleared since BES job %s was submitted (%s): cancelling it, submitting a new one",
                job_id,
                status,
            )
            self.hook.cancel_job(job_id)
        else:
            self.log.warning(
                "The task was cleared since BES job %s was submitted (%s); cancel_on_kill=False leaves it "
                "running; submitting a new one",
                job_id,
                status,
            )

    def _submit_and_start(self, store: Any, context: Context) -> dict[str, Any]:
        body = self.build_request()
        if self.create_output_containers:
            ensure_output_containers(StorageAccount(self.wasb_conn_id), self.outputs)
        self.log.info("Submitting BES job: %s", describe_request(body))
        job_id = self.hook.submit_job(body)
        record = job_record(
            job_id,
            job_timeout_seconds=self.job_timeout.total_seconds(),
            try_number=_try_number(context),
            clear_number=_clear_number(context),
        )
        # Persist before starting: a crash from here on leaves a job a retry can find.
        if store is not None:
            store.set(JOB_STATE_KEY, record)
        start_job(self.hook, job_id)
        self.log.info("BES job %s submitted and started", job_id)
        return record

    def _wait(
        self, job_id: str, progress: JobProgress, deadline: float, *, hand_over_after: float | None = None
    ) -> tuple[BesJob | None, float]:
        """Poll in the worker until the job ends: the last job seen and the next interval.

        With ``hand_over_after``, stop instead once the next poll would come later than that many
        seconds after the first wait began (the trigger then goes on with the schedule).
        """
        from azureml_retrain.triggers.bes_job import is_transient, next_poll_interval

        interval, planned = self.poll_interval, 0.0
        job: BesJob | None = None
        while job is None or job.status not in BesJobStatus.TERMINAL:
            if hand_over_after is not None and planned + interval > hand_over_after:
                break
            remaining = deadline - time.time()
            if remaining <= 0:
                self.log.warning("BES job %s: job_timeout reached; cancelling", job_id)
                self.hook.cancel_job(job_id)
                raise BesJobFailedError(
                    f"BES job {job_id} did not end within job_timeout={self.job_timeout}; it was cancelled"
                )
            time.sleep(min(interval, remaining))
            planned += interval
            interval = next_poll_interval(interval, self.max_poll_interval)
            try:
                job = self.hook.get_job(job_id)
            except AzureMLServiceError as error:
                if error.status == 404:
                    # A retry can help here: it finds the job gone and submits a new one.
                    raise BesJobFailedError(f"BES job {job_id} no longer exists: {error}") from error
                if not is_transient(error):
                    raise
                self.log.warning("BES job %s: status unavailable (%s); will poll again", job_id, error)
                continue
            ended = job.status in BesJobStatus.TERMINAL
            progress.polled(job.status, next_check=None if ended else min(interval, max(0.0, deadline - time.time())))
        return job, interval

    def _complete(self, job: BesJob, record: Mapping[str, Any]) -> dict[str, Any]:
        self._active_job_id = None
        self._lineage_job = (job.job_id, job.status)
        if job.status in BesJobStatus.FAILURE:
            raise job_failure(job)
        missing = job.missing_outputs((self.outputs or {}).keys())
        if missing:
            raise BesJobFailedError(f"BES job {job.job_id} finished without the outputs {missing}")
        submitted_at = record.get("submitted_at")
        result = job.result(str(submitted_at) if submitted_at else None)
        duration = result["duration_seconds"]
        self.log.info("BES job %s finished%s", job.job_id, f" in {duration:.0f}s" if duration is not None else "")
        return result


def _try_number(context: Context) -> int | None:
    number = getattr(context.get("ti"), "try_number", None)
    return number if isinstance(number, int) else None


def _clear_number(context: Context) -> int | None:
    """How many times the run's tasks were cleared (Airflow counts it per DAG run)."""
    number = getattr(context.get("dag_run"), "clear_number", None)
    return number if isinstance(number, int) else None
