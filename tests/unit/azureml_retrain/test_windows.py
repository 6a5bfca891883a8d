"""Resolution of a run's data window: explicit params, data interval, schedule fallback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, CronDataIntervalTimetable

from azureml_retrain.exceptions import ConfigurationError
from azureml_retrain.windows import latest_cron_interval, parse_datetime, resolve_window


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


def test_explicit_params_win_over_everything():
    tick = utc(2026, 11, 27, 3)
    context = make_context(
        interval=(tick - timedelta(days=1), tick),
        params={"window_start": "2026-11-01", "window_end": "2026-11-08T00:00:00Z"},
    )
    window = resolve_window(context)
    assert (window.start, window.end, window.source) == (utc(2026, 11, 1), utc(2026, 11, 8), "params")


def test_explicit_arguments_win_over_params_and_unset_template_renders_count_as_missing():
    context = make_context(params={"window_start": "2026-11-01", "window_end": "2026-11-08"})
    window = resolve_window(context, start="2026-10-01T00:00:00+02:00", end=utc(2026, 10, 2))
    assert (window.start, window.end, window.source) == (utc(2026, 9, 30, 22), utc(2026, 10, 2), "arguments")
    # "{{ params.window_start }}" renders to "None" when the param is unset: not an explicit window.
    assert resolve_window(context, start="None", end="").source == "params"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window_start": "2026-11-01"}, "params['window_end'] is missing"),
        ({"window_end": "2026-11-01"}, "params['window_start'] is missing"),
        ({"window_start": "yesterday", "window_end": "2026-11-01"}, "params['window_start']: expected an ISO 8601"),
        ({"window_start": "2026-11-02", "window_end": "2026-11-01"}, "params['window_end'] (2026-11-01"),
        ({"window_start": 20261101, "window_end": "2026-11-02"}, "params['window_start']: expected an ISO 8601"),
    ],
)
def test_bad_params_name_the_param(params: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("(", r"\(")):
        resolve_window(make_context(params=params))


def test_manual_run_of_an_unscheduled_dag_says_which_params_to_pass():
    with pytest.raises(ConfigurationError) as error:
        resolve_window(make_context(None))
    assert "'window_start'/'window_end'" in str(error.value)
    assert "NullTimetable" in str(error.value)


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
