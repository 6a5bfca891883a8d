"""`python -m devtools.land_data` against a real Azurite, for the shipped churn config: what it lands,
that the marker goes up only once every data blob is there (the DAG's own sensor, asked before each
upload, never accepts a half-landed window), and that the retraining DAG's sensor accepts the result.
The demo lands through the same function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from devtools import demo, land_data
from devtools.services import AZURITE_KEY, ROOT, LocalPorts
from emulator.datasets import generate_csv

pytestmark = pytest.mark.integration

CHURN = ROOT / "dags" / "retraining" / "churn.yaml"
CONTAINER = "training-data"  # the shipped config's
HEADER = "Tenure,MonthlyCharges,SupportCalls,ContractMonths,Age,Churn"


@pytest.fixture(scope="module")
def churn() -> Any:
    from azureml_retrain.config import load_config

    return load_config(CHURN)


@pytest.fixture
def folder(blob_service: BlobServiceClient, request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """The churn folder of a day (days far apart per test: no test sees another's blobs); emptied after."""
    used: list[str] = []

    def of_day(day: str) -> str:
        used.append(f"churn/{day}/")
        return used[-1]

    yield of_day
    container = blob_service.get_container_client(CONTAINER)
    for prefix in used:
        for blob in container.list_blobs(name_starts_with=prefix):
            container.delete_blob(blob.name)


def blobs_in(blob_service: BlobServiceClient, prefix: str) -> dict[str, Any]:
    return {b.name: b for b in blob_service.get_container_client(CONTAINER).list_blobs(name_starts_with=prefix)}


def dag_sensor(config: Any, start: str, end: str) -> tuple[Any, dict[str, Any]]:
    """The retraining DAG's own ``wait_for_data`` task, rendered for a manual run of the window."""
    from azureml_retrain.factory import build_dag

    dag = build_dag(config)
    task = dag.get_task("wait_for_data")
    context = {
        "params": {"data_prefix": None, "window": f"{start}/{end}"},
        "dag_run": None,
        "logical_date": None,
        "dag": dag,
    }
    task.render_template_fields(context)
    return task, context


def test_generated_data_lands_for_the_churn_config_and_its_dag_accepts_the_window(
    azurite: str, blob_service: BlobServiceClient, folder: Callable[[str], str], churn: Any, capsys: Any
):
    prefix = folder("2031-01-05")
    assert land_data.main([str(CHURN), "--day", "2031-01-05", "--rows", "120"]) == 0
    out = capsys.readouterr().out

    blobs = blobs_in(blob_service, prefix)
    assert sorted(blobs) == [f"{prefix}_SUCCESS", f"{prefix}part-0.csv"]
    data = blob_service.get_blob_client(CONTAINER, f"{prefix}part-0.csv").download_blob().readall().decode()
    assert data.splitlines()[0] == HEADER and len(data.splitlines()) == 121
    assert blobs[f"{prefix}_SUCCESS"].size == 0

    size = blobs[f"{prefix}part-0.csv"].size
    assert "Window 2031-01-05 02:00 -> 2031-01-06 02:00 UTC of retrain_churn" in out
    assert f"wrote    {CONTAINER}/{prefix}part-0.csv" in out and f"{size:,} bytes" in out
    assert f"{CONTAINER}/{prefix}_SUCCESS" in out and "(marker, written last)" in out
    last = out.strip().splitlines()[-2:]
    assert last[0].strip().startswith("airflow dags unpause retrain_churn")
    assert last[1].strip() == (
        "airflow dags trigger retrain_churn --conf "
        """'{"window": "2031-01-05T02:00:00+00:00/2031-01-06T02:00:00+00:00"}'"""
    )
    for secret in (AZURITE_KEY, "AccountKey", "sig="):
        assert secret not in out

    task, context = dag_sensor(churn, "2031-01-05T02:00:00+00:00", "2031-01-06T02:00:00+00:00")
    accepted = task.execute(context)  # a first check that accepts returns at once (no deferral)
    assert accepted["prefix"] == prefix
    assert [b["name"] for b in accepted["blobs"]] == [f"{prefix}part-0.csv"]
    assert accepted["marker"]["name"] == f"{prefix}_SUCCESS"


def test_the_marker_goes_up_only_after_every_data_blob_and_a_relanding_reopens_the_window(
    azurite: str,
    blob_service: BlobServiceClient,
    folder: Callable[[str], str],
    churn: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
):
    prefix = folder("2031-02-10")
    window = ["--window", "2031-02-10T02:00Z/2031-02-11T02:00Z"]
    assert land_data.main([str(CHURN), *window]) == 0  # an earlier landing: part-0.csv and its marker
    files = []
    for index, name in enumerate(("a.csv", "b.csv", "c.csv")):
        files.append(tmp_path / name)
        files[-1].write_text(generate_csv("churn", rows=40, window=2, seed=index))

    task, context = dag_sensor(churn, "2031-02-10T02:00:00+00:00", "2031-02-11T02:00:00+00:00")
    criteria = task.criteria(context)
    real_upload = ContainerClient.upload_blob
    # Before each upload: what the storage's own listing shows, and the DAG sensor's verdict on it.
    seen: list[tuple[str, list[str], bool]] = []

    def upload_after_looking(self: ContainerClient, name: str, data: Any, *args: Any, **kwargs: Any) -> Any:
        listed = sorted(blobs_in(blob_service, prefix))
        assessment = task.check(criteria, previous=None)
        seen.append((name, listed, bool(assessment and assessment.ready)))
        return real_upload(self, name, data, *args, **kwargs)

    monkeypatch.setattr(ContainerClient, "upload_blob", upload_after_looking)
    assert land_data.main([str(CHURN), *window, "--replace", *map(str, files)]) == 0
    monkeypatch.undo()
    out = capsys.readouterr().out
    assert f"removed  {CONTAINER}/{prefix}part-0.csv" in out

    data_names = [f"{prefix}{f.name}" for f in files]
    assert [name for name, _, _ in seen] == [*data_names, f"{prefix}_SUCCESS"]
    # The earlier marker went first (the folder is open while it changes), then the earlier data.
    assert seen[0][1] == []
    for index, (_, listed, accepted) in enumerate(seen):
        assert listed == data_names[:index]
        assert not accepted, f"the sensor accepted the window before {seen[index][0]} was uploaded"

    blobs = blobs_in(blob_service, prefix)
    marker = blobs[f"{prefix}_SUCCESS"]
    assert all(marker.last_modified >= blobs[name].last_modified for name in data_names)
    assert all(marker.creation_time >= blobs[name].creation_time for name in data_names)
    assessment = task.check(criteria, previous=None)
    assert assessment is not None and assessment.ready and assessment.result is not None
    assert sorted(b["name"] for b in assessment.result["blobs"]) == data_names


def test_the_demo_lands_its_days_through_the_same_function(
    azurite: str, blob_service: BlobServiceClient, folder: Callable[[str], str], churn: Any, local_ports: LocalPorts
):
    prefixes = [folder("2031-03-01"), folder("2031-03-02")]
    days = [date(2031, 3, 1), date(2031, 3, 2)]
    # With ports, as `make e2e-distributed` lands in its own Azurite; without, through the config's connection.
    demo.land_data([demo.DemoModel(churn, "churn")], days[:1], local_ports)
    demo.land_data([demo.DemoModel(churn, "churn")], days[1:])
    for prefix in prefixes:
        blobs = blobs_in(blob_service, prefix)
        assert sorted(blobs) == [f"{prefix}_SUCCESS", f"{prefix}part-0.csv"]
        data = blob_service.get_blob_client(CONTAINER, f"{prefix}part-0.csv").download_blob().readall().decode()
        # Each call's first day: drift 1, seed 101, as before the demo landed through devtools.land_data.
        assert data == generate_csv("churn", rows=demo.ROWS_PER_DAY, window=1, seed=101)
