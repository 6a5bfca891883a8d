"""Resolution of a run's data window: explicit arguments or window param, data interval, schedule fallback."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, CronDataIntervalTimetable

from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.windows import (
    WINDOW_PATTERN,
    latest_cron_interval,
    parse_datetime,
    parse_window,
    resolve_window,
    window_interval,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


RUN_AFTER = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)


def make_context(
    schedule: Any = "0 3 * * *",
    *,
    logical_date: datetime | None = None,
    interval: tuple[datetime, datetime] | None = None,
    run_after: datetime | None = RUN_AFTER,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    dag = DAG(dag_id="window_probe", schedule=schedule, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    start, end = interval if interval else (None, None)
    return {
        "dag": dag,
        "dag_run": SimpleNamespace(run_after=run_after, logical_date=logical_date),
        "logical_date": logical_date,
        "data_interval_start": start,
        "data_interval_end": end,
        "params": params or {},
    }


def test_scheduled_run_with_a_real_interval_uses_it():
    schedule = CronDataIntervalTimetable("0 3 * * *", timezone="UTC")
    context = make_context(
        schedule,
        logical_date=utc(2026, 11, 26, 3),
        interval=(pendulum.datetime(2026, 11, 26, 3, tz="UTC"), pendulum.datetime(2026, 11, 27, 3, tz="UTC")),
        run_after=utc(2026, 11, 27, 3),
    )
    window = resolve_window(context)
    assert (window.start, window.end, window.source) == (utc(2026, 11, 26, 3), utc(2026, 11, 27, 3), "data_interval")
    assert type(window.start) is datetime  # plain datetimes, not pendulum: stable isoformat/strftime
    assert window.to_dict() == {"start": "2026-11-26T03:00:00+00:00", "end": "2026-11-27T03:00:00+00:00"}


def test_zero_length_cron_trigger_interval_falls_back_to_the_previous_cron_interval():
    tick = utc(2026, 11, 27, 3)
    context = make_context("0 3 * * *", logical_date=tick, interval=(tick, tick), run_after=tick)
    window = resolve_window(context)
    # A tick exactly at the anchor counts: the same window CronDataIntervalTimetable would give.
    assert (window.start, window.end, window.source) == (utc(2026, 11, 26, 3), tick, "schedule")


def test_manual_run_without_logical_date_uses_run_after_and_the_schedule():
    context = make_context("0 3 * * *", run_after=utc(2026, 11, 27, 10, 30))
    window = resolve_window(context)
    assert (window.start, window.end, window.source) == (utc(2026, 11, 26, 3), utc(2026, 11, 27, 3), "schedule")


def test_manual_run_given_a_logical_date_anchors_on_it_not_on_run_after():
    logical = utc(2026, 11, 20, 12)
    context = make_context("0 3 * * *", logical_date=logical, interval=(logical, logical), run_after=utc(2026, 11, 27))
    assert resolve_window(context).end == utc(2026, 11, 20, 3)


def test_timedelta_schedule_fallback():
    context = make_context(timedelta(hours=6), run_after=utc(2026, 11, 27, 10, 30))
    window = resolve_window(context)
    assert (window.start, window.end) == (utc(2026, 11, 27, 4, 30), utc(2026, 11, 27, 10, 30))


def test_cron_fallback_honours_the_timetable_time_zone_across_dst():
    schedule = CronDataIntervalTimetable("0 3 * * *", timezone="Europe/Paris")
    context = make_context(schedule, run_after=utc(2026, 3, 29, 12))  # DST starts 2026-03-29 in Paris
    window = resolve_window(context)
    assert (window.start, window.end) == (utc(2026, 3, 28, 2), utc(2026, 3, 29, 1))  # a 23-hour day


def test_the_window_param_wins_over_everything():
    tick = utc(2026, 11, 27, 3)
    context = make_context(
        interval=(tick - timedelta(days=1), tick), params={"window": "2026-11-01/2026-11-08T00:00:00Z"}
    )
    window = resolve_window(context)
    assert (window.start, window.end, window.source) == (utc(2026, 11, 1), utc(2026, 11, 8), "params")


def test_the_window_param_reads_times_and_offsets_and_takes_a_naive_time_as_utc():
    context = make_context(params={"window": "2026-11-20T02:00:00+01:00/2026-11-21 02:00"})
    window = resolve_window(context)
    assert (window.start, window.end) == (utc(2026, 11, 20, 1), utc(2026, 11, 21, 2))


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_empty_window_param_is_not_given(value: str | None):
    tick = utc(2026, 11, 27, 3)
    context = make_context(interval=(tick - timedelta(days=1), tick), params={"window": value})
    assert resolve_window(context).source == "data_interval"


def test_explicit_arguments_win_over_the_param_and_unset_template_renders_count_as_missing():
    context = make_context(params={"window": "2026-11-01/2026-11-08"})
    window = resolve_window(context, start="2026-10-01T00:00:00+02:00", end=utc(2026, 10, 2))
    assert (window.start, window.end, window.source) == (utc(2026, 9, 30, 22), utc(2026, 10, 2), "arguments")
    # A templated argument renders to "None" when what it reads is unset: not an explicit window.
    assert resolve_window(context, start="None", end="").source == "params"


def test_the_window_param_can_have_another_name():
    context = make_context(params={"training_window": "2026-11-01/2026-11-02", "window": "2026-10-01/2026-10-02"})
    assert resolve_window(context, window_param="training_window").start == utc(2026, 11, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # What the form's pattern refuses at trigger time, refused again for params without it.
        ("2026-11-01", "params['window']: '2026-11-01' is not a complete interval; give '<start>/<end>'"),
        ("2026-11-01/", "params['window']: '2026-11-01/' is not a complete interval"),
        ("/2026-11-02", "params['window']: '/2026-11-02' is not a complete interval"),
        ("None/2026-11-02", "params['window']: 'None/2026-11-02' is not a complete interval"),
        ("2026-11-01/2026-11-02/2026-11-03", "is not a complete interval"),
        ("yesterday/2026-11-01", "params['window'] (start): expected an ISO 8601 date or datetime"),
        (20261101, "params['window']: expected a string, got int; give '<start>/<end>'"),
        # What the pattern lets through: not a real date, or not in order.
        ("2026-02-30/2026-03-01", "params['window'] (start): expected an ISO 8601 date or datetime such as "),
        ("2026-11-01/2026-11-01T24:00", "params['window'] (end): "),
        (
            "2026-11-02/2026-11-01",
            "params['window']: the end (2026-11-01T00:00:00+00:00) must be after the start "
            "(2026-11-02T00:00:00+00:00); give '<start>/<end>' (ISO 8601 dates or date-times, end exclusive), "
            "e.g. '2026-11-20/2026-11-21'",
        ),
        ("2026-11-01T03:00Z/2026-11-01T04:00+01:00", "the end (2026-11-01T03:00:00+00:00) must be after the start"),
    ],
)
def test_a_bad_window_param_names_the_param_and_the_fix(value: object, message: str):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        resolve_window(make_context(params={"window": value}))


def test_a_real_date_is_checked_with_the_reason():
    with pytest.raises(ConfigurationError, match=r"got '2026-02-30' \(day is out of range for month\)"):
        parse_window("2026-02-30/2026-03-01", "params['window']")


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-01", None, "end is missing: it must be given together with start"),
        (None, utc(2026, 11, 1), "start is missing: it must be given together with end"),
        ("2026-11-02", "2026-11-01", "end (2026-11-01T00:00:00+00:00) must be after start"),
    ],
)
def test_bad_arguments_name_the_argument(start: object, end: object, message: str):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        resolve_window(make_context(), start=start, end=end)


def test_manual_run_of_an_unscheduled_dag_says_which_param_to_pass():
    with pytest.raises(ConfigurationError) as error:
        resolve_window(make_context(None))
    assert (
        """Trigger the run with params {"window": "<start>/<end>"}, e.g. {"window": "2026-11-20/2026-11-21"}"""
        in str(error.value)
    )
    assert "NullTimetable" in str(error.value)


def test_window_interval_is_the_params_form():
    assert window_interval(utc(2026, 11, 20, 2), utc(2026, 11, 21, 2)) == (
        "2026-11-20T02:00:00+00:00/2026-11-21T02:00:00+00:00"
    )
    assert parse_window(window_interval(utc(2026, 11, 20), utc(2026, 11, 21)), "w") == (
        utc(2026, 11, 20),
        utc(2026, 11, 21),
    )


def test_fallback_schedule_rescues_an_unscheduled_dag():
    context = make_context(None, run_after=utc(2026, 11, 27, 10, 30))
    assert resolve_window(context, fallback_schedule="0 * * * *").start == utc(2026, 11, 27, 9)
    assert resolve_window(context, fallback_schedule=timedelta(days=1)).start == utc(2026, 11, 26, 10, 30)


def test_bad_fallback_cron_names_the_argument():
    with pytest.raises(ConfigurationError, match="fallback_schedule: invalid cron"):
        resolve_window(make_context(None), fallback_schedule="every day")


def test_latest_cron_interval_presets_and_exact_ticks():
    assert latest_cron_interval("@daily", utc(2026, 11, 27)) == (utc(2026, 11, 26), utc(2026, 11, 27))
    assert latest_cron_interval("@daily", utc(2026, 11, 26, 23, 59, 59)) == (utc(2026, 11, 25), utc(2026, 11, 26))


def test_parse_datetime_treats_naive_as_utc():
    assert parse_datetime("2026-11-26T03:00", "x") == utc(2026, 11, 26, 3)
    assert parse_datetime(None, "x") is None


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (None, True),
        ("", True),
        ("2026-11-20/2026-11-21", True),
        ("2026-11-20T06:00/2026-11-20T18:00", True),
        ("2026-11-20T06:00:00+01:00/2026-11-20T18:00:00.5Z", True),
        ("2026-11-20", False),
        ("2026-11-20/", False),
        ("/2026-11-21", False),
        ("yesterday", False),
        ("yesterday/today", False),
        ("2026-11-20/2026-11-21/2026-11-22", False),
    ],
)
def test_the_form_refuses_an_incomplete_window_with_a_short_pattern(value: object, accepted: bool):
    import jsonschema

    from azureml_retrain.factory import window_param

    schema = window_param().schema
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(value))
    assert not errors if accepted else errors
    # Airflow's refusal quotes the pattern whole: it must stay readable.
    assert len(WINDOW_PATTERN) < 80 and "\\" not in WINDOW_PATTERN
