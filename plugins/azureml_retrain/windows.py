"""The data window of a DAG run: which slice of time a retraining run trains on.

Airflow 3 does not always give a run a usable data interval: manual runs triggered without a logical
date have ``logical_date``, ``data_interval_start``/``data_interval_end`` and ``ds`` all ``None``, and
cron schedules default to ``CronTriggerTimetable``, whose scheduled runs have a *zero-length* interval
(``data_interval_start == data_interval_end == logical_date``). :func:`resolve_window` turns any run
into a half-open window ``[start, end)`` with these rules, first match wins:

1. **Explicit window.** ``start``/``end`` arguments (usually templated operator arguments), else the
   run's ``params["window"]`` (name configurable): an ISO 8601 time interval ``<start>/<end>``, end
   exclusive, e.g. ``2026-11-20/2026-11-21`` or ``2026-11-20T02:00:00Z/2026-11-21T02:00:00+00:00``
   (its trigger-form schema, :data:`WINDOW_PATTERN`, refuses an incomplete one when the run is
   triggered). Ends are ISO 8601 dates or date-times (the arguments may be datetimes too); one
   without a time zone is taken as UTC. ``None`` and empty strings count as "not given", and so does
   the text ``"None"`` in an argument (what an unset templated param renders to). Only one argument
   of the pair, an incomplete interval, an end that is not a real date or time, or ``end <= start``
   is a :class:`~azureml_retrain.exceptions.ConfigurationError` naming the argument or param.
2. **The run's data interval**, when both ends are set and ``end > start`` (``CronDataIntervalTimetable``,
   ``DeltaDataIntervalTimetable``, a trigger timetable with an ``interval``, or a manual run given an
   explicit interval).
3. **The latest complete schedule interval** before an anchor time. The anchor is the run's
   ``logical_date`` when set (scheduled and backfill runs; manual runs given a logical date), otherwise
   ``dag_run.run_after`` (always set; "now" for a manual run). The schedule is ``fallback_schedule``
   when given, else the DAG's timetable:

   - cron (``CronTriggerTimetable``, ``CronDataIntervalTimetable``, or a cron string): the interval
     between the two latest cron ticks at or before the anchor, computed with ``croniter`` in the
     timetable's time zone (so DST changes are honoured). A daily ``0 3 * * *`` run at 2026-11-27 03:00
     gets ``[2026-11-26 03:00, 2026-11-27 03:00)`` -- the same window ``CronDataIntervalTimetable``
     would have given it.
   - timedelta (``DeltaTriggerTimetable``, ``DeltaDataIntervalTimetable``, or a timedelta):
     ``[anchor - delta, anchor)``.

   Any other timetable (``None``/manual-only, ``@once``, asset-triggered, multiple crons, events) has
   no interval to derive, and the function raises a ConfigurationError naming the param to pass.

All returned datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Literal

from azureml_retrain.exceptions import ConfigurationError

WINDOW_PARAM = "window"
WINDOW_EXAMPLE = "2026-11-20/2026-11-21"
#: The ``window`` param's JSON Schema pattern: empty, or ``<date...>/<date...>``. It checks the form
#: only, and stays short on purpose: Airflow's refusal quotes it whole. :func:`parse_window` checks
#: that both ends are real dates or date-times, and in order, before any job. [0-9] rather than \d,
#: which Python extends to every Unicode digit (and the refusal would show doubled backslashes).
WINDOW_PATTERN = "^([0-9]{4}-[0-9]{2}-[0-9]{2}[^/]*/[0-9]{4}-[0-9]{2}-[0-9]{2}[^/]*)?$"

WindowSource = Literal["arguments", "params", "data_interval", "schedule"]


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` in UTC, and which rule produced it."""

    start: datetime
    end: datetime
    source: WindowSource

    def to_dict(self) -> dict[str, str]:
        """The JSON-friendly form used in XCom: ISO 8601 strings."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def parse_datetime(value: object, name: str) -> datetime | None:
    """Parse an ISO 8601 string or datetime into an aware UTC datetime; ``None`` when not given.

    :param value: the value to parse
    :param name: the argument or param name, used in the error message
    :raise ConfigurationError: if the value is neither empty, a datetime, nor an ISO 8601 string
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text in ("", "None"):
            return None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as error:
            raise ConfigurationError(
                f"{name}: expected an ISO 8601 date or datetime such as '2026-11-26' or "
                f"'2026-11-26T03:00:00+00:00', got {value!r} ({error})"
            ) from None
    else:
        raise ConfigurationError(f"{name}: expected an ISO 8601 string or a datetime, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _utc(parsed)


def window_interval(start: date, end: date) -> str:
    """The ``window`` param's value for ``[start, end)``: ``<start>/<end>`` in ISO 8601."""
    return f"{start.isoformat()}/{end.isoformat()}"


def parse_window(value: object, name: str) -> tuple[datetime, datetime] | None:
    """Parse a ``window`` param, ``<start>/<end>`` (rule 1), into aware UTC datetimes; ``None`` when
    not given (``None`` or empty).

    :param value: the param's value
    :param name: the param's name, used in error messages
    :raise ConfigurationError: if the value is not a complete interval of real dates or date-times
        with its end after its start
    """
    if value is None:
        return None
    fix = f"give '<start>/<end>' (ISO 8601 dates or date-times, end exclusive), e.g. '{WINDOW_EXAMPLE}'"
    if not isinstance(value, str):
        raise ConfigurationError(f"{name}: expected a string, got {type(value).__name__}; {fix}")
    if not value.strip():
        return None
    incomplete = ConfigurationError(f"{name}: {value!r} is not a complete interval; {fix}")
    ends = value.split("/")
    if len(ends) != 2:
        raise incomplete
    start = parse_datetime(ends[0], f"{name} (start)")
    end = parse_datetime(ends[1], f"{name} (end)")
    if start is None or end is None:
        raise incomplete
    if end <= start:
        raise ConfigurationError(
            f"{name}: the end ({end.isoformat()}) must be after the start ({start.isoformat()}); {fix}"
        )
    return start, end


def resolve_window(
    context: Mapping[str, Any],
    *,
    start: object = None,
    end: object = None,
    fallback_schedule: str | timedelta | None = None,
    window_param: str = WINDOW_PARAM,
) -> Window:
    """Resolve the run's data window from the task context (rules in the module docstring).

    :param context: the task context (``logical_date``, ``data_interval_*``, ``dag_run``, ``dag``, ``params``)
    :param start: explicit window start (ISO string or datetime); wins over everything else
    :param end: explicit window end; must be given together with ``start``
    :param fallback_schedule: cron expression or timedelta used for rule 3 instead of the DAG's timetable
    :param window_param: name of the run param holding an explicit window ``<start>/<end>``
    :return: the window, with ``source`` naming the rule that produced it
    :raise ConfigurationError: on a half-given or invalid explicit window, or when no rule applies
    """
    explicit = _explicit_pair(start, end, "start", "end", "arguments")
    if explicit is not None:
        return explicit
    params = context.get("params") or {}
    given = parse_window(params.get(window_param), f"params[{window_param!r}]")
    if given is not None:
        return Window(*given, "params")

    interval_start = context.get("data_interval_start")
    interval_end = context.get("data_interval_end")
    if isinstance(interval_start, datetime) and isinstance(interval_end, datetime) and interval_end > interval_start:
        return Window(_utc(interval_start), _utc(interval_end), "data_interval")

    dag_run = context.get("dag_run")
    logical_date = context.get("logical_date")
    anchor = logical_date if isinstance(logical_date, datetime) else getattr(dag_run, "run_after", None)
    if not isinstance(anchor, datetime):
        raise ConfigurationError(
            f"Cannot resolve the data window: param {window_param!r} is not set and the run has neither a "
            "data interval, a logical date nor a run_after time. Trigger the run with params "
            f'{{"{window_param}": "<start>/<end>"}}, e.g. {{"{window_param}": "{WINDOW_EXAMPLE}"}}.'
        )
    anchor = _utc(anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC))
    schedule = _schedule_of(fallback_schedule, context.get("dag"))
    if schedule is None:
        dag = context.get("dag")
        timetable = type(getattr(dag, "timetable", None)).__name__ if dag is not None else "no DAG"
        raise ConfigurationError(
            f"Cannot resolve the data window: param {window_param!r} is not set, the run has no non-empty "
            f"data interval, and its schedule ({timetable}) has no cron expression or timedelta to derive one "
            f'from. Trigger the run with params {{"{window_param}": "<start>/<end>"}}, e.g. '
            f'{{"{window_param}": "{WINDOW_EXAMPLE}"}}, or pass fallback_schedule (a cron expression or timedelta).'
        )
    kind, value, tz = schedule
    if kind == "cron":
        assert isinstance(value, str)
        window_start, window_end = latest_cron_interval(value, anchor, tz)
    else:
        window_start, window_end = _utc(anchor - value), anchor
    return Window(window_start, window_end, "schedule")


def latest_cron_interval(expression: str, anchor: datetime, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """The interval between the two latest ticks of ``expression`` at or before ``anchor``, in UTC.

    :param expression: a cron expression (5 or 6 fields) or a preset such as ``@daily``
    :param anchor: an aware datetime; a tick exactly at ``anchor`` counts
    :param tz: the time zone the cron expression is read in (default UTC)
    :raise ConfigurationError: if the expression is not valid cron
    """
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    expression = _CRON_PRESETS.get(expression.strip(), expression.strip())
    local_anchor = anchor.astimezone(tz or UTC)
    try:
        previous = croniter(expression, local_anchor).get_prev(datetime)
        following = croniter(expression, previous).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError) as error:
        raise ConfigurationError(f"fallback_schedule: invalid cron expression {expression!r}: {error}") from None
    latest = following if following <= local_anchor else previous
    before = croniter(expression, latest).get_prev(datetime)
    return _utc(before), _utc(latest)


_CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def _explicit_pair(start: object, end: object, start_name: str, end_name: str, source: WindowSource) -> Window | None:
    parsed_start = parse_datetime(start, start_name)
    parsed_end = parse_datetime(end, end_name)
    if parsed_start is None and parsed_end is None:
        return None
    if parsed_start is None or parsed_end is None:
        missing, given = (start_name, end_name) if parsed_start is None else (end_name, start_name)
        raise ConfigurationError(f"{missing} is missing: it must be given together with {given}")
    if parsed_end <= parsed_start:
        raise ConfigurationError(
            f"{end_name} ({parsed_end.isoformat()}) must be after {start_name} ({parsed_start.isoformat()})"
        )
    return Window(parsed_start, parsed_end, source)


def _schedule_of(fallback: str | timedelta | None, dag: object) -> tuple[str, Any, tzinfo | None] | None:
    """``("cron", expression, tz)`` or ``("delta", delta, None)``, from the fallback or the DAG's timetable."""
    if isinstance(fallback, str) and fallback.strip():
        return ("cron", fallback, UTC)
    if isinstance(fallback, timedelta):
        if fallback <= timedelta(0):
            raise ConfigurationError(f"fallback_schedule: a timedelta must be positive, got {fallback}")
        return ("delta", fallback, None)
    timetable = getattr(dag, "timetable", None)
    expression = getattr(timetable, "expression", None)
    if isinstance(expression, str):
        return ("cron", expression, _timezone(getattr(timetable, "timezone", None)))
    delta = getattr(timetable, "delta", None)
    if delta is not None:
        return ("delta", delta, None)
    return None


def _timezone(value: object) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    if isinstance(value, str) and value:
        import pendulum

        return pendulum.timezone(value)
    return UTC


def _utc(value: datetime) -> datetime:
    """Normalise to a plain ``datetime`` in UTC (pendulum subclasses included)."""
    converted = value.astimezone(UTC)
    return datetime(
        converted.year,
        converted.month,
        converted.day,
        converted.hour,
        converted.minute,
        converted.second,
        converted.microsecond,
        tzinfo=UTC,
    )
