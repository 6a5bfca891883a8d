"""Reading a failed BES job's Details: which failures a retry cannot help (the job's input), which it can."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from azureml_retrain.bes import job_failure, parse_job_details
from azureml_retrain.exceptions import BesJobFailedError, BesJobInputError
from azureml_retrain.hooks.web_service import BesJob

JOB = "0123456789abcdef0123456789abcdef"


def envelope(error_class: str, code: str, target: str | None, message: str) -> str:
    detail = {"code": code, "message": message} | ({"target": target} if target else {})
    return json.dumps({"error": {"code": error_class, "message": "Module execution failed.", "details": [detail]}})


USER_ERROR = envelope(
    "ModuleExecutionError", "InvalidDataset", "Train Model", "Error 0018: Column 'Age' is not numeric at line 2."
)
LIBRARY_ERROR = envelope(
    "LibraryExecutionError", "LibraryException", "Train Model", "Error 1000: Library exception: out of memory."
)


def failed(details: str | None, status: str = "Failed") -> BesJob:
    return BesJob(job_id=JOB, status=status, outputs={}, details=details)


@pytest.mark.parametrize(
    ("details", "fails_fast", "message"),
    [
        pytest.param(
            USER_ERROR,
            True,
            f"BES job {JOB} Failed: Train Model: Error 0018: Column 'Age' is not numeric at line 2. "
            "(ModuleExecutionError/InvalidDataset). The job's input caused this",
            id="envelope-with-a-user-error",
        ),
        pytest.param(
            LIBRARY_ERROR,
            False,
            f"BES job {JOB} Failed: Train Model: Error 1000: Library exception: out of memory. "
            "(LibraryExecutionError/LibraryException)",
            id="envelope-with-a-library-error",
        ),
        pytest.param(
            envelope("BadUserArgument", "InputParseError", None, "Input 'input1' cannot be parsed."),
            True,
            "Failed: Input 'input1' cannot be parsed. (BadUserArgument/InputParseError)",
            id="bad-user-argument-without-a-number",
        ),
        pytest.param(
            envelope("InternalError", "ResourceDownload", None, "Error 0030: Unable to download a file."),
            True,
            "Failed: Error 0030: Unable to download a file.",
            id="a-module-error-number-below-1000-under-another-class",
        ),
        pytest.param(
            envelope("ModuleExecutionError", "LibraryException", "Train Model", "Error 1000: Library exception."),
            False,
            "Failed: Train Model: Error 1000: Library exception.",
            id="the-number-says-more-than-the-class",
        ),
        pytest.param(
            json.dumps({"error": {"code": "InternalError", "message": "The service has encountered an error."}}),
            False,
            "Failed: The service has encountered an error. (InternalError)",
            id="internal-error-without-details",
        ),
        pytest.param(
            "Error 0018: Dataset contains invalid data (column Tenure, line 7).",
            False,
            "Failed: Error 0018: Dataset contains invalid data (column Tenure, line 7).",
            id="plain-text-even-with-a-number",
        ),
        pytest.param("{not json", False, "Failed: {not json", id="text-that-looks-like-json"),
        pytest.param('["a", "list"]', False, 'Failed: ["a", "list"]', id="json-that-is-not-an-object"),
        pytest.param(None, False, "Failed: no details given", id="null"),
        pytest.param("", False, "Failed: no details given", id="empty"),
    ],
)
def test_a_failed_job_fails_fast_only_when_its_details_blame_its_input(
    details: str | None, fails_fast: bool, message: str
) -> None:
    error = job_failure(failed(details))
    assert isinstance(error, BesJobFailedError)
    assert isinstance(error, AirflowFailException) is fails_fast
    assert isinstance(error, BesJobInputError) is fails_fast
    assert message in str(error)
    assert JOB in str(error)


def test_a_cancelled_job_is_retried_whatever_its_details_say() -> None:
    error = job_failure(failed(USER_ERROR, status="Cancelled"))
    assert not isinstance(error, AirflowFailException)
    assert f"BES job {JOB} Cancelled" in str(error)


def test_the_entry_with_a_module_error_number_is_the_one_read() -> None:
    details = json.dumps(
        {
            "error": {
                "code": "ModuleExecutionError",
                "message": "Module execution encountered an error.",
                "details": [
                    {"code": "Context", "message": "while running the experiment"},
                    {"code": "ColumnNotFound", "target": "Train Model", "message": "Error 0001: Column 'x' not found"},
                ],
            }
        }
    )
    read = parse_job_details(details)
    assert (read.number, read.code, read.module, read.message) == (
        1,
        "ColumnNotFound",
        "Train Model",
        "Column 'x' not found",
    )
    assert read.caused_by_input


def test_a_secret_in_the_details_is_not_repeated() -> None:
    details = envelope(
        "ModuleExecutionError",
        "FileDownloadFailed",
        "Train Model",
        "Error 0030: https://a/c/b.csv?sv=1&sig=abcdEFGH1234",
    )
    assert "abcdEFGH1234" not in str(job_failure(failed(details)))
