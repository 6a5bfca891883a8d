"""Data-arrival trigger, and the acceptance rules it shares with ``BlobArrivalSensor``.

What counts as "the window's data has arrived" is decided in exactly one place, the pure function
:func:`assess_arrival`, called by the sensor's synchronous ``poke`` and by this module's async trigger.
The rules, in order:

1. **Selection.** Blobs whose name starts with ``prefix`` and whose remainder matches ``pattern`` (a
   glob, see :func:`glob_to_regex`; no pattern = everything under the prefix). The marker blob and
   directory placeholders (names ending in ``/``) are never data.
2. **Completeness.** At least ``min_files`` selected blobs and ``min_total_bytes`` bytes in total.
   A selected blob of 0 bytes means "not ready" (an upload that created the blob but has not written
   it yet) unless ``ignore_empty_blobs`` is set, in which case empty blobs are left out.
3. **Marker.** When ``marker`` is set (a name relative to the prefix, e.g. ``_SUCCESS``), it must
   exist, and no selected blob may be newer than it (data rewritten after the producer signed off
   means a new delivery is in progress).
4. **Stability** ("upload finished"): the selection (names, sizes and etags, plus the marker) must be
   unchanged for ``stable_for`` seconds (0 turns the rule off, e.g. when a marker is trusted). Azure
   updates a blob's ``Last-Modified`` on every committed write (put blob, put block list, append,
   page write, metadata), and uncommitted blocks are not listed at all, so ``newest last_modified +
   1 s`` (the listing has 1-second resolution) is a lower bound of "unchanged since" that needs no
   memory: it works the same for the first poke, after a reschedule, a retry or a triggerer restart.
   Its one blind spot is deletions (a blob removed from the selection leaves no timestamp), so a check
   that *remembers* the previous selection (:class:`Observation`: a fingerprint of names/sizes/etags
   and when it last changed) also resets the clock when the fingerprint differs. That memory is
   carried from the sensor's first poke into the trigger's kwargs, kept in memory between pokes, and
   in reschedule mode kept in the task state store when available. "Now" is the storage service's
   clock (the ``Date`` header of the listing response) when it is known, so a skewed worker clock
   cannot shorten the wait.

The listing is always done with the narrowest literal prefix: ``prefix`` plus the part of ``pattern``
before its first wildcard (and, with a marker, the common prefix of that and the marker's name), so the
cost of a check does not grow with blobs outside the window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from azureml_retrain.exceptions import AzureMLRetrainError, ConfigurationError
from azureml_retrain.storage import is_refused_credential, refused_credential_error_async
from azureml_retrain.windows import parse_datetime

if TYPE_CHECKING:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook
    from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

#: ``Last-Modified`` in a listing is truncated to whole seconds.
LAST_MODIFIED_RESOLUTION = timedelta(seconds=1)
#: While nothing changes, at most this long between two lines of a waiting check's log (the heartbeat).
HEARTBEAT_SECONDS = 300.0
#: The keys of the sensor's XCom return value (and of a success event, besides ``status``).
RESULT_KEYS = ("container", "prefix", "window", "blobs", "total_bytes", "marker")

_GLOB_SPECIALS = "*?["
_CONTAINER_NAME = re.compile(r"^(?:[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}|\$root|\$logs|\$web)$")
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_SECRET_PARAMS = re.compile(r"(?i)\b(sig|AccountKey|SharedAccessSignature|sv|se|sp|skoid|sktid)=[^&;\s\"']+")


# --------------------------------------------------------------------------------------------------
# Pure data and rules (no I/O)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobInfo:
    """What a listing says about one blob: enough to pin exactly the bytes that were accepted."""

    name: str
    size: int
    etag: str
    last_modified: datetime

    @classmethod
    def from_properties(cls, properties: Any) -> BlobInfo:
        """Build from an ``azure.storage.blob.BlobProperties`` (sync or aio listing item)."""
        return cls(
            name=str(properties.name),
            size=int(properties.size or 0),
            etag=str(properties.etag or ""),
            last_modified=_aware(properties.last_modified),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "etag": self.etag,
            "size": self.size,
            "last_modified": self.last_modified.isoformat(),
        }


@dataclass(frozen=True)
class Listing:
    """One enumeration of the blobs under a prefix.

    :param blobs: every item the service returned (what a check costs)
    :param server_time: the service's clock at the first response (``Date`` header), when known
    :param requests: how many list requests (pages) were made
    :param container_exists: False when the service answered ``ContainerNotFound``
    """

    blobs: tuple[BlobInfo, ...]
    server_time: datetime | None = None
    requests: int = 1
    container_exists: bool = True


@dataclass(frozen=True)
class Observation:
    """What a previous check saw: the selection's fingerprint and when it was last seen to change.

    ``changed_at`` is None when no change has been witnessed (only ``last_modified`` then counts).
    """

    fingerprint: str
    changed_at: datetime | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "fingerprint": self.fingerprint,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
        }

    @classmethod
    def from_json(cls, value: object) -> Observation | None:
        """Parse :meth:`to_json` output; anything else (None, a foreign shape) is "no memory"."""
        if not isinstance(value, dict) or not isinstance(value.get("fingerprint"), str):
            return None
        return cls(value["fingerprint"], parse_datetime(value.get("changed_at"), "observation.changed_at"))


@dataclass(frozen=True)
class ArrivalCriteria:
    """What to wait for: where to look, what to select, and when the selection counts as complete.

    All values are already rendered (no Jinja, no ``{window_start}`` placeholders left).
    """

    container: str
    prefix: str
    window_start: datetime
    window_end: datetime
    pattern: str | None = None
    marker: str | None = None
    min_files: int = 1
    min_total_bytes: int = 1
    stable_for: float = 60.0
    ignore_empty_blobs: bool = False
    _matcher: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        validate_container(self.container)
        if not isinstance(self.prefix, str):
            raise ConfigurationError(f"prefix: expected a string, got {type(self.prefix).__name__}")
        if self.marker is not None and (not self.marker or any(c in self.marker for c in _GLOB_SPECIALS)):
            raise ConfigurationError(
                f"marker: expected a literal blob name relative to the prefix (e.g. '_SUCCESS'), got {self.marker!r}"
            )
        validate_counts(self.min_files, self.min_total_bytes, self.stable_for)
        if self.window_end <= self.window_start:
            raise ConfigurationError("window_end must be after window_start")
        object.__setattr__(self, "_matcher", glob_to_regex(self.pattern) if self.pattern else None)
        if not self.list_prefix:
            raise ConfigurationError(
                "prefix: must not be empty (together with the literal start of pattern): every check would list "
                "the whole container. Use a folder such as 'incoming/{window_start:%Y-%m-%d}/'."
            )

    @property
    def marker_name(self) -> str | None:
        return f"{self.prefix}{self.marker}" if self.marker else None

    @property
    def list_prefix(self) -> str:
        """The narrowest literal prefix that still covers every selectable blob and the marker."""
        data_prefix = self.prefix + (literal_prefix(self.pattern) if self.pattern else "")
        if self.marker_name is None:
            return data_prefix
        common = 0
        for a, b in zip(data_prefix, self.marker_name, strict=False):
            if a != b:
                break
            common += 1
        return data_prefix[:common]

    def selects(self, name: str) -> bool:
        """Whether ``name`` is a data blob of this window (the marker and folders are not)."""
        if not name.startswith(self.prefix) or name.endswith("/") or name == self.marker_name:
            return False
        return self._matcher is None or self._matcher.match(name[len(self.prefix) :]) is not None

    def key(self) -> str:
        """A short digest identifying these criteria (to tell remembered observations apart)."""
        text = json.dumps(self.to_kwargs(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_kwargs(self) -> dict[str, Any]:
        """JSON-friendly keyword arguments (the trigger serialises these)."""
        return {
            "container": self.container,
            "prefix": self.prefix,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "pattern": self.pattern,
            "marker": self.marker,
            "min_files": self.min_files,
            "min_total_bytes": self.min_total_bytes,
            "stable_for": self.stable_for,
            "ignore_empty_blobs": self.ignore_empty_blobs,
        }


@dataclass(frozen=True)
class Assessment:
    """The verdict of one check.

    :param ready: the data is complete and settled
    :param reason: one human sentence: why it is (not) ready
    :param observation: what to remember for the next check
    :param result: the XCom payload when ready (see :data:`RESULT_KEYS`)
    :param ready_at: when it becomes ready if nothing changes (only when waiting for stability)
    :param selected: how many blobs the selection holds
    :param total_bytes: their total size
    :param marker_present: whether the marker exists (None: no marker is asked for)
    """

    ready: bool
    reason: str
    observation: Observation
    result: dict[str, Any] | None = None
    ready_at: datetime | None = None
    selected: int = 0
    total_bytes: int = 0
    marker_present: bool | None = None

    @property
    def summary(self) -> str:
        """What the check saw, in a few words ("3 blob(s), 120 bytes, marker absent")."""
        marker = "" if self.marker_present is None else f", marker {'present' if self.marker_present else 'absent'}"
        return f"{self.selected} blob(s), {self.total_bytes} bytes{marker}"


def assess_arrival(
    criteria: ArrivalCriteria,
    listing: Listing,
    *,
    now: datetime,
    previous: Observation | None = None,
) -> Assessment:
    """Decide whether the window's data has arrived, completely and stably (rules in the module docstring).

    Pure: the same inputs always give the same verdict; no clock, no I/O.

    :param criteria: what to wait for
    :param listing: the blobs under ``criteria.list_prefix``
    :param now: the current time (preferably the storage service's clock)
    :param previous: the observation of the previous check, if any
    """
    now = _aware(now)
    where = f"{criteria.container}/{criteria.prefix}"
    what = f" matching {criteria.pattern!r}" if criteria.pattern else ""
    selected = [b for b in listing.blobs if criteria.selects(b.name)]
    marker_name = criteria.marker_name
    marker = next((b for b in listing.blobs if b.name == marker_name), None)
    empty = [b for b in selected if b.size <= 0]
    if criteria.ignore_empty_blobs:
        selected = [b for b in selected if b.size > 0]
    selected.sort(key=lambda b: b.name)

    fingerprint = _fingerprint(selected, marker)
    if previous is None:
        changed_at = None
    elif previous.fingerprint != fingerprint:
        changed_at = now
    else:
        changed_at = previous.changed_at
    observation = Observation(fingerprint, changed_at)

    total_bytes = sum(b.size for b in selected)
    marker_present = None if marker_name is None else marker is not None

    def waiting(reason: str, ready_at: datetime | None = None) -> Assessment:
        return Assessment(
            False,
            reason,
            observation,
            ready_at=ready_at,
            selected=len(selected),
            total_bytes=total_bytes,
            marker_present=marker_present,
        )

    problem = _incompleteness(criteria, listing, selected, empty, marker)
    if problem is not None:
        return waiting(problem)
    touched = [*selected, *([marker] if marker else [])]
    stable_since = max(b.last_modified for b in touched) + LAST_MODIFIED_RESOLUTION
    if changed_at is not None:
        stable_since = max(stable_since, changed_at)
    ready_at = stable_since + timedelta(seconds=criteria.stable_for)
    if criteria.stable_for > 0 and now < ready_at:
        return waiting(
            f"{len(selected)} blob(s), {total_bytes} bytes under {where!r}{what}, but the set last changed at "
            f"{stable_since.isoformat()}; it must stay unchanged for {criteria.stable_for:g}s "
            f"(ready at {ready_at.isoformat()} if nothing changes)",
            ready_at,
        )
    result = {
        "container": criteria.container,
        "prefix": criteria.prefix,
        "window": {"start": criteria.window_start.isoformat(), "end": criteria.window_end.isoformat()},
        "blobs": [b.to_dict() for b in selected],
        "total_bytes": total_bytes,
        "marker": marker.to_dict() if marker else None,
    }
    return Assessment(
        True,
        f"accepted {len(selected)} blob(s), {total_bytes} bytes under {where!r}{what}, "
        f"unchanged since {stable_since.isoformat()}",
        observation,
        result=result,
        selected=len(selected),
        total_bytes=total_bytes,
        marker_present=marker_present,
    )


def _incompleteness(
    criteria: ArrivalCriteria,
    listing: Listing,
    selected: Sequence[BlobInfo],
    empty: Sequence[BlobInfo],
    marker: BlobInfo | None,
) -> str | None:
    """Why the selection is not complete yet (rules 1-3), or None when it is."""
    where = f"{criteria.container}/{criteria.prefix}"
    what = f" matching {criteria.pattern!r}" if criteria.pattern else ""
    total_bytes = sum(b.size for b in selected)
    if not listing.container_exists:
        problem = f"container {criteria.container!r} does not exist (yet)"
    elif not selected:
        problem = f"no blobs under {where!r}{what} yet ({len(listing.blobs)} listed)"
    elif empty and not criteria.ignore_empty_blobs:
        problem = (
            f"blob {empty[0].name!r} is empty (0 bytes), so its upload may not have written anything yet; "
            "set ignore_empty_blobs=True if empty files are legitimate"
        )
    elif len(selected) < criteria.min_files:
        problem = f"{len(selected)} blob(s) under {where!r}{what}, fewer than min_files={criteria.min_files}"
    elif total_bytes < criteria.min_total_bytes:
        problem = (
            f"{len(selected)} blob(s) under {where!r}{what} hold {total_bytes} bytes, "
            f"fewer than min_total_bytes={criteria.min_total_bytes}"
        )
    elif criteria.marker_name is not None and marker is None:
        problem = f"marker {criteria.marker_name!r} is not there yet ({len(selected)} data blob(s) seen)"
    elif marker is not None and (newer := [b for b in selected if b.last_modified > marker.last_modified]):
        problem = (
            f"blob {newer[0].name!r} was modified after the marker {criteria.marker_name!r} "
            "(a new delivery may be in progress); waiting for the producer to rewrite the marker"
        )
    else:
        problem = None
    return problem


def accepted_result(event: Mapping[str, Any]) -> dict[str, Any]:
    """The sensor's XCom from a success event or an assessment's result: :data:`RESULT_KEYS` only."""
    return {key: event.get(key) for key in RESULT_KEYS}


def glob_to_regex(pattern: str, argument: str = "pattern") -> re.Pattern[str]:
    """Compile a glob matched against the blob name *relative to the prefix*.

    ``*`` matches within one path segment (not ``/``), ``**`` matches across segments (``**/`` also
    matches no folder at all), ``?`` one character other than ``/``, ``[abc]``/``[a-z]``/``[!abc]`` one
    character of (not of) a set. Everything else is literal.

    :raise ConfigurationError: naming ``argument`` if the glob is malformed
    """
    if not isinstance(pattern, str) or not pattern:
        raise ConfigurationError(f"{argument}: expected a non-empty glob such as 'part-*.csv', got {pattern!r}")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                raise ConfigurationError(f"{argument}: unterminated '[' at position {i} in {pattern!r}")
            body = pattern[i + 1 : close]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = close + 1
        else:
            out.append(re.escape(char))
            i += 1
    try:
        return re.compile(r"\A" + "".join(out) + r"\Z", re.DOTALL)
    except re.error as error:
        raise ConfigurationError(f"{argument}: invalid glob {pattern!r}: {error}") from None


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard (``part-*.csv`` -> ``part-``)."""
    cut = min((i for i in (pattern.find(c) for c in _GLOB_SPECIALS) if i >= 0), default=len(pattern))
    return pattern[:cut]


def validate_container(container: object, argument: str = "container") -> None:
    """Reject names Azure would refuse, with a message naming the argument."""
    if not isinstance(container, str) or not container.strip():
        raise ConfigurationError(f"{argument}: must be a non-empty container name, got {container!r}")
    if not _CONTAINER_NAME.match(container):
        raise ConfigurationError(
            f"{argument}: {container!r} is not a valid container name (3-63 characters: lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit)"
        )


def validate_counts(min_files: object, min_total_bytes: object, stable_for: object) -> None:
    """Cheap checks of the completeness thresholds, naming the argument at fault."""
    if isinstance(min_files, bool) or not isinstance(min_files, int) or min_files < 1:
        raise ConfigurationError(f"min_files: must be an integer >= 1, got {min_files!r}")
    if isinstance(min_total_bytes, bool) or not isinstance(min_total_bytes, int) or min_total_bytes < 0:
        raise ConfigurationError(f"min_total_bytes: must be an integer >= 0, got {min_total_bytes!r}")
    if isinstance(stable_for, bool) or not isinstance(stable_for, int | float) or stable_for < 0:
        raise ConfigurationError(f"stable_for: must be a non-negative number of seconds, got {stable_for!r}")


class UnreadableListingError(AzureMLRetrainError):
    """The storage service answered a listing with a body the SDK could not read (a broken gateway)."""


def unreadable_listing(container: str, prefix: str, error: Exception) -> UnreadableListingError:
    return UnreadableListingError(
        f"the listing of {container}/{prefix} came back unreadable ({type(error).__name__}); will list again"
    )


def is_transient_error(error: BaseException) -> bool:
    """Whether a listing error is worth retrying (network trouble, throttling, 5xx) rather than fatal."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(error, ServiceRequestError | ServiceResponseError | TimeoutError | ConnectionError):
        return True
    if isinstance(error, UnreadableListingError):
        return True
    if isinstance(error, ClientAuthenticationError):
        return False
    if isinstance(error, HttpResponseError):
        return error.status_code in _RETRYABLE_STATUSES
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp comes with the Azure provider
        return False
    return isinstance(error, aiohttp.ClientError)


def describe_error(error: BaseException) -> str:
    """A one-line description of an error, with anything that looks like a key or SAS removed."""
    text = " ".join(str(error).split())[:500]
    return f"{type(error).__name__}: {_SECRET_PARAMS.sub(lambda m: m.group(1) + '=***', text)}"


def server_time(dates: Sequence[str | None]) -> datetime | None:
    """The earliest parsable HTTP ``Date`` header of a listing's responses, as aware UTC."""
    parsed = []
    for value in dates:
        if not value:
            continue
        try:
            parsed.append(_aware(parsedate_to_datetime(value)))
        except (TypeError, ValueError):
            continue
    return min(parsed, default=None)


def _fingerprint(selected: Iterable[BlobInfo], marker: BlobInfo | None) -> str:
    digest = hashlib.sha256()
    for blob in [*selected, *([marker] if marker else [])]:
        digest.update(f"{blob.name}\0{blob.size}\0{blob.etag}\n".encode())
    return digest.hexdigest()


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------------
# What a wait logs
# --------------------------------------------------------------------------------------------------


class Clock:
    """The time sources of a wait: the wall clock (deadlines), a monotonic one (heartbeats) and sleep.

    Tests substitute one whose ``sleep`` advances the others, so hours of waiting run in moments.
    """

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = Clock()


def format_duration(seconds: float) -> str:
    """``45 s``, ``42 min``, ``1 h 30 min``, ``12 h``: how a person reads a wait's length."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


class WaitLog:
    """Which checks of a wait get a log line: the first, each one that sees something else than the
    previous one did, and a heartbeat when nothing changed for ``heartbeat`` seconds.

    A 12-hour wait at a 30 s poke interval is 1440 checks; a line for each would bury the few that
    tell what happened. What a check "sees" is a short key: the assessment's reason (it carries the
    counts, the marker's state and when the stability clock last restarted) or the kind of error.

    :param waiting_since: when the wait began, wall clock (seconds since the epoch)
    :param deadline: when it gives up, wall clock; None when unknown
    """

    CHANGE = "change"
    HEARTBEAT = "heartbeat"

    def __init__(
        self,
        *,
        waiting_since: float,
        deadline: float | None,
        clock: Clock = SYSTEM_CLOCK,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.waiting_since = waiting_since
        self.deadline = deadline
        self.clock = clock
        self.heartbeat = heartbeat
        self.seen: str | None = None
        #: The check that first saw what is seen now.
        self.seen_since_check = 0
        self._last_line: float | None = None

    def note(self, check: int, seen: str) -> str | None:
        """Record what check number ``check`` saw; return :attr:`CHANGE`, :attr:`HEARTBEAT` or None (no line)."""
        now = self.clock.monotonic()
        if seen != self.seen:
            self.seen, self.seen_since_check, self._last_line = seen, check, now
            return self.CHANGE
        if self._last_line is None or now - self._last_line >= self.heartbeat:
            self._last_line = now
            return self.HEARTBEAT
        return None

    @property
    def progress(self) -> str:
        """How long the wait has lasted, of how long it may (``42 min of 12 h``)."""
        waited = format_duration(self.clock.time() - self.waiting_since)
        if self.deadline is None:
            return waited
        return f"{waited} of {format_duration(self.deadline - self.waiting_since)}"

    def still_waiting(self, what: str) -> str:
        """The heartbeat line."""
        return f"still waiting: {what}, {self.progress}; unchanged since check #{self.seen_since_check}"

    def report(self, log: Any, check: int, seen: str, *, line: str, summary: str, level: int = logging.INFO) -> None:
        """Log ``line`` when ``seen`` differs from the previous check's, else a heartbeat about ``summary``
        when one is due, else nothing."""
        kind = self.note(check, seen)
        if kind == self.CHANGE:
            log.log(level, "Check #%d: %s", check, line)
        elif kind == self.HEARTBEAT:
            log.log(level, "Check #%d: %s", check, self.still_waiting(summary))


def error_kind(error: BaseException) -> str:
    """What a failed check "saw", for :class:`WaitLog`: the error's type and status, not its text
    (which carries request ids and times, different on every check)."""
    status = getattr(error, "status_code", None)
    return f"error {type(error).__name__}" + (f" {status}" if status is not None else "")


# --------------------------------------------------------------------------------------------------
# Async listing and the trigger
# --------------------------------------------------------------------------------------------------


async def list_blobs_async(client: AsyncBlobServiceClient, container: str, prefix: str) -> Listing:
    """List every blob under ``prefix`` (flat) with an async client; ``ContainerNotFound`` is a result.

    Uses ``container_client.list_blobs(name_starts_with=prefix)``: the service filters by prefix, so
    only blobs under it are ever transferred.
    """
    from azure.core.exceptions import DecodeError, ResourceNotFoundError

    dates: list[str | None] = []

    def on_response(response: Any) -> None:
        dates.append(response.http_response.headers.get("Date"))

    container_client = client.get_container_client(container)
    try:
        items = [
            item async for item in container_client.list_blobs(name_starts_with=prefix, raw_response_hook=on_response)
        ]
    except ResourceNotFoundError as error:
        if getattr(error, "error_code", None) != "ContainerNotFound":
            raise
        return Listing((), server_time(dates), len(dates), container_exists=False)
    except (AttributeError, DecodeError) as error:
        # A 200 whose body is not a listing: the SDK's page parser fails on it (only SDK code runs here).
        raise unreadable_listing(container, prefix, error) from error
    return Listing(tuple(BlobInfo.from_properties(item) for item in items), server_time(dates), len(dates))


class BlobArrivalTrigger(BaseTrigger):
    """Poll a blob prefix until the window's data has arrived completely and stably, or a deadline passes.

    Yields exactly one event (listed below). Transient listing errors (network,
    throttling, 5xx) are retried at the next poll.

    Its log has a line for the first check, for each check that sees something new (another number
    of blobs, the marker, a restarted stability clock, another error) and a "still waiting" line
    every :data:`HEARTBEAT_SECONDS` otherwise (see :class:`WaitLog`); azure-core's per-request HTTP
    logging is kept at WARNING.

    :param container: the blob container
    :param prefix: the rendered prefix under which the window's blobs live
    :param window_start: ISO 8601 start of the run's window (reported in the result)
    :param window_end: ISO 8601 end of the run's window
    :param pattern: glob matched against names relative to ``prefix``; None selects everything
    :param marker: name of a marker blob relative to ``prefix`` that must exist, e.g. ``_SUCCESS``
    :param min_files: minimum number of selected blobs
    :param min_total_bytes: minimum total size of the selected blobs
    :param stable_for: seconds the selection must stay unchanged
    :param ignore_empty_blobs: leave 0-byte blobs out instead of waiting for them to be written
    :param wasb_conn_id: the wasb connection
    :param poll_interval: seconds between checks
    :param end_time: absolute deadline, seconds since the epoch (wall clock: survives a triggerer restart)
    :param observation: the previous check's :meth:`Observation.to_json`, so the stability clock carries over
    :param finish_task: on success, end the task here with the result as its XCom instead of yielding
        the success event, so the task does not go back to a worker; timeouts and errors still resume it
    :param waiting_since: when the sensor began waiting, seconds since the epoch (for the log's "42 min
        of 12 h"); None: when this trigger started
    :event success: ``{"status": "success", **result}``: the data was accepted; ``result`` is the
        sensor's return value (see :data:`RESULT_KEYS`). With ``finish_task`` the task ends instead,
        with ``result`` as its ``return_value`` XCom (Airflow's TaskSuccessEvent).
    :event timeout: ``{"status": "timeout", "message"}``: ``end_time`` passed before the data was
        accepted; the message says what the last check saw.
    :event error: ``{"status": "error", "message"}``: a listing failed in a way another poll cannot
        fix; with ``"fatal": True`` the storage account refused the connection's credential, and the
        task must fail without retrying.
    """

    #: Where the trigger reads time and sleeps (not serialized; tests substitute a simulated one).
    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        container: str,
        prefix: str,
        window_start: str,
        window_end: str,
        end_time: float,
        pattern: str | None = None,
        marker: str | None = None,
        min_files: int = 1,
        min_total_bytes: int = 1,
        stable_for: float = 60.0,
        ignore_empty_blobs: bool = False,
        wasb_conn_id: str = "wasb_default",
        poll_interval: float = 60.0,
        observation: dict[str, Any] | None = None,
        finish_task: bool = False,
        waiting_since: float | None = None,
    ) -> None:
        super().__init__()
        self.container = container
        self.prefix = prefix
        self.window_start = window_start
        self.window_end = window_end
        self.end_time = end_time
        self.pattern = pattern
        self.marker = marker
        self.min_files = min_files
        self.min_total_bytes = min_total_bytes
        self.stable_for = stable_for
        self.ignore_empty_blobs = ignore_empty_blobs
        self.wasb_conn_id = wasb_conn_id
        self.poll_interval = poll_interval
        self.observation = observation
        self.finish_task = finish_task
        self.waiting_since = waiting_since
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) or poll_interval <= 0:
            raise ConfigurationError(f"poll_interval: must be a positive number of seconds, got {poll_interval!r}")
        if isinstance(end_time, bool) or not isinstance(end_time, int | float):
            raise ConfigurationError(f"end_time: must be seconds since the epoch, got {end_time!r}")
        if waiting_since is not None and (
            isinstance(waiting_since, bool) or not isinstance(waiting_since, int | float)
        ):
            raise ConfigurationError(f"waiting_since: must be seconds since the epoch or None, got {waiting_since!r}")
        self.criteria = self._criteria()

    def _criteria(self) -> ArrivalCriteria:
        start = parse_datetime(self.window_start, "window_start")
        end = parse_datetime(self.window_end, "window_end")
        if start is None or end is None:
            raise ConfigurationError("window_start and window_end are required")
        return ArrivalCriteria(
            container=self.container,
            prefix=self.prefix,
            window_start=start,
            window_end=end,
            pattern=self.pattern,
            marker=self.marker,
            min_files=self.min_files,
            min_total_bytes=self.min_total_bytes,
            stable_for=self.stable_for,
            ignore_empty_blobs=self.ignore_empty_blobs,
        )

    @classmethod
    def from_criteria(
        cls,
        criteria: ArrivalCriteria,
        *,
        end_time: float,
        wasb_conn_id: str,
        poll_interval: float,
        observation: Observation | None,
        finish_task: bool = False,
        waiting_since: float | None = None,
    ) -> BlobArrivalTrigger:
        return cls(
            **criteria.to_kwargs(),
            end_time=end_time,
            wasb_conn_id=wasb_conn_id,
            poll_interval=poll_interval,
            observation=observation.to_json() if observation else None,
            finish_task=finish_task,
            waiting_since=waiting_since,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "azureml_retrain.triggers.blob_arrival.BlobArrivalTrigger",
            {
                **self.criteria.to_kwargs(),
                "end_time": self.end_time,
                "wasb_conn_id": self.wasb_conn_id,
                "poll_interval": self.poll_interval,
                "observation": self.observation,
                "finish_task": self.finish_task,
                "waiting_since": self.waiting_since,
            },
        )

    def _hook(self) -> WasbAsyncHook:
        from azureml_retrain.storage import wasb_async_hook

        return wasb_async_hook(self.wasb_conn_id)

    def _accepted(self, result: dict[str, Any]) -> TriggerEvent:
        if self.finish_task:
            return TaskSuccessEvent(xcoms={"return_value": accepted_result(result)})
        return TriggerEvent({"status": "success", **result})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        criteria = self.criteria
        clock = self.clock
        where = f"{criteria.container}/{criteria.list_prefix}"
        previous = Observation.from_json(self.observation)
        last_reason = "no successful check yet"
        wait_log = WaitLog(waiting_since=self.waiting_since or clock.time(), deadline=self.end_time, clock=clock)
        hook = self._hook()
        client: AsyncBlobServiceClient | None = None
        checks = 0
        try:
            while True:
                if clock.time() >= self.end_time:
                    message = (
                        f"Timed out waiting for data in {where} after {checks} check(s) in the trigger; "
                        f"last state: {last_reason}"
                    )
                    yield TriggerEvent({"status": "timeout", "message": message})
                    return
                checks += 1
                wait = self.poll_interval
                try:
                    if client is None:
                        client = await hook.get_async_conn()
                    listing = await list_blobs_async(client, criteria.container, criteria.list_prefix)
                except Exception as error:
                    if is_refused_credential(error):
                        refused = await refused_credential_error_async(self.wasb_conn_id, f"listing {where}", error)
                        self.log.error("Check #%d: %s", checks, refused)
                        yield TriggerEvent({"status": "error", "message": str(refused), "fatal": True})
                        return
                    if not is_transient_error(error):
                        self.log.exception("Listing %s failed", where)
                        yield TriggerEvent({"status": "error", "message": f"Listing failed: {describe_error(error)}"})
                        return
                    failure = describe_error(error)
                    last_reason = f"transient listing error, retrying: {failure}"
                    wait_log.report(
                        self.log,
                        checks,
                        error_kind(error),
                        line=last_reason,
                        summary=f"the listing keeps failing ({failure})",
                        level=logging.WARNING,
                    )
                else:
                    now = listing.server_time or utcnow()
                    assessment = assess_arrival(criteria, listing, now=now, previous=previous)
                    previous = assessment.observation
                    last_reason = assessment.reason
                    if assessment.ready and assessment.result is not None:
                        self.log.info("Check #%d: %s", checks, assessment.reason)
                        yield self._accepted(assessment.result)
                        return
                    wait_log.report(
                        self.log,
                        checks,
                        assessment.reason,
                        line=f"{assessment.reason} ({len(listing.blobs)} listed)",
                        summary=assessment.summary,
                    )
                    if assessment.ready_at is not None:
                        # Wake up right when the selection would become stable, if that is sooner.
                        wait = min(wait, max((assessment.ready_at - now).total_seconds(), 0.0) + 0.05)
                await clock.sleep(max(min(wait, self.end_time - clock.time()), 0.0))
        finally:
            if client is not None:
                await client.close()
