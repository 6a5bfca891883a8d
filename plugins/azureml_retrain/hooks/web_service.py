"""Data plane of a web service endpoint: Batch Execution Service (BES) jobs and RRS scoring.

Connection (type ``azureml_web_service``): *Host* is the endpoint's API location, for example
``https://ussouthcentral.services.azureml.net/workspaces/<ws>/services/<id>`` (a pasted BES
"Request URI" ending in ``/jobs?api-version=2.0`` works too); *Password* is the endpoint's API key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from azureml_retrain.exceptions import AzureMLServiceError, BesJobFailedError, ConfigurationError
from azureml_retrain.hooks.base import AzureMLHttpHook, RetryPolicy, error_from_response
from azureml_retrain.lazy import cached_property
from azureml_retrain.redaction import mask_once

API_VERSION = "2.0"
# The job the connection test asks for: the service checks the key before it looks the job up, and
# answers 404 for a job it does not have (BES has no list of jobs).
PROBE_JOB_ID = "0" * 32
# 404 codes that say the endpoint itself is missing (the official error list), not the probe's job.
ENDPOINT_NOT_FOUND = frozenset({"WebServiceNotFound", "WorkspaceNotFound", "WebServiceIdNotFoundInWorkspace"})


class BesJobStatus:
    """BES job states as the service names them, and the sets operators decide on."""

    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    FINISHED = "Finished"

    ACTIVE = frozenset({NOT_STARTED, RUNNING})
    FAILURE = frozenset({FAILED, CANCELLED})
    TERMINAL = FAILURE | {FINISHED}

    # Studio's samples test the ordinal too; older docs spell "Not started"; one client "Canceled".
    _ALIASES: ClassVar[dict[str, str]] = {
        "0": NOT_STARTED,
        "1": RUNNING,
        "2": FAILED,
        "3": CANCELLED,
        "4": FINISHED,
        "notstarted": NOT_STARTED,
        "running": RUNNING,
        "failed": FAILED,
        "cancelled": CANCELLED,
        "canceled": CANCELLED,
        "finished": FINISHED,
    }

    @classmethod
    def normalize(cls, value: object) -> str:
        key = re.sub(r"[\s_]", "", str(value)).lower()
        try:
            return cls._ALIASES[key]
        except KeyError:
            raise ValueError(f"unknown BES job status {value!r}") from None


@dataclass(frozen=True)
class BesOutput:
    """Where one output of a finished job is (locations only: no SAS token is kept)."""

    base_location: str
    relative_location: str

    @property
    def container(self) -> str:
        return self._parts()[0]

    @property
    def blob_name(self) -> str:
        return self._parts()[1]

    def _parts(self) -> tuple[str, str]:
        container, _, blob = self.relative_location.lstrip("/").partition("/")
        if not container or not blob:
            raise BesJobFailedError(
                f"the BES job reported an output at {self.relative_location!r}, not 'container/path/to/blob'"
            )
        return container, blob

    def to_xcom(self) -> dict[str, str]:
        """Locations only."""
        return {
            "base_location": self.base_location,
            "relative_location": self.relative_location.lstrip("/"),
            "container": self.container,
            "blob_name": self.blob_name,
        }


@dataclass(frozen=True)
class BesJob:
    job_id: str
    status: str
    outputs: dict[str, BesOutput]
    details: str | None

    @classmethod
    def from_response(cls, job_id: str, body: Any) -> BesJob:
        if not isinstance(body, Mapping) or "StatusCode" not in body:
            raise ValueError("BES job status response has no StatusCode")
        status = BesJobStatus.normalize(body["StatusCode"])
        outputs: dict[str, BesOutput] = {}
        results = body.get("Results") or {}
        if isinstance(results, Mapping):
            for name, ref in results.items():
                if not isinstance(ref, Mapping):
                    continue
                # The service's read SAS for the output (``SasBlobToken``) is left out: the project
                # reads outputs with its own storage connection and keeps locations only.
                outputs[str(name)] = BesOutput(
                    base_location=str(ref.get("BaseLocation") or ""),
                    relative_location=str(ref.get("RelativeLocation") or ""),
                )
        details = body.get("Details")
        return cls(job_id=job_id, status=status, outputs=outputs, details=str(details) if details else None)

    def missing_outputs(self, expected: Iterable[str]) -> list[str]:
        """Names in ``expected`` the job did not report among its results."""
        return sorted(set(expected) - set(self.outputs))

    def result(self, submitted_at: str | None, finished: datetime | None = None) -> dict[str, Any]:
        """What SubmitBesJob returns (XCom) for this finished job: locations only, never a SAS token."""
        finished = finished or datetime.now(UTC)
        duration = round((finished - datetime.fromisoformat(submitted_at)).total_seconds(), 3) if submitted_at else None
        return {
            "job_id": self.job_id,
            "status": self.status,
            "submitted_at": submitted_at,
            "finished_at": finished.isoformat(),
            "duration_seconds": duration,
            "outputs": {name: output.to_xcom() for name, output in self.outputs.items()},
        }


def normalize_api_location(url: str) -> str:
    """The endpoint's API location from what a user may paste: strip query, ``/jobs...``, ``/execute``."""
    base = url.strip().split("?", 1)[0].rstrip("/")
    base = re.sub(r"/(jobs(/.*)?|execute|swagger\.json)$", "", base)
    if not re.match(r"^https?://", base) or not re.search(r"/(workspaces|subscriptions)/[^/]+/services/[^/]+$", base):
        raise ConfigurationError(
            "API location must look like https://<region>.services.azureml.net/workspaces/<ws>/services/<id> "
            "(or /subscriptions/<id>/services/<id> for new web services); "
            f"got {base!r}"
        )
    return base


class AzureMLWebServiceHook(AzureMLHttpHook):
    """Submit, start, watch and cancel BES jobs; score through RRS. One endpoint per hook.

    :param conn_id: ``azureml_web_service`` connection: Host the endpoint's API location, Password its
        API key.
    :param api_location: the endpoint's API location, instead of the connection's Host; with it the
        connection's extras are not read (see :meth:`for_endpoint`, for an endpoint found at run time).
    :param api_key: the endpoint's API key, instead of the connection's Password (masked in logs).
    """

    conn_type = "azureml_web_service"
    default_conn_name = "azureml_web_service_default"
    hook_name = "Azure ML Studio web service (BES/RRS)"
    credential_field = "Password (the endpoint's API key)"

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        api_location: str | None = None,
        api_key: str | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, retry_policy=retry_policy, **kwargs)
        self._api_location = api_location
        self._api_key = api_key
        if api_key:
            mask_once(api_key)

    @classmethod
    def for_endpoint(cls, api_location: str, api_key: str, **kwargs: Any) -> AzureMLWebServiceHook:
        """A hook for an endpoint discovered at run time (e.g. from the management plane)."""
        return cls(conn_id=f"endpoint:{api_location}", api_location=api_location, api_key=api_key, **kwargs)

    @cached_property
    def api_location(self) -> str:
        host = self._api_location or self.require(
            self.connection.host, "Host", "the endpoint's API location from its dashboard"
        )
        return normalize_api_location(str(host))

    @cached_property
    def api_key(self) -> str:
        return str(self._api_key or self.require(self.connection.password, "Password", "the endpoint's API key"))

    @cached_property
    def extras(self) -> dict[str, Any]:
        return {} if self._api_location else super().extras

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}

    @property
    def refused_credential(self) -> str:
        if self._api_location:  # an endpoint found at run time: its key came from the management plane
            return "the API key the management plane gave for this endpoint"
        return super().refused_credential

    @property
    def resource(self) -> str:
        """How errors and logs name this endpoint (no key, no host secrets)."""
        return f"service {self.api_location.split('://', 1)[-1].split('/', 1)[-1]}"

    def _jobs_url(self, job_id: str | None = None, suffix: str = "") -> str:
        return f"{self.api_location}/jobs" + (f"/{job_id}" if job_id else "") + suffix

    # --- BES ---------------------------------------------------------------------------------

    def submit_job(self, request_body: Mapping[str, Any]) -> str:
        """Create a job (it stays NotStarted until :meth:`start_job`); return its id."""
        body = self.request_json(
            "submit BES job",
            self.resource,
            "POST",
            self._jobs_url(),
            params={"api-version": API_VERSION},
            json_body=request_body,
            idempotent=False,
        )
        job_id = body.strip('"') if isinstance(body, str) else None
        if not job_id or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", job_id):
            raise AzureMLServiceError(
                "submit BES job",
                self.resource,
                status=200,
                code="MalformedResponse",
                message="expected the job id as a JSON string",
            )
        return job_id

    def start_job(self, job_id: str) -> None:
        self.request(
            "start BES job",
            f"job {job_id} of {self.resource}",
            "POST",
            self._jobs_url(job_id, "/start"),
            params={"api-version": API_VERSION},
            expect_json=False,
        )

    def get_job(self, job_id: str) -> BesJob:
        body = self.request_json(
            "get BES job status",
            f"job {job_id} of {self.resource}",
            "GET",
            self._jobs_url(job_id),
            params={"api-version": API_VERSION},
        )
        try:
            return BesJob.from_response(job_id, body)
        except ValueError as exc:
            raise AzureMLServiceError(
                "get BES job status",
                f"job {job_id} of {self.resource}",
                status=200,
                code="MalformedResponse",
                message=str(exc),
            ) from exc

    def cancel_job(self, job_id: str) -> None:
        """DELETE the job: cancels it if it is running. Safe to repeat."""
        self.request(
            "cancel BES job",
            f"job {job_id} of {self.resource}",
            "DELETE",
            self._jobs_url(job_id),
            params={"api-version": API_VERSION},
            expect_json=False,
        )

    def probe(self) -> str:
        """GET the status of a job that does not exist: the key is checked first, then the job (404)."""
        response = self.request(
            "test connection",
            self.resource,
            "GET",
            self._jobs_url(PROBE_JOB_ID),
            params={"api-version": API_VERSION},
            ok_statuses=frozenset({404}),
        )
        if response.status_code == 404:
            error = error_from_response("test connection", self.resource, response)
            if {error.code, *error.detail_codes} & ENDPOINT_NOT_FOUND:
                raise error
        return f"API key accepted by {self.resource} (BES, api-version {API_VERSION})"

    # --- RRS ---------------------------------------------------------------------------------

    def score(
        self,
        rows: list[Mapping[str, Any]],
        *,
        input_name: str = "input1",
        global_parameters: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Score rows through RRS (``format=swagger``); return one dict of output columns per row."""
        body = self.request_json(
            "score through RRS",
            self.resource,
            "POST",
            f"{self.api_location}/execute",
            params={"api-version": API_VERSION, "format": "swagger"},
            json_body={
                "Inputs": {input_name: [dict(r) for r in rows]},
                "GlobalParameters": dict(global_parameters or {}),
            },
        )
        results = body.get("Results") if isinstance(body, Mapping) else None
        if not isinstance(results, Mapping) or not results:
            raise AzureMLServiceError(
                "score through RRS", self.resource, status=200, code="MalformedResponse", message="no Results"
            )
        first_output = next(iter(results.values()))
        if not isinstance(first_output, list):
            raise AzureMLServiceError(
                "score through RRS",
                self.resource,
                status=200,
                code="MalformedResponse",
                message="Results output is not a list of rows",
            )
        return [dict(row) for row in first_output if isinstance(row, Mapping)]
