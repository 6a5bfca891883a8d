"""BES job requests, starts and records: shared by SubmitBesJobOperator and the trigger that submits.

Also the one place that reads a failed job's ``Details`` (:func:`job_failure`): whether it failed
because of its input, which another job would meet again, or for a reason a retry may not meet.

A job's *record* (``job_id``, ``submitted_at``, ``deadline``, ``try_number``, and the run's
``clear_number`` when known) is what lets a retry or a re-run reattach to the job instead of starting
another. The operator keeps it in the task-instance
state store. A trigger has no access to that store, so a task started in the triggerer keeps it in a
*claim* blob next to its first output: :class:`JobClaims`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azureml_retrain.blobs import BlobLocation
from azureml_retrain.exceptions import AzureMLServiceError, BesJobFailedError, BesJobInputError, ConfigurationError
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook, BesJob, BesJobStatus
from azureml_retrain.redaction import redact
from azureml_retrain.storage import REFERENCE_MODES, StorageAccount

DATASET_EXTENSIONS = (".csv", ".tsv", ".arff")
MODEL_EXTENSION = ".ilearner"
CLAIM_SUFFIX = ".bes-job.json"
# A claim taken to submit that never got its job id: its trigger died between the two writes.
STALE_CLAIM_SECONDS = 60.0
# The longest a running job's log stays silent: a six-hour job still says how it is doing.
PROGRESS_EVERY_SECONDS = 300.0
# Output tokens outlive the job's deadline by this much: the service writes the outputs as the job ends.
OUTPUT_SAS_MARGIN = timedelta(minutes=10)


# Error classes of the data-plane envelope that blame the request's own input.
INPUT_ERROR_CLASSES = frozenset({"ModuleExecutionError", "BadUserArgument"})
# Studio numbers its module errors: below 1000, a module's checks of its inputs and parameters; from
# 1000, internal library errors.
FIRST_LIBRARY_ERROR = 1000
_MODULE_ERROR_NUMBER = re.compile(r"^\s*Error\s+(\d{1,5})\s*:\s*")


@dataclass(frozen=True)
class JobFailureDetails:
    """What a failed BES job's ``Details`` say, read from the data-plane error envelope when they hold
    one (``{"error": {"code", "message", "details": [{"code", "target", "message"}]}}`` as a JSON
    string); plain text is kept as ``message`` with nothing else known."""

    message: str
    error_class: str | None = None
    code: str | None = None
    module: str | None = None
    number: int | None = None

    @property
    def caused_by_input(self) -> bool:
        """Another job on the same input would fail the same way: a module error numbered below 1000,
        or (without a number) an error class that blames the input. Plain text never counts: nothing
        says what it blames."""
        if self.number is not None:
            return self.number < FIRST_LIBRARY_ERROR
        return self.error_class in INPUT_ERROR_CLASSES

    def describe(self) -> str:
        """One line: the module, the error number and text, and the codes (no envelope syntax)."""
        where = f"{self.module}: " if self.module else ""
        number = f"Error {self.number:04d}: " if self.number is not None else ""
        codes = "/".join(c for c in (self.error_class, self.code) if c)
        return redact(f"{where}{number}{self.message}" + (f" ({codes})" if codes else ""))


def parse_job_details(details: str | None) -> JobFailureDetails:
    """Read a failed job's ``Details``: the error envelope in a JSON string, or plain text."""
    text = (details or "").strip()
    try:
        body = json.loads(text) if text.startswith("{") else None
    except ValueError:
        body = None
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return JobFailureDetails(message=text or "no details given")
    listed = error.get("details")
    entries = [d for d in listed if isinstance(d, dict)] if isinstance(listed, list) else []
    # The specific entry that carries a module error number says most; else the first entry.
    numbered = [d for d in entries if _MODULE_ERROR_NUMBER.match(str(d.get("message") or ""))]
    detail = (numbered or entries or [{}])[0]
    detail_message = str(detail.get("message") or "")
    match = _MODULE_ERROR_NUMBER.match(detail_message)
    return JobFailureDetails(
        message=(detail_message[match.end() :] if match else detail_message) or str(error.get("message") or text),
        error_class=str(error.get("code") or "") or None,
        code=str(detail.get("code") or "") or None,
        module=str(detail.get("target") or "") or None,
        number=int(match.group(1)) if match else None,
    )


def job_failure(job: BesJob) -> BesJobFailedError:
    """The error a job that ended Failed or Cancelled fails its task with: a
    :class:`BesJobInputError` (no Airflow retry) when its Details blame its input, otherwise a
    :class:`BesJobFailedError` (retried, as a new job may succeed)."""
    failure = parse_job_details(job.details)
    if job.details is None:
        return BesJobFailedError(f"BES job {job.job_id} {job.status}: no details given")
    message = f"BES job {job.job_id} {job.status}: {failure.describe()}"
    if job.status == BesJobStatus.FAILED and failure.caused_by_input:
        return BesJobInputError(
            f"{message.rstrip('.')}. The job's input caused this: another job on the same input would fail the "
            "same way, so the task is not retried; fix the data or parameters, then clear the task."
        )
    return BesJobFailedError(message)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {seconds:02d}s"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


class JobProgress:
    """Progress lines of a BES job being followed: its state, how long since it was submitted, when
    it is checked next and where to look at it.

    The rate is bounded both ways: at most one line per poll, always one when the state changes, and
    while nothing changes, one whenever waiting for the next poll would leave the log silent for more
    than ``quiet_seconds`` (counted from the last line, or from when the watch began).
    """

    def __init__(
        self,
        job_id: str,
        link: str,
        log: Any,
        *,
        status: str | None,
        submitted_at: str | None,
        quiet_seconds: float = PROGRESS_EVERY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job_id = job_id
        self.link = link
        self.log = log
        self.status = status
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self.last_line_at = clock()  # whoever started the watch has just logged
        self.since, self.since_what = self.last_line_at, "since the watch began"
        try:
            if submitted_at:
                self.since, self.since_what = datetime.fromisoformat(submitted_at).timestamp(), "since submission"
        except ValueError:
            pass

    def polled(self, status: str, next_check: float | None) -> bool:
        """A poll saw ``status``; ``next_check`` is the wait until the next one (None: no more polls).
        Whether a line was logged."""
        now = self.clock()
        changed = status != self.status
        silent_until_next = next_check is None or now + next_check - self.last_line_at > self.quiet_seconds
        if not changed and not silent_until_next:
            return False
        state = f"{self.status or '?'} -> {status}" if changed else f"still {status}"
        after = f"next check in {_duration(next_check)}" if next_check is not None else "no further checks"
        self.log.info(
            "BES job %s: %s, %s %s; %s; see %s",
            self.job_id,
            state,
            _duration(now - self.since),
            self.since_what,
            after,
            self.link,
        )
        self.status, self.last_line_at = status, now
        return True


def validate_locations(value: Mapping[str, Any] | None, field: str, *, outputs: bool) -> dict[str, BlobLocation]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{field}: expected a mapping of port name to blob location, got {type(value).__name__}"
        )
    locations = {}
    for name, raw in value.items():
        location = BlobLocation.parse(raw, field=f"{field}[{name!r}]")
        allowed = (*DATASET_EXTENSIONS, MODEL_EXTENSION) if outputs else DATASET_EXTENSIONS
        if not location.blob_name.lower().endswith(allowed):
            raise ConfigurationError(
                f"{field}[{name!r}]: {location} must end with one of {', '.join(allowed)} "
                "(BES rejects other extensions: datasets are .csv/.tsv/.arff, trained models .ilearner)"
            )
        locations[str(name)] = location
    return locations


def build_request(
    inputs: Mapping[str, Any] | None,
    outputs: Mapping[str, Any] | None,
    global_parameters: Mapping[str, Any] | None,
    *,
    storage: StorageAccount,
    reference_mode: str,
    job_timeout: timedelta,
) -> dict[str, Any]:
    """The BES request body. It carries storage credentials: never log or return it.

    In the SAS form inputs get blob-scoped read-only tokens. Outputs get their container's shared
    create+write token (no read, list or delete; see :meth:`StorageAccount.output_sas_token`),
    valid until the job's deadline (``job_timeout``), since the service writes them when the job
    ends. An output in a container that also holds one of the job's inputs gets a token for its own
    blob instead: no output token can overwrite training data.
    """
    if reference_mode not in REFERENCE_MODES:
        raise ConfigurationError(f"reference_mode: expected one of {REFERENCE_MODES}, got {reference_mode!r}")
    input_locations = validate_locations(inputs, "inputs", outputs=False)
    output_locations = validate_locations(outputs, "outputs", outputs=True)
    if not output_locations:
        raise ConfigurationError("outputs: name at least one web service output and where to write it")
    if global_parameters is not None and not isinstance(global_parameters, Mapping):
        raise ConfigurationError("global_parameters: expected a mapping of parameter name to value")
    mode: Any = reference_mode
    input_containers = {location.container for location in input_locations.values()}
    return {
        "Inputs": {n: storage.bes_reference(loc, mode=mode, write=False) for n, loc in input_locations.items()},
        "Outputs": {
            n: storage.bes_reference(
                loc,
                mode=mode,
                write=True,
                lifetime=job_timeout + OUTPUT_SAS_MARGIN,
                container_token=loc.container not in input_containers,
            )
            for n, loc in output_locations.items()
        },
        # BES samples send every value as a string.
        "GlobalParameters": {str(k): str(v) for k, v in (global_parameters or {}).items()},
    }


def ensure_output_containers(storage: StorageAccount, outputs: Mapping[str, Any] | None) -> None:
    """Create the containers the job's outputs go to, when missing: BES writes into existing
    containers only, and a missing one fails the job with a "blob not found" that hides the cause."""
    locations = validate_locations(outputs, "outputs", outputs=True)
    for container in sorted({location.container for location in locations.values()}):
        storage.ensure_container(container)


def describe_request(body: Mapping[str, Any]) -> str:
    """What a request reads and writes, for the log: relative locations and parameter names only."""
    return (
        f"inputs { ({n: r['RelativeLocation'] for n, r in body['Inputs'].items()}) }, "
        f"outputs { ({n: r['RelativeLocation'] for n, r in body['Outputs'].items()}) }, "
        f"global parameters {sorted(body['GlobalParameters'])}"
    )


def start_job(hook: AzureMLWebServiceHook, job_id: str) -> None:
    try:
        hook.start_job(job_id)
    except AzureMLServiceError as error:
        # A start whose response was lost and then retried meets a job already running.
        if "CannotStartJob" in error.detail_codes and hook.get_job(job_id).status != BesJobStatus.NOT_STARTED:
            return
        raise


def job_status(hook: AzureMLWebServiceHook, job_id: str) -> str | None:
    """The job's status, or None if the service no longer has it (404)."""
    try:
        return hook.get_job(job_id).status
    except AzureMLServiceError as error:
        if error.status == 404:
            return None
        raise


def reattach(
    hook: AzureMLWebServiceHook,
    record: Mapping[str, Any],
    log: Any,
    *,
    keep_failure_of_try: int | None = None,
) -> bool:
    """Whether the job ``record`` names can still be used, starting it if it never was.

    A job that no longer exists, or ended Failed or Cancelled, is not: a new one is submitted. With
    ``keep_failure_of_try``, a failed job that very try submitted is kept, so that it is reported.
    """
    job_id = str(record["job_id"])
    status = job_status(hook, job_id)
    if status is None:
        log.warning("BES job %s from an earlier run no longer exists; submitting a new one", job_id)
        return False
    own_try = keep_failure_of_try is not None and record.get("try_number") == keep_failure_of_try
    if status in BesJobStatus.FAILURE and not own_try:
        log.warning("BES job %s from an earlier try ended %s; submitting a new one", job_id, status)
        return False
    if status == BesJobStatus.NOT_STARTED:
        log.info("Reattaching to BES job %s (submitted, not started): starting it", job_id)
        start_job(hook, job_id)
    else:
        log.info("Reattaching to BES job %s (%s)", job_id, status)
    return True


def job_record(
    job_id: str, *, job_timeout_seconds: float, try_number: int | None, clear_number: int | None = None
) -> dict[str, Any]:
    now = time.time()
    record: dict[str, Any] = {
        "job_id": job_id,
        "submitted_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "deadline": now + job_timeout_seconds,
        "try_number": try_number,
    }
    if clear_number is not None:
        record["clear_number"] = clear_number
    return record


@dataclass
class Claim:
    """A claim blob's content (``record`` or ``{"claimed_at", "try_number"}`` while submitting) and etag."""

    content: dict[str, Any] | None
    etag: str | None

    @property
    def job_id(self) -> str | None:
        value = (self.content or {}).get("job_id")
        return str(value) if value else None

    @property
    def submitting_elsewhere(self) -> bool:
        """Another run of the trigger took the claim to submit, moments ago: wait for its job id."""
        claimed_at = (self.content or {}).get("claimed_at")
        if self.job_id is not None or not isinstance(claimed_at, int | float):
            return False
        return time.time() - claimed_at < STALE_CLAIM_SECONDS


class JobClaims:
    """Claim blobs beside a task's first output (``<output blob>.bes-job.json``, no secrets in it).

    Writes are conditional (create only if missing, replace only if unchanged), so two runs of the
    same trigger (a triggerer failover) cannot both submit: the second one waits for the first's job.
    """

    def __init__(self, storage: StorageAccount) -> None:
        self.storage = storage

    @staticmethod
    def location(outputs: Mapping[str, BlobLocation]) -> BlobLocation:
        first = outputs[sorted(outputs)[0]]
        return BlobLocation(first.container, first.blob_name + CLAIM_SUFFIX)

    def _blob(self, location: BlobLocation) -> Any:
        return self.storage.client.get_blob_client(location.container, location.blob_name)

    def read(self, location: BlobLocation) -> Claim:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with self.storage.call(f"reading the BES job claim {location}"):
                downloader = self._blob(location).download_blob()
        except ResourceNotFoundError:
            return Claim(None, None)
        try:
            content = json.loads(downloader.readall())
        except ValueError:
            content = None
        return Claim(content if isinstance(content, dict) else None, str(downloader.properties.etag))

    def write(self, location: BlobLocation, content: Mapping[str, Any], *, replacing: Claim) -> str | None:
        """Write ``content`` if the blob is still as ``replacing`` saw it; its new etag, or None if not."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        data = json.dumps(dict(content)).encode()
        try:
            with self.storage.call(f"writing the BES job claim {location}"):
                if replacing.etag is None:
                    answer = self._blob(location).upload_blob(data, overwrite=False)
                else:
                    answer = self._blob(location).upload_blob(
                        data, overwrite=True, etag=replacing.etag, match_condition=MatchConditions.IfNotModified
                    )
        except (ResourceExistsError, ResourceModifiedError):
            return None
        return str(answer["etag"])
