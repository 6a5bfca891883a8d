"""The one catalogue of every error the emulator answers with: HTTP status, wire codes, envelope.

Data-plane and classic management errors use the Studio envelope
``{"error": {"code": <class>, "message": ..., "details": [{"code": <specific>, "message": ...}]}}``
with the class/status pairs of the official web-service error list. ARM errors use the ARM envelope
``{"error": {"code", "message", "target" (when there is one), "details"}}`` and the token authority answers like AAD
(``{"error": ..., "error_description": ...}``). Handlers raise only through the functions here; an
unknown path or method answers in the envelope of the plane its path belongs to.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

_ARM_PATH = re.compile(r"/(subscriptions/[^/]+/(resourcegroups|providers)|providers)(/|$)", re.IGNORECASE)

# Error class (top-level ``code``) -> (HTTP status, class message).
_CLASSES: dict[str, tuple[int, str]] = {
    "BadArgument": (400, "Invalid argument provided."),
    "BadUserArgument": (400, "Invalid user argument provided."),
    "InvalidOperation": (400, "The requested operation is invalid in the current state."),
    # Module runtime failures: the classes a failed BES job's Details carry (see job_failure_details).
    "ModuleExecutionError": (400, "Module execution encountered an error."),
    "LibraryExecutionError": (400, "Module execution encountered an internal library error."),
    "Unauthorized": (401, "Unauthorized access."),
    "NotFound": (404, "Resource not found."),
    "MethodNotAllowed": (405, "The requested method is not allowed on this resource."),
    "TooManyRequests": (429, "Too many requests."),
    "InternalError": (500, "The AzureML service has encountered an internal error."),
    "NotImplemented": (501, "The operation is not supported by the emulator."),
    "ServiceUnavailable": (503, "Service is temporarily unavailable."),
}

# Specific (``details[].code``) -> its class. Names come from the official error list; the few the
# list lacks are marked "emulator" and documented in emulator/README.md.
_DETAILS: dict[str, str] = {
    "BadVersionCall": "BadArgument",
    "BatchJobInputsNotSpecified": "BadArgument",
    "BlobNotFound": "BadArgument",
    "DuplicateInputInBatchCall": "BadArgument",
    "InvalidBlob": "BadArgument",
    "InvalidBlobConnectionString": "BadArgument",
    "InvalidBlobExtension": "BadArgument",
    "InvalidInputNames": "BadArgument",
    "InvalidOutputOverrideName": "BadArgument",
    "InvalidQueryParameter": "BadArgument",
    "InvalidWebServiceResources": "BadArgument",
    "InvalidEndpointName": "BadArgument",  # emulator
    "MissingInputBlobInformation": "BadArgument",
    "MissingOutputOverrideSpecification": "BadArgument",
    "MissingRequestInput": "BadArgument",
    "MissingRequiredGlobalParameters": "BadArgument",
    "RequestBodyInvalid": "BadArgument",
    "UnexpectedParameter": "BadArgument",
    "InputMismatchError": "BadUserArgument",
    "InputParseError": "BadUserArgument",
    "CannotStartJob": "InvalidOperation",
    "IncompatibleModel": "InvalidOperation",
    "CannotDeleteDefaultEndpoint": "InvalidOperation",  # emulator
    "CannotRefreshDefaultEndpoint": "InvalidOperation",  # emulator
    "ScoreRequestUnauthorized": "Unauthorized",
    "ManagementRequestUnauthorized": "Unauthorized",
    "WorkspaceNotFound": "NotFound",
    "WebServiceNotFound": "NotFound",
    "WebServiceIdNotFoundInWorkspace": "NotFound",
    "EndpointNotFound": "NotFound",  # emulator
    "JobNotFound": "NotFound",  # emulator
    "ModelPackageNotFound": "NotFound",
    "ResourceNotFound": "NotFound",  # emulator: unknown path
    "MethodNotAllowed": "MethodNotAllowed",  # emulator
    "RequestThrottled": "ServiceUnavailable",
    "TooManyRequests": "TooManyRequests",  # emulator (fault injection)
    "ResourceDownload": "InternalError",
    "UpdateWebServiceResourceFailed": "InternalError",
    "InternalError": "InternalError",  # emulator (fault injection)
    "NotImplemented": "NotImplemented",  # emulator
}


class EmulatorError(Exception):
    """An error response: status, JSON body and extra headers, ready to send."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def api_error(
    detail_code: str, message: str, *, error_class: str | None = None, headers: dict[str, str] | None = None
) -> EmulatorError:
    """A data-plane / classic management error for ``detail_code``.

    The class (and so the status) comes from the catalogue unless ``error_class`` overrides it: the
    official list files some specifics under two classes (e.g. ``UnexpectedParameter`` is
    ``BadArgument`` for BES and ``BadUserArgument`` for RRS).
    """
    class_code = error_class or _DETAILS[detail_code]
    status, class_message = _CLASSES[class_code]
    body = {
        "error": {"code": class_code, "message": class_message, "details": [{"code": detail_code, "message": message}]}
    }
    return EmulatorError(status, body, headers)


# Studio numbers its module errors: "Error 0001" to "Error 0999" are the module's own checks of its
# inputs and parameters; "Error 1000" and up are internal library failures.
FIRST_LIBRARY_ERROR = 1000


def job_failure_details(number: int, detail_code: str, module: str, message: str) -> str:
    """A failed BES job's ``Details``: the data-plane error envelope as a JSON string (inferred, see
    emulator/README.md), with module error ``number`` in Studio's "Error NNNN: ..." form."""
    error_class = "LibraryExecutionError" if number >= FIRST_LIBRARY_ERROR else "ModuleExecutionError"
    detail = {"code": detail_code, "target": module, "message": f"Error {number:04d}: {message}"}
    return json.dumps({"error": {"code": error_class, "message": _CLASSES[error_class][1], "details": [detail]}})


def api_error_status(detail_code: str) -> int:
    return _CLASSES[_DETAILS[detail_code]][0]


def arm_error(status: int, code: str, message: str, target: str | None = None) -> EmulatorError:
    """An ARM error in the ARM envelope (``target`` only when there is one: it is a string, never null)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        error["target"] = target
    error["details"] = []
    return EmulatorError(status, {"error": error})


def is_arm_path(path: str) -> bool:
    """Whether ``path`` is Resource Manager's: ``/subscriptions/{sub}/resourceGroups/...``,
    ``/subscriptions/{sub}/providers/...`` or ``/providers/...`` (an ARM web service's data plane,
    ``/subscriptions/{sub}/services/...``, is not)."""
    return _ARM_PATH.match(path) is not None


def arm_not_found(subscription: str, resource_group: str, name: str) -> EmulatorError:
    return arm_error(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.MachineLearning/webServices/{name}' under resource group "
        f"'{resource_group}' was not found.",
    )


def aad_error(status: int, error: str, description: str, aadsts: int) -> EmulatorError:
    """An AAD token-endpoint error (the shape MSAL parses)."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id = str(uuid.uuid4())
    body = {
        "error": error,
        "error_description": f"AADSTS{aadsts}: {description} Trace ID: {trace_id} Timestamp: {now}",
        "error_codes": [aadsts],
        "timestamp": now,
        "trace_id": trace_id,
        "correlation_id": str(uuid.uuid4()),
    }
    return EmulatorError(status, body)
