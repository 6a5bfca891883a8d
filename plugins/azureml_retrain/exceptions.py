"""Errors raised by the azureml_retrain package.

Every message names what was being done, on which resource, and how to fix it; none carries a key,
a SAS signature or a connection string.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class AzureMLRetrainError(AirflowException):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(AzureMLRetrainError, AirflowFailException, ValueError):
    """A user-supplied argument, parameter or connection field is wrong; the message names it.

    The task fails without Airflow's retries: the same input fails the same way until someone fixes it.
    """


class AzureMLServiceError(AzureMLRetrainError):
    """A service answered with an error (after retries, where the error was retryable)."""

    def __init__(
        self,
        operation: str,
        resource: str,
        *,
        status: int | None,
        code: str | None,
        message: str,
        detail_codes: tuple[str, ...] = (),
    ) -> None:
        self.operation = operation
        self.resource = resource
        self.status = status
        self.code = code
        self.message = message
        self.detail_codes = detail_codes
        codes = "/".join(c for c in (code, *detail_codes) if c) or "no error code"
        status_text = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{operation} failed for {resource}: {status_text} {codes}: {message}")


class AzureMLRequestRejectedError(AzureMLServiceError, AirflowFailException):
    """The service rejected the request itself (a 4xx other than 408 Request Timeout and 429 Too Many
    Requests: a bad argument, a refused key, a missing resource).

    The task fails without Airflow's retries: the same request is rejected the same way.
    """


class BesJobFailedError(AzureMLRetrainError):
    """The BES job ended Failed or Cancelled; the message carries the job's Details."""


class BesJobInputError(BesJobFailedError, AirflowFailException):
    """The BES job failed because of its input data or parameters (a Studio module error).

    The task fails without Airflow's retries: another job on the same input fails the same way, and
    each job is paid for.
    """


class BesJobRejectedError(BesJobFailedError, AirflowFailException):
    """The trigger following the job met an error a retry cannot help with (a rejected request, a
    configuration error); the message says which. The task fails without Airflow's retries."""


class EvaluationError(AzureMLRetrainError):
    """The evaluation results cannot be read or judged (missing column, NaN, empty file, ...)."""


class PromotionVerificationError(AzureMLRetrainError):
    """A promotion was sent but reading the target back does not show the new model serving."""


class PromotionBatchError(AzureMLRetrainError):
    """Some targets of a batch promotion failed (the others were promoted); the message names each
    failed target with its error. Retried: a retry redoes only the failed targets."""


class PromotionBatchRejectedError(PromotionBatchError, AirflowFailException):
    """Every failed target of a batch promotion failed in a way a retry cannot help with (a
    configuration error, a rejected request, a refusal with ``on_refusal="fail"``); no retries."""
