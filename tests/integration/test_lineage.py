"""OpenLineage events of the shipped ``retrain_churn`` DAG, through the provider's file transport.

The DAG runs in a process of its own (``support.lineage_run``) with ``AIRFLOW__OPENLINEAGE__TRANSPORT``
set: the provider reads it when its plugin is imported. Every event is validated against the
OpenLineage spec's JSON Schema (``support/openlineage_spec``: the spec files whose ``$id`` is the
schema URL the installed client's classes name; the client's wheel does not ship them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from azureml_retrain.config import load_config
from azureml_retrain.lineage import FACET_SCHEMA_FILE
from support.retraining import CONFIG_FOLDER, DATA_CONTAINER, Retraining, land_window

pytestmark = pytest.mark.integration

SPEC = Path(__file__).parent.parent / "support" / "openlineage_spec"
TESTS = Path(__file__).parent.parent
# Far from the other tests' days: their ledger records would refuse an older window.
DAY = datetime(2027, 3, 10, tzinfo=UTC)
SECRETS = ("sig=", "AccountKey", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq", "Bearer ")


def spec_registry() -> Any:
    from referencing import Registry, Resource

    # The spec's schemas, and the package's own for its custom facets.
    files = [*sorted(SPEC.rglob("*.json")), FACET_SCHEMA_FILE]
    resources = [Resource.from_contents(json.loads(p.read_text())) for p in files]
    return Registry().with_resources((r.id(), r) for r in resources if r.id())  # type: ignore[misc]


def validate(event: dict[str, Any], registry: Any) -> None:
    """The event against OpenLineage.json, and every facet against the schema its ``_schemaURL`` names
    (the spec's, or the package's for its custom facets): none is unknown."""
    from jsonschema import Draft202012Validator

    spec = json.loads((SPEC / "OpenLineage.json").read_text())
    Draft202012Validator(spec, registry=registry).validate(event)
    for facet in facets_of(event):
        url = str(facet["_schemaURL"])
        base, _, pointer = url.partition("#")
        assert registry.get(base) is not None, f"no schema for {url}"
        schema = {"$ref": url} if pointer else {"$ref": base}
        Draft202012Validator(schema, registry=registry).validate(facet)


def facets_of(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for owner in (event.get("run", {}), event.get("job", {}), *event.get("inputs", []), *event.get("outputs", [])):
        for key in ("facets", "inputFacets", "outputFacets"):
            yield from (owner.get(key) or {}).values()


def run_churn(
    tmp_path: Path, blob_service: Any, day: datetime, *, broken_data: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the shipped churn DAG on ``day``'s data (``broken_data``: a CSV Studio rejects as input)."""
    shipped = Retraining(load_config(CONFIG_FOLDER / "churn.yaml"), None, "")
    for name in (shipped.config.ledger_container,):
        if blob_service.get_container_client(name).exists():
            blob_service.delete_container(name)
    land_window(blob_service, shipped, day, dataset="churn", window=1)
    if broken_data:  # the same header twice: Studio's input error, which ends the task without retries
        prefix = shipped.config.data.prefix.format(window_start=day, window_end=day + timedelta(days=1))
        blob = blob_service.get_blob_client(DATA_CONTAINER, f"{prefix}part-0.csv")
        header, *rows = blob.download_blob().readall().decode().splitlines()
        blob.upload_blob("\n".join([f"{header},{header}", *(f"{r},{r}" for r in rows)]) + "\n", overwrite=True)
    events_file = tmp_path / "events.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "retraining-test",
        # The project's root before tests/ (whose devtools/ holds the devtools' tests).
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    logical_date = shipped.run_date(day + timedelta(days=1)).isoformat()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "support.lineage_run", logical_date],
            cwd=TESTS.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            # Below the test's own timeout, so that a run that hangs fails with what it logged so far.
            timeout=240,
        )
    except subprocess.TimeoutExpired as hung:
        logged = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else str(hung.stderr or "")
        pytest.fail(f"the lineage run did not end within {hung.timeout:.0f}s; it logged:\n{logged[-8000:]}")
    assert done.returncode == 0, done.stderr[-4000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    return outcome, events


def task_events(events: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [e for e in events if e["job"]["name"].startswith(f"retrain_churn.{task}")]


def names(datasets: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in datasets}


def test_a_churn_run_emits_valid_connected_events_without_secrets(emulator, blob_service, airflow_db, tmp_path):
    outcome, events = run_churn(tmp_path, blob_service, DAY)

    assert outcome["state"] == "success", outcome
    registry = spec_registry()
    for event in events:
        validate(event, registry)
        text = json.dumps(event)
        assert not [s for s in SECRETS if s in text], text
    account = "devstoreaccount1"
    (sensed,) = [e for e in task_events(events, "wait_for_data") if e["eventType"] == "COMPLETE"]
    training_blob = ("wasbs://training-data@devstoreaccount1.dfs.core.windows.net", "churn/2027-03-10/part-0.csv")
    assert training_blob in names(sensed["inputs"])
    (train,) = [e for e in task_events(events, "train") if e["eventType"] == "COMPLETE"]
    assert training_blob in names(train["inputs"])
    model = next(d for d in train["outputs"] if d["name"].endswith(".ilearner"))
    assert model["namespace"] == f"wasbs://models@{account}.dfs.core.windows.net"
    assert any(d["name"].endswith(".csv") for d in train["outputs"])
    bes = train["run"]["facets"]["azuremlBesJob"]
    assert bes["jobId"] and bes["status"] == "Finished" and "/services/" in bes["service"]
    (evaluate,) = [e for e in task_events(events, "evaluate") if e["eventType"] == "COMPLETE"]
    verdict = evaluate["run"]["facets"]["azuremlModelEvaluation"]
    assert verdict["promote"] is True and verdict["challenger"]["AUC"] > 0.7
    promoted = [e for e in task_events(events, "promote_classic_endpoints") if e["eventType"] == "COMPLETE"]
    (event,) = promoted  # one batch: both endpoints, an output each
    assert names(event["inputs"]) == {(model["namespace"], model["name"])}
    outputs = sorted(names(event["outputs"]))
    assert all(namespace.startswith("azureml://") for namespace, _ in outputs)
    assert [name.rsplit("/", 2)[1:] for _, name in outputs] == [["endpoints", "retrain01"], ["endpoints", "retrain02"]]


def test_a_failed_churn_run_emits_fail_events(emulator, blob_service, airflow_db, tmp_path):
    outcome, events = run_churn(tmp_path, blob_service, DAY + timedelta(days=1), broken_data=True)

    assert outcome["state"] == "failed", outcome
    registry = spec_registry()
    for event in events:
        validate(event, registry)
    (failed,) = [e for e in task_events(events, "train") if e["eventType"] == "FAIL"]
    assert failed["run"]["facets"]["azuremlBesJob"]["status"] == "Failed"
    assert any(d["name"].endswith(".ilearner") for d in failed["outputs"])
    assert [e for e in events if e["job"]["name"] == "retrain_churn" and e["eventType"] == "FAIL"]


def test_lineage_is_quiet_unless_a_transport_is_configured(tmp_path):
    """The local default: no transport, so the provider's plugin registers no listener (no event is
    built or sent, nothing is logged about it); one transport setting turns it on."""
    from devtools.services import airflow_environment

    probe = (
        "import json; from airflow.providers.openlineage import conf; "
        "from airflow.providers.openlineage.plugins.openlineage import OpenLineageProviderPlugin as P; "
        "print(json.dumps([conf.is_disabled(), len(P.listeners)]))"
    )
    base = {k: v for k, v in os.environ.items() if "OPENLINEAGE" not in k}
    base |= airflow_environment(tmp_path / "home")

    def ask(extra: dict[str, str]) -> tuple[list[Any], str]:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    (disabled, listeners), stderr = ask({})
    assert (disabled, listeners) == (True, 0)
    assert "openlineage" not in stderr.lower(), stderr
    transport = json.dumps({"type": "file", "log_file_path": str(tmp_path / "events.jsonl")})
    assert ask({"AIRFLOW__OPENLINEAGE__TRANSPORT": transport})[0] == [False, 1]
