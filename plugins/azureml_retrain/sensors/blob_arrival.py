"""Wait until a run's window of training data has fully arrived in Azure Blob Storage.

Unlike ``WasbPrefixSensor``, which succeeds as soon as one blob exists, this sensor accepts a window
only when its blobs are complete and settled (enough files and bytes, none empty, the optional marker
present, unchanged for ``stable_for`` seconds), and it returns exactly which blobs (names, sizes,
etags) it accepted. The acceptance rules live in
:func:`azureml_retrain.triggers.blob_arrival.assess_arrival`, shared with the deferred trigger.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from azureml_retrain.exceptions import AzureMLRetrainError, ConfigurationError
from azureml_retrain.lazy import cached_property
from azureml_retrain.storage import storage_call, wasb_hook
from azureml_retrain.triggers.blob_arrival import (
    SYSTEM_CLOCK,
    ArrivalCriteria,
    Assessment,
    BlobArrivalTrigger,
    BlobInfo,
    Clock,
    Listing,
    Observation,
    WaitLog,
    accepted_result,
    assess_arrival,
    describe_error,
    error_kind,
    glob_to_regex,
    is_transient_error,
    server_time,
    unreadable_listing,
    utcnow,
    validate_container,
    validate_counts,
)
from azureml_retrain.windows import Window, resolve_window

if TYPE_CHECKING:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
    from airflow.sdk import Context
    from azure.storage.blob import ContainerClient

    from azureml_retrain.lineage import Lineage

#: Key under which reschedule-mode pokes remember their last observation in the task state store.
STATE_KEY = "blob_arrival_observation"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")
_WINDOW_PLACEHOLDERS = ("window_start", "window_end")


def format_with_window(template: str, window: Window, argument: str) -> str:
    """Replace ``{window_start}``/``{window_end}`` placeholders, with an optional strftime format.

    ``incoming/{window_start:%Y-%m-%d}/`` becomes ``incoming/2026-11-26/``; a bare ``{window_end}`` becomes
    the ISO 8601 form. Other ``{name}`` placeholders are rejected (a typo would otherwise make the sensor
    wait for a path that never exists).

    :raise ConfigurationError: naming ``argument`` on an unknown placeholder
    """

    def substitute(match: re.Match[str]) -> str:
        name, spec = match.group(1), match.group(2)
        if name not in _WINDOW_PLACEHOLDERS:
            raise ConfigurationError(
                f"{argument}: unknown placeholder {{{name}}} in {template!r}; "
                "only {window_start} and {window_end} (optionally with a strftime format, e.g. "
                "{window_start:%Y-%m-%d}) are available"
            )
        value: datetime = window.start if name == "window_start" else window.end
        return value.strftime(spec) if spec else value.isoformat()

    return _PLACEHOLDER.sub(substitute, template)


def window_criteria(
    window: Window,
    *,
    container: str,
    prefix: str,
    pattern: str | None = None,
    marker: str | None = None,
    argument_prefix: str = "",
    **limits: Any,
) -> ArrivalCriteria:
    """The criteria of ``window``: the placeholders of ``prefix``, ``pattern`` and ``marker`` filled
    in (errors name them after ``argument_prefix``, e.g. ``data.``); ``limits`` are the remaining
    :class:`ArrivalCriteria` fields (``min_files``, ``stable_for`` ...)."""
    return ArrivalCriteria(
        container=container.strip(),
        prefix=format_with_window(prefix, window, f"{argument_prefix}prefix"),
        window_start=window.start,
        window_end=window.end,
        pattern=format_with_window(pattern, window, f"{argument_prefix}pattern") if pattern else None,
        marker=format_with_window(marker, window, f"{argument_prefix}marker") if marker else None,
        **limits,
    )


# Arguments renamed to the names Airflow's Azure provider uses (``WasbPrefixSensor``): old name -> new name.
RENAMED_ARGUMENTS = {"container": "container_name"}


def renamed_argument(value: str | None, old_name: str, old_value: str | None) -> str | None:
    """``value`` of a renamed argument, else what was passed under its old name (with a deprecation warning)."""
    new_name = RENAMED_ARGUMENTS[old_name]
    if old_value is None:
        return value
    if value is not None:
        raise ConfigurationError(f"{old_name} is the deprecated name of {new_name}: pass only {new_name}")
    from airflow.exceptions import AirflowProviderDeprecationWarning

    warnings.warn(
        f"BlobArrivalSensor: {old_name}= is deprecated, use {new_name}= (as WasbPrefixSensor does)",
        AirflowProviderDeprecationWarning,
        stacklevel=3,
    )
    return old_value


class BlobArrivalSensor(BaseSensorOperator):
    """Wait until the run's window of data has arrived, completely and stably, under a blob prefix.

    The run's window comes from :func:`azureml_retrain.windows.resolve_window`: the explicit
    ``window_start``/``window_end`` arguments, else the run's ``window`` param (``<start>/<end>``),
    else a non-empty data interval, else the latest complete interval of the DAG's schedule before the
    run (so manual runs without a logical date work). ``prefix``, ``pattern`` and ``marker`` may use
    ``{window_start}``/``{window_end}`` placeholders with a strftime format
    (``incoming/{window_start:%Y-%m-%d}/``) on top of Jinja.

    Accepts when (see :func:`azureml_retrain.triggers.blob_arrival.assess_arrival`): at least
    ``min_files`` blobs under the prefix match ``pattern``, none empty, totalling ``min_total_bytes``;
    the ``marker`` exists (if set) and is not older than the data; and nothing changed for
    ``stable_for`` seconds.

    Modes: deferrable pokes once, then defers to
    :class:`~azureml_retrain.triggers.blob_arrival.BlobArrivalTrigger` with an absolute deadline and what
    the poke observed; ``deferrable=False`` runs the usual poke loop (``mode="poke"`` or
    ``mode="reschedule"``). Either way the log gets a line when a check sees something new and a
    "still waiting" line every few minutes otherwise, not one per check (see
    :class:`~azureml_retrain.triggers.blob_arrival.WaitLog`). A credential the storage account
    refuses fails the task without retries, naming the connection and its field.

    :param container_name: blob container (templated), as in ``WasbPrefixSensor``
    :param container: deprecated name of ``container_name``
    :param prefix: folder of the window's blobs, e.g. ``incoming/{window_start:%Y-%m-%d}/`` (templated);
        only this prefix (narrowed by the literal start of ``pattern``) is ever listed
    :param pattern: glob matched against blob names relative to ``prefix`` (``*`` stays within a folder,
        ``**`` crosses folders, ``?``, ``[abc]``, ``[!abc]``); None selects every blob (templated)
    :param marker: name relative to ``prefix`` of a blob that must exist, e.g. ``_SUCCESS`` (templated)
    :param min_files: minimum number of selected blobs
    :param min_total_bytes: minimum total size in bytes of the selected blobs
    :param stable_for: how long (seconds or timedelta) the selection must stay unchanged
    :param ignore_empty_blobs: leave 0-byte blobs out of the selection instead of waiting for them
    :param window_start: explicit window start, ISO 8601 (templated); needs ``window_end``
    :param window_end: explicit window end, ISO 8601 (templated)
    :param fallback_schedule: cron expression (UTC) or timedelta used to derive a window when the run has
        none, instead of the DAG's schedule
    :param wasb_conn_id: the wasb connection (templated)
    :param deferrable: free the worker slot while waiting (default: Airflow's ``[operators]
        default_deferrable``); needs ``mode="poke"``
    :returns: the accepted data: ``{"container", "prefix", "window": {"start", "end"}, "blobs":
        [{"name", "etag", "size", "last_modified"}], "total_bytes", "marker"}`` (the rendered prefix,
        the window in ISO 8601, the marker blob like the others or None)
    :raises AirflowSensorTimeout: the data was not accepted within the sensor's ``timeout`` (with
        ``soft_fail=True`` the task is skipped instead)
    :raises ConfigurationError: an invalid argument (most are checked when the DAG is parsed), or the
        storage account refused the connection's credential; no retries
    :raises AzureMLRetrainError: a listing failed in a way another check cannot fix; retried
    """

    template_fields: Sequence[str] = (
        "container_name",
        "prefix",
        "pattern",
        "marker",
        "wasb_conn_id",
        "window_start",
        "window_end",
    )
    ui_color = "#cfe8fc"
    #: Where the poke path reads time (tests substitute a simulated one).
    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        container_name: str | None = None,
        prefix: str,
        pattern: str | None = None,
        marker: str | None = None,
        min_files: int = 1,
        min_total_bytes: int = 1,
        stable_for: timedelta | float = 60,
        ignore_empty_blobs: bool = False,
        window_start: str | datetime | None = None,
        window_end: str | datetime | None = None,
        fallback_schedule: str | timedelta | None = None,
        wasb_conn_id: str = "wasb_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=True),
        container: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.container_name = renamed_argument(container_name, "container", container)
        self.prefix = prefix
        self.pattern = pattern
        self.marker = marker
        self.min_files = min_files
        self.min_total_bytes = min_total_bytes
        self.stable_for = stable_for.total_seconds() if isinstance(stable_for, timedelta) else stable_for
        self.ignore_empty_blobs = ignore_empty_blobs
        self.window_start = window_start
        self.window_end = window_end
        self.fallback_schedule = fallback_schedule
        self.wasb_conn_id = wasb_conn_id
        self.deferrable = deferrable
        self._criteria: ArrivalCriteria | None = None
        self._observation: Observation | None = None
        self._wait_log: WaitLog | None = None
        self._checks = 0
        #: What this execution accepted (its return value), for the OpenLineage events.
        self._accepted: dict[str, Any] | None = None
        self._validate_arguments()

    def _validate_arguments(self) -> None:
        """Cheap checks at DAG parse time; templated values are checked again once rendered."""
        if not isinstance(self.container_name, str) or not self.container_name.strip():
            raise ConfigurationError(f"container_name: must be a non-empty container name, got {self.container_name!r}")
        if not _templated(self.container_name):
            validate_container(self.container_name, "container_name")
        if not isinstance(self.prefix, str):
            raise ConfigurationError(f"prefix: expected a string, got {type(self.prefix).__name__}")
        if self.pattern is not None and not _templated(self.pattern):
            glob_to_regex(self.pattern)
        if self.marker is not None and (not isinstance(self.marker, str) or not self.marker.strip()):
            raise ConfigurationError(f"marker: expected a blob name such as '_SUCCESS' or None, got {self.marker!r}")
        validate_counts(self.min_files, self.min_total_bytes, self.stable_for)
        if not isinstance(self.wasb_conn_id, str) or not self.wasb_conn_id:
            raise ConfigurationError(f"wasb_conn_id: must be a non-empty connection id, got {self.wasb_conn_id!r}")
        if isinstance(self.fallback_schedule, timedelta) and self.fallback_schedule <= timedelta(0):
            raise ConfigurationError(f"fallback_schedule: a timedelta must be positive, got {self.fallback_schedule}")
        if self.deferrable and self.mode == "reschedule":
            raise ConfigurationError(
                "mode='reschedule' needs deferrable=False: a deferrable sensor already frees its worker slot "
                "while waiting; choose one of the two"
            )

    # ----------------------------------------------------------------------------------------------
    # Execution
    # ----------------------------------------------------------------------------------------------

    def criteria(self, context: Context) -> ArrivalCriteria:
        """Resolve the run's window and the rendered arguments into the criteria to check (cached)."""
        if self._criteria is None:
            validate_container(self.container_name, "container_name")  # as rendered
            window = resolve_window(
                context, start=self.window_start, end=self.window_end, fallback_schedule=self.fallback_schedule
            )
            self._criteria = window_criteria(
                window,
                container=str(self.container_name),  # validated above
                prefix=self.prefix,
                pattern=self.pattern,
                marker=self.marker,
                min_files=self.min_files,
                min_total_bytes=self.min_total_bytes,
                stable_for=float(self.stable_for),
                ignore_empty_blobs=self.ignore_empty_blobs,
            )
            self.log.info(
                "Waiting for data in %s/%s (window %s -> %s, from %s; listing prefix %r)",
                self._criteria.container,
                self._criteria.prefix,
                window.start.isoformat(),
                window.end.isoformat(),
                window.source,
                self._criteria.list_prefix,
            )
        return self._criteria

    def execute(self, context: Context) -> Any:
        self._criteria, self._observation, self._wait_log, self._checks = None, None, None, 0
        self._accepted = None
        criteria = self.criteria(context)
        if not self.deferrable:
            self._accepted = super().execute(context)
            return self._accepted
        waiting_since = time.time()
        end_time = waiting_since + self.timeout
        assessment = self.check(criteria, previous=None)
        if assessment is not None and assessment.ready:
            self._accepted = assessment.result
            return assessment.result
        self.defer(
            trigger=BlobArrivalTrigger.from_criteria(
                criteria,
                end_time=end_time,
                wasb_conn_id=self.wasb_conn_id,
                poll_interval=max(float(self.poke_interval), 0.01),
                observation=assessment.observation if assessment else None,
                # Accepted data ends the task in the triggerer: no worker run just to return it.
                finish_task=True,
                waiting_since=waiting_since,
            ),
            method_name="execute_complete",
            # A backstop only: the trigger itself yields a timeout event at end_time.
            timeout=timedelta(seconds=self.timeout + max(float(self.poke_interval), 1.0) * 2 + 60),
        )
        return None  # pragma: no cover - defer() raises

    def poke(self, context: Context) -> PokeReturnValue:
        criteria = self.criteria(context)
        store = context.get("task_state_store") if self.reschedule else None
        previous = self._observation if store is None else self._load_observation(store, criteria)
        assessment = self.check(criteria, previous=previous)
        if assessment is None:
            return PokeReturnValue(is_done=False)
        self._observation = assessment.observation
        if store is not None and not assessment.ready:
            self._save_observation(store, criteria, assessment.observation)
        return PokeReturnValue(is_done=assessment.ready, xcom_value=assessment.result)

    def execute_complete(self, context: Context, event: dict[str, Any] | str | None = None) -> dict[str, Any]:
        """Resume after the trigger: return the accepted blobs, or fail with the trigger's message."""
        if event == "success":
            # Only ``airflow dags test`` resumes a task its trigger already ended (the bare payload of
            # the TaskSuccessEvent): the data was accepted, so one more check returns it.
            assessment = self.check(self.criteria(context), previous=None)
            if assessment is None or not assessment.ready or assessment.result is None:
                raise AzureMLRetrainError(f"Task {self.task_id}: the data the trigger accepted is no longer complete")
            self._accepted = assessment.result
            return assessment.result
        if not isinstance(event, dict) or "status" not in event:
            raise AzureMLRetrainError(f"Task {self.task_id}: did not receive a valid event from the triggerer")
        if event["status"] == "success":
            result = accepted_result(event)
            self.log.info(
                "Accepted %d blob(s), %s bytes in %s/%s",
                len(result["blobs"] or []),
                result["total_bytes"],
                result["container"],
                result["prefix"],
            )
            self._accepted = result
            return result
        message = str(event.get("message", "no message"))
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(f"Task {self.task_id}: {message}")
        if event.get("fatal"):  # a refused credential: retries would be refused too
            raise ConfigurationError(f"Task {self.task_id}: {message}")
        raise AzureMLRetrainError(f"Task {self.task_id}: {message}")

    def check(self, criteria: ArrivalCriteria, previous: Observation | None) -> Assessment | None:
        """List and assess once; None after a transient listing error (the next check retries).

        :raise ConfigurationError: the storage account refused the connection's credential
        """
        where = f"{criteria.container}/{criteria.list_prefix}"
        if self._wait_log is None:
            now = self.clock.time()
            self._wait_log = WaitLog(waiting_since=now, deadline=now + self.timeout, clock=self.clock)
        self._checks += 1
        try:
            with storage_call(self.wasb_conn_id, f"listing {where}"):
                listing = list_blobs_sync(self.hook, criteria.container, criteria.list_prefix)
        except Exception as error:
            if not is_transient_error(error):
                raise
            failure = describe_error(error)
            self._wait_log.report(
                self.log,
                self._checks,
                error_kind(error),
                line=f"transient error listing {where}, retrying at the next poke: {failure}",
                summary=f"the listing keeps failing ({failure})",
                level=logging.WARNING,
            )
            return None
        assessment = assess_arrival(criteria, listing, now=listing.server_time or utcnow(), previous=previous)
        line = f"{assessment.reason} ({len(listing.blobs)} listed)"
        if assessment.ready:
            self.log.info("Check #%d: %s", self._checks, line)
        else:
            self._wait_log.report(self.log, self._checks, assessment.reason, line=line, summary=assessment.summary)
        return assessment

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """The accepted blobs (names as the OpenLineage spec names Azure Blob Storage) as inputs."""
        from azureml_retrain.blobs import BlobLocation
        from azureml_retrain.lineage import blob_dataset, operator_lineage
        from azureml_retrain.storage import StorageAccount

        accepted = self._accepted or {}
        account = StorageAccount(self.wasb_conn_id).account_name
        return operator_lineage(
            inputs=[
                blob_dataset(account, BlobLocation(str(accepted["container"]), str(blob["name"])))
                for blob in accepted.get("blobs") or ()
            ]
        )

    @cached_property
    def hook(self) -> WasbHook:
        """The sync hook, built at run time and reused across pokes of one execution."""
        return wasb_hook(self.wasb_conn_id)

    def _load_observation(self, store: Any, criteria: ArrivalCriteria) -> Observation | None:
        try:
            stored = store.get(STATE_KEY)
        except Exception as error:
            self.log.warning("Could not read the task state store (%s); judging by last_modified only", error)
            return None
        if not isinstance(stored, dict) or stored.get("criteria") != criteria.key():
            return None
        return Observation.from_json(stored)

    def _save_observation(self, store: Any, criteria: ArrivalCriteria, observation: Observation) -> None:
        try:
            store.set(STATE_KEY, {**observation.to_json(), "criteria": criteria.key()})
        except Exception as error:
            self.log.warning("Could not write the task state store (%s); judging by last_modified only", error)


def list_blobs_sync(hook: WasbHook, container: str, prefix: str) -> Listing:
    """List every blob under ``prefix`` (flat) with the hook's client; ``ContainerNotFound`` is a result.

    The service filters by ``name_starts_with``, so only blobs under the prefix are ever transferred.
    """
    from azure.core.exceptions import DecodeError, ResourceNotFoundError

    dates: list[str | None] = []

    def on_response(response: Any) -> None:
        dates.append(response.http_response.headers.get("Date"))

    # WasbHook types its cached client as sync-or-async; the sync hook always builds a sync one.
    container_client = cast("ContainerClient", hook.blob_service_client.get_container_client(container))
    try:
        items = list(container_client.list_blobs(name_starts_with=prefix, raw_response_hook=on_response))
    except ResourceNotFoundError as error:
        if getattr(error, "error_code", None) != "ContainerNotFound":
            raise
        return Listing((), server_time(dates), len(dates), container_exists=False)
    except (AttributeError, DecodeError) as error:
        # A 200 whose body is not a listing: the SDK's page parser fails on it (only SDK code runs here).
        raise unreadable_listing(container, prefix, error) from error
    return Listing(tuple(BlobInfo.from_properties(item) for item in items), server_time(dates), len(dates))


def _templated(value: str) -> bool:
    return "{{" in value or "{%" in value
