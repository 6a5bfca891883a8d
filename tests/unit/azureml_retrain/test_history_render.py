"""Edge cases of the model history plot that the ledgers of the integration tests do not reach."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from azureml_retrain.config import parse_config
from azureml_retrain.history import render
from azureml_retrain.history.data import build_history
from azureml_retrain.ledger import LedgerRecord
from support.retraining import shipped_config_data

CONFIG = parse_config(shipped_config_data("churn"), "churn.yaml")
T0 = datetime(2026, 11, 24, 2, 5, tzinfo=UTC)


def record(kind: str, at: datetime, **fields) -> LedgerRecord:
    return LedgerRecord(
        kind=kind, target="churn-retrain01", model_uri=f"m-{at:%H%M%S}", recorded_at=at.isoformat(), **fields
    )


def svg(history) -> ET.Element:
    text = render.plot(history)
    return ET.fromstring(text)


def test_a_single_change_gets_a_time_axis_around_it():
    history = build_history(CONFIG, "churn-retrain01", [record("promotion", T0, metrics={"AUC": 0.8})])
    plot = svg(history)
    ticks = [t.text for t in plot.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "tick"]
    assert "02:00" in ticks  # round times either side of the one change
    assert [m.get("data-kind") for m in plot.iter() if "marker" in (m.get("class") or "")] == ["promotion"]


def test_changes_without_the_metric_sit_on_the_no_value_band():
    history = build_history(
        CONFIG, "churn-retrain01", [record("baseline", T0), record("rollback", T0 + timedelta(hours=1))]
    )
    plot = svg(history)
    ys = {m.get("data-kind"): m for m in plot.iter() if "marker" in (m.get("class") or "")}
    assert set(ys) == {"baseline", "rollback"}
    assert not [p for p in plot.iter("{http://www.w3.org/2000/svg}path") if p.get("class") == "serving"]


def test_time_labels_follow_the_span():
    start = T0
    for span, label in (
        (timedelta(minutes=2), "%H:%M:%S"),
        (timedelta(hours=3), "%H:%M"),
        (timedelta(days=9), "%b %d"),
    ):
        ticks, fmt = render._time_ticks(start, start + span)
        assert fmt == label and 2 <= len(ticks) <= 7
        assert all(start <= t <= start + span for t in ticks)


def test_lower_is_better_metrics_say_so():
    energy = parse_config(shipped_config_data("energy"), "energy.yaml")
    history = build_history(
        energy, "energy-predictive", [record("promotion", T0, metrics={"Root Mean Squared Error": 1.2})]
    )
    assert history.higher_is_better is False
    assert "Root Mean Squared Error (lower is better)" in render.plot(history)
