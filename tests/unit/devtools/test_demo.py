"""`make demo` runs every config it can and says why it skips the others; its runs carry their window
in the conf (no scheduled run's logical date), aligned on each config's own schedule."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import yaml

from devtools import demo
from devtools.services import ROOT

SHIPPED = ROOT / "dags" / "retraining"


def write(folder: Path, name: str, data: dict) -> None:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_every_runnable_config_is_taken_and_each_skipped_one_says_why(tmp_path: Path):
    for name in ("churn", "energy"):
        shutil.copy(SHIPPED / f"{name}.yaml", tmp_path / f"{name}.yaml")
    churn = yaml.safe_load((SHIPPED / "churn.yaml").read_text())
    write(tmp_path, "churn_eu", {**churn, "model": "churn_eu"})
    write(tmp_path, "elsewhere", {**churn, "model": "elsewhere", "training": {"azureml_conn_id": "azureml_prod"}})
    write(tmp_path, "parquet", {**churn, "model": "parquet", "data": {**churn["data"], "pattern": "*.parquet"}})
    (tmp_path / "typo.yaml").write_text("model: typo\ntrainnig: {}\n")

    models, skipped = demo.demo_models(tmp_path)

    assert {m.config.model: m.dataset for m in models} == {"churn": "churn", "churn_eu": "churn", "energy": "energy"}
    assert len(skipped) == 3, skipped
    elsewhere, parquet, typo = sorted(skipped)
    assert elsewhere.startswith("elsewhere.yaml: trains through connection 'azureml_prod', not one of the local")
    assert parquet.startswith("parquet.yaml: data.pattern '*.parquet' does not match the demo's part-0.csv")
    assert typo.startswith("typo.yaml: ") and "did you mean 'training'?" in typo and typo.endswith("folder)")


def test_a_runs_window_is_the_schedules_interval_that_starts_that_day():
    models, _ = demo.demo_models(SHIPPED)
    by_model = {m.config.model: m.config for m in models}
    day = datetime(2026, 12, 4, tzinfo=UTC)
    assert demo.window_of(by_model["churn"], day) == (  # "0 2 * * *"
        datetime(2026, 12, 4, 2, tzinfo=UTC),
        datetime(2026, 12, 5, 2, tzinfo=UTC),
    )
    hourly = by_model["churn"].model_copy(update={"schedule": "30 * * * *", "timezone": "Europe/Paris"})
    assert demo.window_of(hourly, day) == (  # the first half past in Paris on the 4th: 23:30 UTC the 3rd
        datetime(2026, 12, 3, 23, 30, tzinfo=UTC),
        datetime(2026, 12, 4, 0, 30, tzinfo=UTC),
    )


def test_the_ids_a_config_names_are_listed_without_any_key():
    from devtools.services import describe_local_services
    from emulator.catalog import load_seed

    text = "\n".join(describe_local_services())
    seed = load_seed()
    predictive = next(s for s in seed.workspaces[0].web_services if s.kind == "predictive")
    assert f"web_service_id {predictive.id}; endpoints default, retrain01" in text
    assert "energy-predictive (resource group" in text
    assert "azureml_churn_training; training data: the emulator's 'churn' dataset" in text
    secrets = [e.primary_key for s in seed.workspaces[0].web_services for e in s.endpoints]
    secrets += [seed.workspaces[0].authorization_token] + [a.primary_key for a in seed.arm_web_services]
    assert not [secret for secret in secrets if secret in text]
