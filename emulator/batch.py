"""Batch Execution Service: submit, start, status, cancel, and the training job itself.

A job is a small state machine, NotStarted -> Running -> Finished | Failed | Cancelled. Training
really runs (scikit-learn, in a worker thread so the HTTP server stays responsive); the admin knobs
add a minimum duration and forced outcomes (fail with given Details; hang until cancelled, released
through the admin API, or read a given number of times).

A job that fails on its own reports ``Details`` as Studio does (inferred, see emulator/README.md): the
data-plane error envelope as a JSON string, class ``ModuleExecutionError`` with a module error
numbered below 1000 for its input or parameters, ``LibraryExecutionError`` ("Error 1000") for a
failure of the service itself. A forced failure's ``Details`` are passed through as given.

Each started job has its own thread, as each BES job has its own compute: a job waiting out its
minimum duration never delays another job. Only training itself is limited to ``workers`` at a time,
so many concurrent jobs do not oversubscribe the CPU.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from emulator import learning
from emulator.catalog import WebServiceKind
from emulator.errors import api_error, job_failure_details
from emulator.state import BlobRecord, JobRecord, JobStatus, utc_now
from emulator.storage import BlobReferenceError, BlobTarget, blob_from_reference

if TYPE_CHECKING:
    from emulator.backend import Backend, DataPlaneService
    from emulator.control import JobFaultSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

DATASET_EXTENSIONS = (".csv", ".tsv", ".arff")
MODEL_EXTENSIONS = (".ilearner",)
_REQUEST_MEMBERS = ("Input", "Inputs", "Outputs", "GlobalParameters")


# A failure of the emulator itself: a retry may well succeed.
INTERNAL_FAILURE = job_failure_details(
    learning.ModuleError.LIBRARY_EXCEPTION.number,
    learning.ModuleError.LIBRARY_EXCEPTION.code,
    learning.TRAIN_MODEL,
    "Library exception: internal error while running the job.",
)


def _storage_step(step: Callable[[], T], error: learning.ModuleError) -> T:
    """Run a blob read or write of the job; a failure is module ``error``, or a library error (which a
    retry may not meet) when the storage account could not be reached at all."""
    try:
        return step()
    except BlobReferenceError as exc:
        if exc.code == "ResourceDownload":
            raise learning.TrainingError(f"Library exception: {exc}", learning.ModuleError.LIBRARY_EXCEPTION) from exc
        raise learning.TrainingError(str(exc), error) from exc


class BatchService:
    def __init__(self, backend: Backend, workers: int = 2) -> None:
        self.backend = backend
        self._training = threading.BoundedSemaphore(workers)
        self._cancel_events: dict[str, threading.Event] = {}
        self._status_reads: dict[str, int] = {}  # job id -> status reads answered while it ran
        self._released: set[str] = set()  # jobs a "hang" fault held that the admin API let go on

    def cancel_all(self) -> None:
        """Stop every worker's wait (reset, shutdown); their jobs' states are not touched."""
        with self.backend.lock:
            events = list(self._cancel_events.values())
            self._cancel_events.clear()
        for event in events:
            event.set()
        with self.backend.lock:
            self._status_reads.clear()
            self._released.clear()

    def shutdown(self) -> None:
        # Every waiting job thread wakes up and returns; a job in training finishes it and returns.
        self.cancel_all()

    # --- requests ------------------------------------------------------------------------------

    def submit(self, service: DataPlaneService, body: Any) -> str:
        if service.kind is not WebServiceKind.TRAINING:
            raise api_error(
                "NotImplemented",
                "The emulator runs BES jobs on training web services only (batch scoring is not emulated).",
            )
        experiment = service.experiment
        if not isinstance(body, dict):
            raise api_error("RequestBodyInvalid", "The request body must be a JSON object.")
        unknown = sorted(set(body) - set(_REQUEST_MEMBERS))
        if unknown:
            raise api_error("RequestBodyInvalid", f"Unknown member(s) {unknown}; expected {list(_REQUEST_MEMBERS)}.")
        if body.get("Input") is not None and body.get("Inputs") is not None:
            raise api_error("DuplicateInputInBatchCall", "Give either 'Input' or 'Inputs', not both.")
        inputs = self._inputs(body, experiment.input_name)
        outputs = self._outputs(body.get("Outputs"), service)
        parameters = self._global_parameters(body.get("GlobalParameters"), service)
        try:
            inputs[experiment.input_name].check_exists()
        except BlobReferenceError as exc:
            raise api_error(exc.code, str(exc)) from exc
        job = JobRecord(
            id=uuid.uuid4().hex,
            service_id=service.id,
            experiment=experiment.key,
            created_at=utc_now(),
            inputs={name: BlobRecord.of(target) for name, target in inputs.items()},
            outputs={name: BlobRecord.of(target) for name, target in outputs.items()},
            global_parameters=parameters,
        )
        with self.backend.lock:
            self.backend.state.jobs[job.id] = job
            self.backend.save()
        return job.id

    def _inputs(self, body: dict[str, Any], input_name: str) -> dict[str, BlobTarget]:
        if body.get("Input") is not None:
            references: Any = {input_name: body["Input"]}
        else:
            references = body.get("Inputs")
        if references is None or references == {}:
            raise api_error("BatchJobInputsNotSpecified", f"The web service needs input '{input_name}'.")
        if not isinstance(references, dict):
            raise api_error("RequestBodyInvalid", "'Inputs' must be an object of input name to blob reference.")
        unknown = sorted(set(references) - {input_name})
        if unknown:
            raise api_error(
                "InvalidInputNames", f"Unknown input name(s) {unknown}; the web service has ['{input_name}']."
            )
        target = self._reference(references[input_name], f"Input '{input_name}'")
        if target.extension not in DATASET_EXTENSIONS:
            raise api_error(
                "InvalidBlobExtension",
                f"Input '{input_name}' must be a {', '.join(DATASET_EXTENSIONS)} blob, "
                f"got '{target.relative_location}'.",
            )
        return {input_name: target}

    def _outputs(self, references: Any, service: DataPlaneService) -> dict[str, BlobTarget]:
        experiment = service.experiment
        expected = {experiment.model_output: MODEL_EXTENSIONS, experiment.evaluation_output: DATASET_EXTENSIONS}
        if references is None:
            references = {}
        if not isinstance(references, dict):
            raise api_error("RequestBodyInvalid", "'Outputs' must be an object of output name to blob reference.")
        targets = {}
        for name, reference in references.items():
            if name not in expected:
                raise api_error(
                    "InvalidOutputOverrideName",
                    f"Output '{name}' does not exist (names are case-sensitive); outputs: {sorted(expected)}.",
                )
            target = self._reference(reference, f"Output '{name}'")
            if target.extension not in expected[name]:
                raise api_error(
                    "InvalidBlobExtension",
                    f"Output '{name}' must be a {', '.join(expected[name])} blob, got '{target.relative_location}'.",
                )
            targets[name] = target
        missing = sorted(set(expected) - set(targets))
        if missing:
            # Studio would pick the workspace's default storage; the emulator has none to offer.
            raise api_error(
                "MissingOutputOverrideSpecification",
                f"Output(s) {missing} need an override: the emulator has no default workspace storage.",
            )
        return targets

    def _reference(self, reference: Any, what: str) -> BlobTarget:
        try:
            return blob_from_reference(reference, what)
        except BlobReferenceError as exc:
            raise api_error(exc.code, str(exc)) from exc

    def _global_parameters(self, given: Any, service: DataPlaneService) -> dict[str, Any]:
        experiment = service.experiment
        if given is None:
            given = {}
        if not isinstance(given, dict) or any(isinstance(v, dict | list) for v in given.values()):
            raise api_error("RequestBodyInvalid", "'GlobalParameters' must be an object of name to value.")
        unknown = sorted(name for name in given if experiment.parameter(name) is None)
        if unknown:
            declared = [p.name for p in experiment.global_parameters]
            raise api_error("UnexpectedParameter", f"Unexpected global parameter(s) {unknown}; declared: {declared}.")
        missing = [p.name for p in experiment.global_parameters if p.required and given.get(p.name) in (None, "")]
        if missing:
            raise api_error("MissingRequiredGlobalParameters", f"Required global parameter(s) missing: {missing}.")
        return dict(given)

    def start(self, service: DataPlaneService, job_id: str) -> None:
        with self.backend.lock:
            job = self._job(service, job_id)
            if job.status is not JobStatus.NOT_STARTED:
                raise api_error(
                    "CannotStartJob", f"The job cannot be started because it is in {job.status.value} state."
                )
            job.status = JobStatus.RUNNING
            job.started_at = utc_now()
            self._cancel_events[job.id] = threading.Event()
            self.backend.save()
            # Taken as the job starts, not when its thread runs: once start has answered, a test knows
            # which fault the job has (and GET faults shows it taken).
            fault = self.backend.control.take_job_fault(job.service_id)
        threading.Thread(target=self._run, args=(job_id, fault), name=f"bes-job-{job_id[:8]}", daemon=True).start()

    def status(self, service: DataPlaneService, job_id: str) -> dict[str, Any]:
        with self.backend.lock:
            job = self._job(service, job_id)
            status, details, results = job.status, job.details, dict(job.results or {})
            if status is JobStatus.RUNNING:
                self._status_reads[job_id] = self._status_reads.get(job_id, 0) + 1
        body: dict[str, Any] = {"StatusCode": status.value, "Results": None, "Details": None}
        if status is JobStatus.FINISHED:
            body["Results"] = {name: self._result_location(record) for name, record in results.items()}
        elif status is JobStatus.FAILED:
            body["Details"] = details
        return body

    def _result_location(self, record: BlobRecord) -> dict[str, Any]:
        target = record.target()
        key = target.account_key or self.backend.known_account_key(target.account_name)
        # A fresh read-only blob SAS on every GET; without any key for the account, the caller's own
        # SAS is all the emulator can hand back.
        sas = target.with_key(key).read_sas() if key else ("?" + target.sas_token if target.sas_token else None)
        return {
            "ConnectionString": None,
            "RelativeLocation": target.relative_location,
            "BaseLocation": target.base_location,
            "SasBlobToken": sas,
        }

    def cancel(self, service: DataPlaneService, job_id: str) -> None:
        with self.backend.lock:
            job = self._job(service, job_id)
            if job.status.is_terminal:
                return
            job.status = JobStatus.CANCELLED
            job.ended_at = utc_now()
            self.backend.save()
            event = self._cancel_events.pop(job.id, None)
        if event is not None:
            event.set()

    def _job(self, service: DataPlaneService, job_id: str) -> JobRecord:
        job = self.backend.state.jobs.get(job_id)
        if job is None or job.service_id != service.id:
            raise api_error("JobNotFound", f"Job '{job_id}' was not found for web service '{service.id}'.")
        return job

    # --- the job -------------------------------------------------------------------------------

    def _run(self, job_id: str, fault: JobFaultSpec | None) -> None:
        backend = self.backend
        with backend.lock:
            job = backend.state.jobs[job_id].model_copy(deep=True)
            cancelled = self._cancel_events.get(job_id)
        if cancelled is None or job.status is not JobStatus.RUNNING:
            return
        deadline = time.monotonic() + backend.control.knobs.job_min_duration_seconds
        try:
            if fault is not None and fault.outcome == "hang":
                if not self._held(job_id, fault.status_reads, cancelled):
                    return  # cancelled while held
            elif fault is not None:
                self._finish(job_id, JobStatus.FAILED, details=fault.details, deadline=deadline)
                return
            experiment = backend.experiment(job.experiment)
            source = job.inputs[experiment.input_name].target()
            if source.extension == ".arff":
                raise learning.TrainingError(
                    "ARFF inputs are not supported by the emulator; use .csv or .tsv.",
                    learning.ModuleError.FILE_NOT_PARSED,
                )
            with self._training:
                data = _storage_step(source.download, learning.ModuleError.DOWNLOAD_FAILED)
                result = learning.train(
                    experiment, data, job.global_parameters, delimiter="\t" if source.extension == ".tsv" else ","
                )
            if cancelled.wait(max(0.0, deadline - time.monotonic())):
                return
            written = {}
            for name, record in job.outputs.items():
                target = record.target()
                data = (
                    result.ilearner
                    if name == experiment.model_output
                    else learning.evaluation_file(result.evaluation, target.extension)
                )
                _storage_step(functools.partial(target.upload, data), learning.ModuleError.UPLOAD_FAILED)
                written[name] = record
            self._finish(job_id, JobStatus.FINISHED, results=written)
        except learning.TrainingError as exc:
            self._finish(job_id, JobStatus.FAILED, details=exc.details(), deadline=deadline)
        except Exception:
            log.exception("BES job %s failed unexpectedly", job_id)
            self._finish(job_id, JobStatus.FAILED, details=INTERNAL_FAILURE, deadline=deadline)
        finally:
            with backend.lock:
                self._cancel_events.pop(job_id, None)
                self._status_reads.pop(job_id, None)
                self._released.discard(job_id)

    def _held(self, job_id: str, reads: int | None, cancelled: threading.Event) -> bool:
        """Hold a job Running until it is released (admin API) or, with ``reads``, until its status
        has been read that many times (that read still answers Running). False: cancelled first."""
        while True:
            with self.backend.lock:
                if job_id in self._released or (reads is not None and self._status_reads.get(job_id, 0) >= reads):
                    return True
            if cancelled.wait(0.01):
                return False

    def release(self, job_id: str) -> JobStatus | None:
        """Let a Running job that a "hang" fault holds go on to train and end as usual (a no-op for
        any other job). The job's status, or None when there is no such job."""
        with self.backend.lock:
            job = self.backend.state.jobs.get(job_id)
            if job is None:
                return None
            if job.status is JobStatus.RUNNING:
                self._released.add(job_id)
            return job.status

    def _finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        details: str | None = None,
        results: dict[str, BlobRecord] | None = None,
        deadline: float | None = None,
    ) -> None:
        cancelled = self._cancel_events.get(job_id)
        if deadline is not None and cancelled is not None and cancelled.wait(max(0.0, deadline - time.monotonic())):
            return
        with self.backend.lock:
            job = self.backend.state.jobs.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                return  # cancelled (or reset) meanwhile
            job.status = status
            job.ended_at = utc_now()
            job.details = details
            job.results = results
            self.backend.save()
