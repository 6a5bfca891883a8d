"""`python -m devtools.land_data`: its command line, windows, and what it refuses to land, all settled
before any storage call (these tests never reach storage: landing itself fails them)."""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from devtools import land_data, services
from devtools.services import ROOT

CHURN = ROOT / "dags" / "retraining" / "churn.yaml"
UTC_MIDNIGHT = {"tzinfo": UTC}


@pytest.fixture(autouse=True)
def no_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a unit test reached storage")

    monkeypatch.setattr(land_data, "land", refuse)


@pytest.fixture(scope="module")
def churn() -> Any:
    from azureml_retrain.config import load_config

    return load_config(CHURN)


def with_data(config: Any, **data: Any) -> Any:
    return config.model_copy(update={"data": config.data.model_copy(update=data)})


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The message of a command line the command refuses as a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        land_data.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- --window and --day ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-11-20/2026-11-21", datetime(2026, 11, 20, **UTC_MIDNIGHT), datetime(2026, 11, 21, **UTC_MIDNIGHT)),
        (
            "2026-11-20T02:00Z/2026-11-21T02:00:00+00:00",
            datetime(2026, 11, 20, 2, tzinfo=UTC),
            datetime(2026, 11, 21, 2, tzinfo=UTC),
        ),
        # No time zone means UTC; an offset is converted; a date-only end is midnight UTC.
        ("2026-11-20T02:00/2026-11-21", datetime(2026, 11, 20, 2, tzinfo=UTC), datetime(2026, 11, 21, **UTC_MIDNIGHT)),
        (
            "2026-11-20T03:00+01:00/2026-11-20T15:00+01:00",
            datetime(2026, 11, 20, 2, tzinfo=UTC),
            datetime(2026, 11, 20, 14, tzinfo=UTC),
        ),
    ],
)
def test_a_window_is_an_iso_interval_of_dates_or_datetimes_in_utc(text: str, start: datetime, end: datetime):
    assert land_data.parse_window(text) == (start, end)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-20", "--window: expected an interval START/END"),
        ("2026-11-20/", "--window: expected an interval START/END"),
        ("/2026-11-21", "--window: expected an interval START/END"),
        ("2026-11-20/2026-11-21/2026-11-22", "--window: expected an interval START/END"),
        ("2026-11-20/tomorrow", "--window END: expected an ISO 8601 date or datetime"),
        ("2026-13-01/2026-11-21", "--window START: expected an ISO 8601 date or datetime"),
        ("2026-11-21/2026-11-20", "--window: the end 2026-11-20T00:00:00+00:00 must be after the start"),
        ("2026-11-20T02:00Z/2026-11-20T02:00Z", "--window: the end 2026-11-20T02:00:00+00:00 must be after"),
    ],
)
def test_an_incomplete_or_inverted_window_is_refused_naming_the_option(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
):
    assert refusal(capsys, CHURN, "--window", text).startswith(f"python -m devtools.land_data: error: {message}")


def test_one_of_window_and_day_is_required_and_only_one(capsys: pytest.CaptureFixture[str]):
    assert "one of the arguments --window --day is required" in refusal(capsys, CHURN)
    both = refusal(capsys, CHURN, "--day", "2026-11-20", "--window", "2026-11-20/2026-11-21")
    assert "not allowed with argument" in both
    assert refusal(capsys, CHURN, "--day", "20/11/2026").endswith(
        "--day: expected a date such as 2026-11-20, got '20/11/2026'"
    )


def test_a_day_is_the_schedules_interval_that_starts_that_day_in_the_configs_time_zone(churn: Any):
    assert land_data.window_of(churn, date(2026, 11, 20)) == (  # "0 2 * * *"
        datetime(2026, 11, 20, 2, tzinfo=UTC),
        datetime(2026, 11, 21, 2, tzinfo=UTC),
    )
    # West of UTC: the 20th's 02:00 in New York, not the 19th's (the day is local, not UTC midnight).
    new_york = churn.model_copy(update={"timezone": "America/New_York"})
    assert land_data.window_of(new_york, date(2026, 11, 20)) == (
        datetime(2026, 11, 20, 7, tzinfo=UTC),
        datetime(2026, 11, 21, 7, tzinfo=UTC),
    )
    # A datetime counts by its date (the demo passes UTC midnights).
    assert land_data.window_of(new_york, datetime(2026, 11, 20, tzinfo=UTC)) == land_data.window_of(
        new_york, date(2026, 11, 20)
    )


def test_whether_a_window_is_one_interval_of_the_schedule(churn: Any):
    assert land_data.is_schedule_interval(churn, *land_data.window_of(churn, date(2026, 11, 20)))
    assert not land_data.is_schedule_interval(churn, *land_data.parse_window("2026-11-20/2026-11-21"))
    assert not land_data.is_schedule_interval(churn, *land_data.parse_window("2026-11-20T02:00Z/2026-11-22T02:00Z"))


# -- what lands ------------------------------------------------------------------------------------


def test_generated_data_is_the_configs_dataset_split_over_min_files(churn: Any):
    header = "Tenure,MonthlyCharges,SupportCalls,ContractMonths,Age,Churn"
    (single,) = land_data.generated_files(churn, "churn", rows=50, drift=1, seed=7)
    assert single.name == "part-0.csv"
    assert isinstance(single.source, bytes)
    lines = single.source.decode().splitlines()
    assert lines[0] == header and len(lines) == 51
    three = land_data.generated_files(with_data(churn, min_files=3), "churn", rows=50)
    assert [f.name for f in three] == ["part-0.csv", "part-1.csv", "part-2.csv"]
    assert sum(len(f.source.decode().splitlines()) - 1 for f in three if isinstance(f.source, bytes)) == 50
    with pytest.raises(land_data.UsageError, match=re.escape("data.min_files is 3: generate at least that many rows")):
        land_data.generated_files(with_data(churn, min_files=3), "churn", rows=2)


def test_files_the_sensor_would_refuse_are_refused_before_anything_lands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    window = ("--window", "2026-11-20/2026-11-21")
    good = write(tmp_path / "part-0.csv", "a,b\n1,2\n")
    notes = write(tmp_path / "notes.txt", "not data")
    empty = write(tmp_path / "empty.csv", "")
    marker = write(tmp_path / "_SUCCESS", "x")
    (tmp_path / "other").mkdir()
    twin = write(tmp_path / "other" / "part-0.csv", "a,b\n3,4\n")
    prefix = "python -m devtools.land_data: error: FILE"

    assert refusal(capsys, CHURN, *window, good, notes) == (
        f"{prefix} notes.txt: does not match data.pattern '*.csv' of churn.yaml: the sensor would not train on it "
        "(rename the file, or change the pattern)"
    )
    assert refusal(capsys, CHURN, *window, empty).startswith(f"{prefix} empty.csv: is empty")
    assert refusal(capsys, CHURN, *window, marker).startswith(
        f"{prefix} _SUCCESS: is the marker's name (data.marker '_SUCCESS' in churn.yaml)"
    )
    assert refusal(capsys, CHURN, *window, good, twin).startswith(
        f"{prefix} {twin}: another FILE has the base name 'part-0.csv'"
    )
    assert refusal(capsys, CHURN, *window, tmp_path / "missing.csv").endswith("missing.csv: no such file")
    assert refusal(capsys, CHURN, *window, good, "--seed", "3") == (
        "python -m devtools.land_data: error: --seed: shape generated data; FILEs are landed as they are"
    )


def test_a_pattern_with_window_placeholders_and_min_files_are_the_sensors(churn: Any):
    from azureml_retrain.windows import Window

    config = with_data(churn, pattern="{window_start:%Y%m%d}-*.csv", min_files=2)
    window = Window(*land_data.parse_window("2026-11-20/2026-11-21"), "arguments")
    criteria = land_data.arrival_criteria(config, window)
    assert (criteria.container, criteria.prefix, criteria.marker_name) == (
        "training-data",
        "churn/2026-11-20/",
        "churn/2026-11-20/_SUCCESS",
    )
    files = [land_data.DataFile("20261120-a.csv", b"a\n1\n"), land_data.DataFile("20261120-b.csv", b"a\n2\n")]
    land_data.check_files(config, criteria, files)
    with pytest.raises(land_data.UsageError, match=re.escape("asks for at least 2 files (data.min_files); 1 given")):
        land_data.check_files(config, criteria, files[:1])
    with pytest.raises(land_data.UsageError, match=re.escape("does not match data.pattern '20261120-*.csv'")):
        land_data.check_files(config, criteria, [*files, land_data.DataFile("20261121-c.csv", b"a\n3\n")])


def test_a_config_trained_elsewhere_must_be_given_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    text = CHURN.read_text().replace("azureml_conn_id: azureml_churn_training", "azureml_conn_id: azureml_prod")
    config = write(tmp_path / "churn_prod.yaml", text.replace("model: churn\n", "model: churn_prod\n"))
    assert refusal(capsys, config, "--day", "2026-11-20").endswith(
        "churn_prod.yaml trains through connection 'azureml_prod', which has no local dataset to generate (the local "
        "training services: azureml_churn_training, azureml_energy_training): pass the window's FILEs"
    )


def test_a_broken_config_is_reported_with_its_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = write(tmp_path / "typo.yaml", CHURN.read_text().replace("model: churn\n", "").replace("data:", "dta:"))
    assert land_data.main([config, "--day", "2026-11-20"]) == 1
    assert "typo.yaml: dta: not a field of a retraining config; did you mean 'data'?" in capsys.readouterr().err


# -- the command -----------------------------------------------------------------------------------


def test_a_model_name_is_a_config_in_the_retraining_folder():
    assert land_data.resolve_config_path("churn") == CHURN
    assert land_data.resolve_config_path("elsewhere/churn.yaml") == Path("elsewhere/churn.yaml")


def test_it_ends_with_the_commands_that_run_the_dag_on_the_window(churn: Any):
    from azureml_retrain.windows import Window

    window = Window(*land_data.window_of(churn, date(2026, 11, 20)), "schedule")
    unpause, trigger = land_data.next_steps(churn, window)
    assert unpause.startswith("airflow dags unpause retrain_churn ")
    words = shlex.split(trigger)
    assert words[:4] == ["airflow", "dags", "trigger", "retrain_churn"] and words[4] == "--conf"
    assert json.loads(words[5]) == {"window": "2026-11-20T02:00:00+00:00/2026-11-21T02:00:00+00:00"}


def test_connections_come_from_the_shells_airflow_environment_else_the_local_services():
    configured = {"AIRFLOW_HOME": "/srv/airflow"}
    assert "this shell's Airflow environment (AIRFLOW_HOME=/srv/airflow)" in (
        land_data.use_local_services_unless_configured(configured)
    )
    assert configured == {"AIRFLOW_HOME": "/srv/airflow"}

    bare = {"AIRFLOW_CONN_WASB_DEFAULT": "kept"}
    assert "the local services' environment" in land_data.use_local_services_unless_configured(bare)
    local = services.airflow_environment()
    assert bare["AIRFLOW_CONN_WASB_DEFAULT"] == "kept"  # what the shell sets wins
    assert bare["AIRFLOW_HOME"] == local["AIRFLOW_HOME"]
    assert bare["AIRFLOW_CONN_AZUREML_CHURN_TRAINING"] == local["AIRFLOW_CONN_AZUREML_CHURN_TRAINING"]


def test_help_explains_the_command(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        land_data.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--window START/END", "--day DAY", "data.marker", "written last", "data.wasb_conn_id", "--replace"):
        assert words in text
