"""The one HTTP request path shared by every Azure ML hook, with the one retry policy.

Retried: connection errors, timeouts, 408, 429 (honouring ``Retry-After``), 500/502/503/504 and a 2xx
body that is not the JSON we asked for; with capped exponential backoff and jitter. Any other 4xx
fails at once with the service's error code and message, as an error that also fails the task
without Airflow's retries (:class:`AzureMLRequestRejectedError`). A call that is not idempotent (BES submit)
is retried only where the service cannot have acted on it: a connection that was never made (told
apart by the types of the errors, :func:`connection_failure_stage`), 429 and 503. A TLS certificate
the client refuses fails at once.

The loop is ours rather than urllib3's ``Retry`` or tenacity: it needs per-call idempotency (a
submit's reset is final, a read's is not), a ceiling on ``Retry-After`` past which Airflow's task
retry takes over instead of a sleeping worker, and a final error built from the service's envelope.
"""

from __future__ import annotations

import copy
import email.utils
import enum
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self

from airflow.sdk import BaseHook

from azureml_retrain.exceptions import (
    AzureMLRequestRejectedError,
    AzureMLRetrainError,
    AzureMLServiceError,
    ConfigurationError,
)
from azureml_retrain.lazy import cached_property
from azureml_retrain.redaction import mask_once, redact, strip_query

if TYPE_CHECKING:
    # Imported where used: DAG files import the operators, hence this module, at every parse.
    import requests
    import requests.adapters

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The 4xx answers that say "not now" rather than "not this request": a later try may succeed.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
# Statuses that say the request was refused before the service acted on it.
NOT_PROCESSED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one HTTP call is retried."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    # A Retry-After longer than this is not honoured: the call fails and Airflow's task retry,
    # not a sleeping worker, takes over.
    max_retry_after: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): capped exponential, "equal jitter"."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(
    operation: str, resource: str, response: requests.Response, *, refused_credential: str | None = None
) -> AzureMLServiceError:
    """Build the error for a failed ``requests`` response from the service's error envelope."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_body(
        operation,
        resource,
        response.status_code,
        body,
        text=response.text,
        reason=response.reason,
        refused_credential=refused_credential,
    )


def error_from_body(
    operation: str,
    resource: str,
    status: int,
    body: Any,
    *,
    text: str | None,
    reason: str | None,
    refused_credential: str | None = None,
    retryable_client_errors: frozenset[int] = RETRYABLE_CLIENT_ERRORS,
) -> AzureMLServiceError:
    """Build the error for a failed response from its parsed body (``None`` if not JSON) and text.

    Every plane answers ``{"error": {"code", "message", "details": [{"code", "message"}]}}``; the
    OAuth2 authority ``{"error", "error_description"}``. A 401 or 403 also names the credential that
    was refused (``refused_credential``: which connection, which field), never its value. A 4xx not in
    ``retryable_client_errors`` is an :class:`AzureMLRequestRejectedError` (no task retry).
    """
    code: str | None = None
    message = ""
    detail_codes: tuple[str, ...] = ()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "") or None
        message = str(error.get("message") or "")
        details = error.get("details")
        if isinstance(details, list):
            detail_codes = tuple(str(d.get("code")) for d in details if isinstance(d, dict) and d.get("code"))
            detail_messages = [str(d.get("message")) for d in details if isinstance(d, dict) and d.get("message")]
            if detail_messages and not message:
                message = "; ".join(detail_messages)
            elif detail_messages:
                message = f"{message} ({'; '.join(detail_messages)})"
    elif isinstance(body, dict) and "error_description" in body:  # OAuth2 authority
        code = str(body.get("error") or "") or None
        message = str(body.get("error_description") or "")
    if not message:
        message = (text or reason or "").strip()[:500] or "no error message in the response"
    if status in (401, 403) and refused_credential:
        message = f"{message} (refused: {refused_credential})"
    rejected = 400 <= status < 500 and status not in retryable_client_errors
    error_type = AzureMLRequestRejectedError if rejected else AzureMLServiceError
    return error_type(
        operation,
        resource,
        status=status,
        code=code,
        message=redact(message),
        detail_codes=detail_codes,
    )


def expect_object(operation: str, resource: str, body: Any) -> dict[str, Any]:
    """A response body that must be a JSON object (an empty body reads as ``{}``)."""
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise AzureMLServiceError(
            operation,
            resource,
            status=200,
            code="MalformedResponse",
            message=f"expected a JSON object, got {type(body).__name__}",
        )
    return dict(body)


def expect_objects(operation: str, resource: str, body: Any) -> list[dict[str, Any]]:
    """A response body that must be a JSON array of objects (an empty body reads as ``[]``)."""
    if body is None:
        return []
    if not isinstance(body, list) or not all(isinstance(item, Mapping) for item in body):
        raise AzureMLServiceError(
            operation,
            resource,
            status=200,
            code="MalformedResponse",
            message=f"expected a JSON array of objects, got {type(body).__name__}",
        )
    return [dict(item) for item in body]


# Connections kept open per host by the shared adapter: one per thread of the triggers' pool
# (triggers/blocking.py), so none waits for a connection and none is opened twice.
POOL_MAXSIZE = 32
_shared_adapters: dict[int, requests.adapters.HTTPAdapter] = {}
_shared_adapters_lock = threading.Lock()


def shared_adapter() -> requests.adapters.HTTPAdapter:
    """The process's one ``requests`` transport, which every hook's session uses.

    A triggerer follows hundreds of jobs, each with its own hook: with a transport per hook each held
    its own pools, an idle keep-alive connection per host and, over TLS, a context with the CA bundle
    loaded. The pools are keyed by host and TLS settings (``verify`` is passed per request), so hooks
    with different CA bundles or timeouts still get their own connections; the credentials are
    headers of each request, not of the transport. One per process id: a forked child opens its own.
    """
    import os

    from requests.adapters import HTTPAdapter

    pid = os.getpid()
    with _shared_adapters_lock:
        adapter = _shared_adapters.get(pid)
        if adapter is None:
            _shared_adapters.clear()
            adapter = _shared_adapters[pid] = HTTPAdapter(pool_maxsize=POOL_MAXSIZE)
        return adapter


class AzureMLBaseHook(BaseHook):
    """Base of the Azure ML hooks: the connection, its extras, and the retry and timeout settings.

    Subclasses say how they reach the service: :class:`AzureMLHttpHook` over ``requests`` with this
    module's retry loop, the Resource Manager hook over azure-core's pipeline. The connection is read
    at first use; its secret is masked in logs and never put in an error message.

    :param conn_id: the Airflow connection to use.
    :param retry_policy: attempts and backoff of one call; None: from the connection's extras
        ``max_attempts``, ``retry_base_delay`` and ``retry_max_delay`` (else 5 attempts, 1 s doubling
        up to 30 s).
    :param sleep: how the hook waits between attempts and polls (tests pass a fake clock's).
    :param ca_bundle: a CA file to trust for TLS instead of the system's (e.g. the local emulator's
        certificate); None: the connection's ``ca_bundle`` extra, else the system's.
    """

    conn_name_attr: ClassVar[str] = "conn_id"
    default_timeout: ClassVar[tuple[float, float]] = (10.0, 60.0)
    # What a 401/403 says to check: the connection field that holds the credential.
    credential_field: ClassVar[str] = "Password"
    # Extras read under an older or alternative name of a field of the connection form (not shown in
    # the form): extra -> the field it stands for. Every other extra a hook reads is a form field.
    extra_aliases: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        conn_id: str,
        *,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        ca_bundle: str | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self._retry_policy = retry_policy
        self._sleep = sleep
        self._ca_bundle = ca_bundle

    # --- connection ------------------------------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        conn = self.get_connection(self.conn_id)
        if conn.password:
            mask_once(conn.password)
        return conn

    def sibling(self) -> Self:
        """This hook for another thread of the same task: the connection is read once and shared
        (one lookup and one secret registration for a batch, not one per target), and whatever else
        this hook has built and may share; an HTTP session is each thread's own."""
        self.connection  # noqa: B018  (read now, so that every sibling shares it)
        twin = copy.copy(self)
        twin.__dict__.pop("session", None)
        return twin

    @cached_property
    def extras(self) -> dict[str, Any]:
        extra = self.connection.extra_dejson
        return dict(extra) if isinstance(extra, Mapping) else {}

    def require(self, value: Any, field: str, hint: str) -> Any:
        """Return a required connection field or fail naming it and how to set it."""
        if value in (None, ""):
            raise ConfigurationError(f"Connection '{self.conn_id}': {field} is required ({hint}).")
        return value

    @property
    def refused_credential(self) -> str:
        """How an error names the credential a service refused (no value, only where it comes from)."""
        return f"the {self.credential_field} of connection '{self.conn_id}'"

    @cached_property
    def connection_verify(self) -> str | bool:
        """What TLS certificates to trust: a CA file (argument, else the ``ca_bundle`` extra), else the system's."""
        ca_bundle = self._ca_bundle or self.extras.get("ca_bundle")
        return str(ca_bundle) if ca_bundle else True

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        if self._retry_policy is not None:
            return self._retry_policy
        extras = self.extras
        try:
            return RetryPolicy(
                max_attempts=int(extras.get("max_attempts", RetryPolicy.max_attempts)),
                base_delay=float(extras.get("retry_base_delay", RetryPolicy.base_delay)),
                max_delay=float(extras.get("retry_max_delay", RetryPolicy.max_delay)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"Connection '{self.conn_id}': max_attempts / retry_base_delay / retry_max_delay must be numbers"
            ) from exc

    # --- connection test ---------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated call (:meth:`probe`), as Airflow's "Test" button does.

        Returns ``(True, what the service said)`` or ``(False, why not)``; never raises. One attempt
        (a test answers at once); the message names the connection's fields, never a secret.
        """
        cached_before = set(self.__dict__)
        try:
            self.__dict__["retry_policy"] = replace(self.retry_policy, max_attempts=1)
            return True, self._without_secrets(self.probe())
        except Exception as exc:
            message = str(exc) if isinstance(exc, AzureMLRetrainError) else f"{type(exc).__name__}: {exc}"
            return False, self._without_secrets(message)
        finally:
            # Later calls of this hook retry as configured: forget the policy and what was built with it.
            for name in ("retry_policy", "client"):
                if name not in cached_before:
                    self.__dict__.pop(name, None)

    def probe(self) -> str:
        """One cheap authenticated read; what it found. Raises when the service refused it."""
        raise NotImplementedError

    def _without_secrets(self, message: str) -> str:
        message = redact(message)
        secret = self.connection.password if "connection" in self.__dict__ else None
        for value in (secret, getattr(self, "_api_key", None)):
            if value:
                message = message.replace(str(value), "***")
        return message

    @cached_property
    def timeout(self) -> tuple[float, float]:
        connect, read = self.default_timeout
        try:
            return (
                float(self.extras.get("connect_timeout", connect)),
                float(self.extras.get("read_timeout", read)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"Connection '{self.conn_id}': connect_timeout / read_timeout must be numbers of seconds"
            ) from exc


class AzureMLHttpHook(AzureMLBaseHook):
    """An Azure ML hook over ``requests``: the request method and its retry policy.

    Subclasses say how to authenticate (:meth:`auth_headers`) and which connection fields they need.
    """

    @cached_property
    def session(self) -> requests.Session:
        """This hook's session (its headers and cookies), on the process's shared connection pools."""
        import requests

        session = requests.Session()
        session.headers["User-Agent"] = "azureml-retrain-airflow"
        adapter = shared_adapter()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def get_conn(self) -> requests.Session:
        return self.session

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    # --- the request method ----------------------------------------------------------------

    def request(
        self,
        operation: str,
        resource: str,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool = True,
        expect_json: bool = True,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """Send one logical call, retrying per the policy; return the successful response.

        ``operation`` and ``resource`` name the call in logs and errors ("submit BES job",
        "service .../services/abc"). ``ok_statuses`` are non-2xx statuses the caller handles (e.g.
        304 from refresh). A 2xx whose body is not JSON counts as a transient failure when
        ``expect_json``.
        """
        import requests

        policy = self.retry_policy
        attempt = 0
        while True:
            attempt += 1
            response: requests.Response | None = None
            outcome: _Outcome | None
            try:
                # ``verify`` per request: requests lets REQUESTS_CA_BUNDLE override a session's.
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers=self.auth_headers(),
                    timeout=self.timeout,
                    verify=self.connection_verify,
                )
            except requests.RequestException as exc:
                outcome = self._classify_exception(exc, idempotent=idempotent)
            else:
                outcome = _classify_response(response, idempotent=idempotent, expect_json=expect_json, ok=ok_statuses)
                if outcome is None:
                    return response
            if (
                not outcome.retryable
                or attempt >= policy.max_attempts
                or (outcome.retry_after is not None and outcome.retry_after > policy.max_retry_after)
            ):
                raise self._final_error(
                    operation, resource, response, outcome, f"{attempt} attempt(s) to {method} {strip_query(url)}"
                )
            delay = outcome.retry_after if outcome.retry_after is not None else policy.backoff(attempt)
            self.log.warning(
                "%s for %s: %s; retry %d/%d in %.1fs",
                operation,
                resource,
                outcome.failure,
                attempt,
                policy.max_attempts - 1,
                delay,
            )
            self._sleep(delay)

    def _classify_exception(self, exc: requests.RequestException, *, idempotent: bool) -> _Outcome:
        import requests

        failure = f"{type(exc).__name__}: {redact(str(exc))[:300]}"
        stage = connection_failure_stage(exc)
        if stage is ConnectionFailureStage.CERTIFICATE:
            # The same certificate is refused on every attempt: fail now, saying what to change.
            return _Outcome(
                f"{failure} (the service's TLS certificate is not trusted: set the connection's CA bundle, "
                "or fix the host name)",
                retryable=False,
            )
        if stage is ConnectionFailureStage.NOT_SENT:
            return _Outcome(failure, retryable=True)  # never reached the service: always safe to try again
        if isinstance(exc, requests.Timeout):
            return _Outcome(f"{type(exc).__name__} after {self.timeout[1]:g}s", retryable=idempotent)
        if isinstance(exc, requests.ConnectionError):
            # Reset or dropped after sending: the service may have acted on the call.
            return _Outcome(failure, retryable=idempotent)
        return _Outcome(failure, retryable=False)

    def _final_error(
        self, operation: str, resource: str, response: requests.Response | None, outcome: _Outcome, attempts: str
    ) -> AzureMLServiceError:
        if response is None:
            return AzureMLServiceError(
                operation,
                resource,
                status=None,
                code="ConnectionFailed",
                message=f"{outcome.failure} (after {attempts})",
            )
        if 200 <= response.status_code < 300:
            return AzureMLServiceError(
                operation,
                resource,
                status=response.status_code,
                code="MalformedResponse",
                message=f"{outcome.failure} (after {attempts})",
            )
        return error_from_response(operation, resource, response, refused_credential=self.refused_credential)

    def request_json(self, operation: str, resource: str, method: str, url: str, **kwargs: Any) -> Any:
        response = self.request(operation, resource, method, url, **kwargs)
        return response.json() if response.content else None


@dataclass(frozen=True)
class _Outcome:
    """Why an attempt did not succeed, and whether another attempt may."""

    failure: str
    retryable: bool
    retry_after: float | None = None


def _classify_response(
    response: requests.Response, *, idempotent: bool, expect_json: bool, ok: frozenset[int]
) -> _Outcome | None:
    """None when the response is the success the caller wants."""
    status = response.status_code
    if status in ok:
        return None
    if 200 <= status < 300:
        if not expect_json or _is_json(response):
            return None
        return _Outcome(f"HTTP {status} with a body that is not JSON", retryable=True)
    if status in RETRYABLE_STATUSES:
        return _Outcome(
            f"HTTP {status}",
            retryable=idempotent or status in NOT_PROCESSED_STATUSES,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    return _Outcome(f"HTTP {status}", retryable=False)


def _is_json(response: requests.Response) -> bool:
    if not response.content:
        return True  # an empty 2xx body is a valid "nothing to say"
    try:
        json.loads(response.content)
    except ValueError:
        return False
    return True


class ConnectionFailureStage(enum.Enum):
    """How far a failed request got, which decides whether the service may have acted on it."""

    NOT_SENT = "not sent"  # no connection was made: name resolution, refused, connect timeout, proxy
    CERTIFICATE = "certificate refused"  # not sent either, and the same on every attempt
    POSSIBLY_SENT = "possibly sent"  # the connection failed after (part of) the request was written


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: requests keeps urllib3's error in ``args``, urllib3 its cause in ``reason``."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        linked = [current.__cause__, current.__context__, reason, *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def connection_failure_stage(exc: BaseException) -> ConnectionFailureStage:
    """Classify a failed request by the types of the errors it wraps (never by their text).

    Name resolution, a refused or unreachable connection, a connect timeout and a failed connection
    to a proxy all fail before a byte of the request is written; anything else (a reset, a dropped
    connection, a read timeout) may come after the service received it. A TLS error other than a
    refused certificate counts as possibly sent: urllib3 raises the same type for a failed handshake
    and for a connection that broke while the answer was read.
    """
    import socket
    import ssl

    from urllib3.exceptions import ConnectTimeoutError, ProxyError

    chain = list(exception_chain(exc))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return ConnectionFailureStage.CERTIFICATE
    # NewConnectionError and NameResolutionError are ConnectTimeoutErrors in urllib3 2.
    not_sent = (ConnectTimeoutError, ProxyError, socket.gaierror, ConnectionRefusedError)
    if any(isinstance(e, not_sent) for e in chain):
        return ConnectionFailureStage.NOT_SENT
    return ConnectionFailureStage.POSSIBLY_SENT
