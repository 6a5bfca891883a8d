"""The model history view: ledger records really written to Azurite, read back, rendered, and served
by the plugin inside a real Airflow API server app (in process)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from azureml_retrain.config import RetrainingConfig, parse_config
from azureml_retrain.history import render
from azureml_retrain.history.data import build_history, load_catalog, read_history
from azureml_retrain.ledger import NO_MODEL, LedgerRecord, PromotionLedger
from support.airflow_api import api_client
from support.retraining import shipped_config_data

pytestmark = pytest.mark.integration

TARGET = "churn-retrain01"
SEED = "aml://trainedmodel/seed-churn.ilearner"
MODELS = "http://127.0.0.1:10000/devstoreaccount1/models/churn"
SAS = "?sv=2024-11-04&se=2026-11-30T00%3A00%3A00Z&sr=b&sp=r&sig=S3cretSignature%3D"
T0 = datetime(2026, 11, 24, 2, 5, tzinfo=UTC)
TRAINED_ON = "churn-data/incoming/2026-11-23/churn.csv"
SVG = "{http://www.w3.org/2000/svg}"


def window(day: int) -> dict[str, str]:
    start = datetime(2026, 11, day, tzinfo=UTC)
    return {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()}


def metrics(auc: float) -> dict[str, float]:
    return {"AUC": auc, "Accuracy": auc - 0.05}


@pytest.fixture
def config(container: str) -> RetrainingConfig:
    """The shipped churn config, with its ledger in this test's container."""
    return parse_config({**shipped_config_data("churn"), "ledger_container": container}, "churn.yaml (test copy)")


@pytest.fixture
def ledger(azurite: str, config: RetrainingConfig) -> PromotionLedger:
    """A ledger with the life of one target: first promotion over the seed, a second promotion, a
    rejected challenger, a rollback; written through the ledger's own compare-and-set API."""
    ledger = PromotionLedger(config.data.wasb_conn_id, config.ledger_container, lock_timeout=10)
    first, second = f"{MODELS}/w23/run1/model.ilearner", f"{MODELS}/w24/run2/model.ilearner{SAS}"

    def change(kind: str, model: str, previous: str, at: datetime, **fields: Any) -> LedgerRecord:
        return LedgerRecord(
            kind=kind,  # type: ignore[arg-type]
            target=TARGET,
            model_uri=model,
            previous_model_uri=previous,
            recorded_at=at.isoformat(),
            **fields,
        )

    with ledger.guard(TARGET, expected_model_uri=NO_MODEL, window=window(23)) as guard:
        guard.record(
            change(
                "promotion",
                first,
                SEED,
                T0,
                metrics=metrics(0.8448),
                window=window(23),
                dag_id=config.dag_id,
                run_id="scheduled__1",
                inputs=[TRAINED_ON],
            ),
            baseline_uri=SEED,
        )
    # The approval step's entries (written by the run; the second run's promotion needed one).
    ledger.note_decision(
        config.dag_id,
        {
            "run_id": "scheduled__1",
            "window": window(23),
            "promote": True,
            "approval": approval("not_needed", None, None, None),
        },
    )
    ledger.note_decision(
        config.dag_id,
        {
            "run_id": "scheduled__2",
            "window": window(24),
            "promote": True,
            "approval": approval("approved", "alice", T0 + timedelta(hours=23), "ok"),
        },
    )
    with ledger.guard(TARGET, expected_model_uri=first, window=window(24)) as guard:
        guard.record(
            change(
                "promotion",
                second,
                first,
                T0 + timedelta(days=1),
                metrics=metrics(0.9198),
                window=window(24),
                dag_id=config.dag_id,
                run_id="scheduled__2",
            )
        )
    ledger.note_decision(
        config.dag_id,
        {
            "run_id": "scheduled__3",
            "window": window(25),
            "promote": False,
            "reason": "reject: AUC 0.9072 is below the champion's <b>0.9198</b>",
            "decision": {"challenger": metrics(0.9072)},
            "approval": approval("rejected", "bob", T0 + timedelta(days=2), "<i>looks off</i>"),
        },
    )
    with ledger.guard(TARGET, expected_model_uri=second, window=None) as guard:
        guard.record(
            change(
                "rollback",
                first,
                second,
                T0 + timedelta(days=2, hours=3),
                metrics=metrics(0.8448),
                window=window(23),
                dag_id="rollback_model",
                run_id="manual__rollback",
                reason="<script>alert(1)</script> put back by hand",
            )
        )
    return ledger


def approval(outcome: str, by: str | None, at: datetime | None, comment: str | None) -> dict[str, Any]:
    """A decision log entry's ``approval``, as the approval step writes it."""
    return {
        "outcome": outcome,
        "by": by,
        "comment": comment,
        "at": at.isoformat() if at else None,
        "why_needed": "AUC gain above 0.05",
    }


def svg_of(page: str) -> ET.Element:
    start = page.index("<svg")
    return ET.fromstring(page[start : page.index("</svg>", start) + len("</svg>")])


def markers(svg: ET.Element) -> list[str]:
    return [element.get("data-kind", "") for element in svg.iter() if "marker" in (element.get("class") or "").split()]


def test_history_reads_every_change_of_a_target_from_its_ledger(ledger, config):
    history = read_history(config, TARGET)

    assert [c.kind for c in history.changes] == ["baseline", "promotion", "promotion", "rollback"]
    assert history.serving is not None and history.serving.kind == "rollback"
    assert history.metric == "AUC" and history.threshold == 0.70 and history.higher_is_better is True
    assert [c.metrics.get("AUC") for c in history.changes] == [None, 0.8448, 0.9198, 0.8448]
    # Only the run that did not change the target is an "evaluation"; promoted runs are in the ledger.
    assert [(e.run_id, e.metrics["AUC"]) for e in history.evaluations] == [("scheduled__3", 0.9072)]
    assert set(history.metrics) == {"AUC", "Accuracy"}


def test_model_uris_never_show_a_sas_token(ledger, config):
    history = read_history(config, TARGET)
    page = render.target_page(history, render.Links())
    shown = json.dumps(history.to_json()) + page

    assert f"{MODELS}/w24/run2/model.ilearner" in shown
    assert "sig=" not in shown and "S3cretSignature" not in shown and "sv=2024" not in shown


def test_the_plot_marks_promotions_rollbacks_and_rejected_challengers(ledger, config):
    page = render.target_page(read_history(config, TARGET, axis="recorded"), render.Links())
    svg = svg_of(page)

    assert svg.get("aria-label") == f"AUC of {TARGET} over time, by recorded at"
    assert sorted(markers(svg)) == [
        "approved",
        "baseline",
        "evaluation",
        "promotion",
        "promotion",
        "rejected",
        "rollback",
    ]
    legend = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    for entry in ("serving model", "promotion", "rollback", "baseline", "evaluated, not promoted", "threshold 0.7"):
        assert entry in legend
    serving = next(e for e in svg.iter(f"{SVG}path") if e.get("class") == "serving")
    # Three changes carry the metric; the baseline (none) leaves the line's first stretch out.
    assert serving.get("d", "").count("H") == 3
    assert any(line.get("class") == "threshold" for line in svg.iter(f"{SVG}line"))


def test_the_ledger_table_lists_changes_newest_first_with_links_to_their_runs(ledger, config):
    links = render.Links(app="/model-history", airflow="/")
    page = render.target_page(read_history(config, TARGET), links)

    kinds = [part.split('"', 1)[0] for part in page.split('<tr class="change ')[1:]]
    assert kinds == ["rollback", "promotion", "promotion", "baseline"]
    assert 'href="/dags/rollback_model/runs/manual__rollback" data-airflow' in page
    assert 'href="/dags/retrain_churn/runs/scheduled__2" data-airflow' in page
    assert "Evaluated, not promoted to this target" in page


def marker_x(element: ET.Element) -> float:
    """The x of a marker, whatever its shape."""
    if element.get("cx"):
        return float(element.get("cx", ""))
    if element.get("points"):
        xs = [float(point.split(",")[0]) for point in element.get("points", "").split()]
        return (min(xs) + max(xs)) / 2
    if element.get("width"):
        return float(element.get("x", "")) + float(element.get("width", "")) / 2
    return marker_x(next(child for child in element if child.get("cx")))


def placed(svg: ET.Element) -> dict[str, list[float]]:
    """Marker kind -> the x of each marker of that kind."""
    xs: dict[str, list[float]] = {}
    for element in svg.iter():
        if "marker" in (element.get("class") or "").split():
            xs.setdefault(element.get("data-kind", ""), []).append(round(marker_x(element), 1))
    return xs


def test_the_plot_puts_models_on_their_data_windows_by_default(ledger, config):
    history = read_history(config, TARGET)
    assert history.axis == "window" and read_history(config, TARGET, axis="nonsense").axis == "window"
    svg = svg_of(render.target_page(history, render.Links()))

    assert svg.get("data-axis") == "window"
    xs = placed(svg)
    # The rollback put back the model of window 23: it sits where that model's promotion does,
    # before the model of window 24, though it was recorded last.
    first, second = sorted(xs["promotion"])
    assert xs["rollback"] == [first] and first < second < xs["evaluation"][0]
    # Each model's window is drawn as a span ending at its marker; the baseline has no window.
    spans = [e for e in svg.iter(f"{SVG}line") if "span" in (e.get("class") or "").split()]
    assert len(spans) == 4 and all(
        round(float(s.get("x2", "")), 1) in {first, second, *xs["evaluation"]} for s in spans
    )
    assert xs["baseline"] == [render.WINDOWLESS_X]
    assert not [p for p in svg.iter(f"{SVG}path") if p.get("class") == "serving"]
    titles = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert "end of the data window (UTC)" in titles and "data window" in titles
    # Against record time the rollback comes last.
    recorded = placed(svg_of(render.target_page(read_history(config, TARGET, axis="recorded"), render.Links())))
    assert recorded["rollback"][0] > max(recorded["promotion"]) > min(recorded["promotion"])


def test_the_axis_can_be_chosen_in_the_page(ledger, config):
    links = render.Links(app="/model-history", airflow="/")
    page = render.target_page(read_history(config, TARGET, metric="Accuracy"), links)

    assert '<strong aria-current="true" data-axis="window">data window</strong>' in page
    assert 'href="/model-history/targets/churn-retrain01?metric=Accuracy&amp;axis=recorded"' in page
    assert '<input type="hidden" name="axis" value="window">' in page  # the metric form keeps the axis
    recorded = render.target_page(read_history(config, TARGET, axis="recorded"), links)
    assert 'href="/model-history/targets/churn-retrain01" data-axis="window"' in recorded


def test_each_ledger_row_links_what_its_model_was_trained_on(ledger, config):
    history = read_history(config, TARGET)
    trained = {(c.kind, c.run_id): (c.inputs, c.trained_by) for c in history.changes}

    run1 = (config.dag_id, "scheduled__1")
    assert trained[("promotion", "scheduled__1")] == ((TRAINED_ON,), run1)
    # A record from before the ledger kept inputs: the run that trained it is still known.
    assert trained[("promotion", "scheduled__2")] == ((), (config.dag_id, "scheduled__2"))
    # The rollback put back the first model: what it was trained on comes from its promotion.
    assert trained[("rollback", "manual__rollback")] == ((TRAINED_ON,), run1)
    assert trained[("baseline", "scheduled__1")] == ((), None)  # the seed was not trained by the run

    page = render.target_page(history, render.Links(app="/model-history", airflow="/"))
    task1 = f'href="/dags/{config.dag_id}/runs/scheduled__1/tasks/train" data-airflow'
    assert page.count(f'<a class="inputs" {task1}') == 2  # the promotion and the rollback
    assert f"<code>{TRAINED_ON}</code>" in page
    task2 = f'href="/dags/{config.dag_id}/runs/scheduled__2/tasks/train" data-airflow>train task</a>'
    assert f'<a class="inputs" {task2}' in page
    assert history.to_json()["changes"][1]["inputs"] == [TRAINED_ON]


def test_approvals_and_rejections_are_their_own_marks(ledger, config):
    history = read_history(config, TARGET)

    # "not_needed" draws nothing; a run's approval is shown whichever target it was for.
    assert [(a.outcome, a.by, a.run_id) for a in history.approvals] == [
        ("approved", "alice", "scheduled__2"),
        ("rejected", "bob", "scheduled__3"),
    ]
    svg = svg_of(render.target_page(history, render.Links()))
    xs = placed(svg)
    # On the window axis a run's approval sits above the model of the same window.
    assert xs["approved"] == [max(xs["promotion"])] and xs["rejected"] == xs["evaluation"]
    legend = " ".join(t.text or "" for t in svg.find(f"{SVG}g[@class='legend']").iter(f"{SVG}text"))
    assert "approved" in legend and "rejected" in legend and "timed out" not in legend
    rejected = next(e for e in svg.iter() if e.get("data-kind") == "rejected" and "marker" in e.get("class", ""))
    tooltip = rejected.find(f"{SVG}title").text or ""
    assert "rejected by bob 2026-11-26 02:05:00 UTC" in tooltip
    assert "comment: <i>looks off</i>" in tooltip and "approval needed because AUC gain above 0.05" in tooltip
    # Against record time, the marks sit at when the approval was decided.
    recorded = placed(svg_of(render.target_page(read_history(config, TARGET, axis="recorded"), render.Links())))
    assert min(recorded["promotion"]) < recorded["approved"][0] < max(recorded["promotion"])
    assert history.to_json()["approvals"][1]["comment"] == "<i>looks off</i>"


def test_a_timed_out_approval_without_a_time_sits_at_its_log_entry(config):
    entry = {
        "recorded_at": (T0 + timedelta(hours=5)).isoformat(),
        "run_id": "scheduled__9",
        "window": window(26),
        "approval": approval("timed_out", None, None, None),
    }
    history = build_history(config, TARGET, [], [entry], axis="recorded")
    (mark,) = history.approvals
    assert (mark.outcome, mark.at, mark.by) == ("timed_out", T0 + timedelta(hours=5), None)
    plot = render.plot(history)
    assert 'data-kind="timed_out"' in plot and "approval timed out" in plot


def test_every_ledger_value_is_escaped(ledger, config):
    page = render.target_page(read_history(config, TARGET), render.Links())

    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>0.9198</b>" not in page and "&lt;b&gt;0.9198&lt;/b&gt;" in page
    assert "<i>looks off</i>" not in page and "&lt;i&gt;looks off&lt;/i&gt;" in page
    ET.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])  # tooltips did not break the SVG


def test_another_metric_can_be_plotted_and_an_unknown_one_falls_back(ledger, config):
    accuracy = read_history(config, TARGET, metric="Accuracy")
    assert accuracy.metric == "Accuracy" and accuracy.threshold is None
    page = render.target_page(accuracy, render.Links())
    assert svg_of(page).get("aria-label") == f"Accuracy of {TARGET} over time, by data window"
    assert '<option value="Accuracy" selected>' in page

    assert read_history(config, TARGET, metric="Nonsense").metric == "AUC"


def test_an_empty_ledger_says_so(azurite, config):
    page = render.target_page(read_history(config, "churn-retrain02"), render.Links())
    assert "Nothing recorded yet for churn-retrain02" in page
    assert "The ledger of this target is empty" in page


def test_a_broken_config_does_not_hide_the_others(tmp_path, config):
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (tmp_path / "broken.yaml").write_text("model: Not A Model\n")
    catalog = load_catalog(tmp_path)
    assert [c.model for c in catalog.configs] == ["churn"]
    assert len(catalog.errors) == 1 and catalog.errors[0].startswith("broken.yaml: ")


# --- the plugin in the Airflow API server ---------------------------------------------------------------


@pytest.fixture
def api(airflow_db, ledger, config, tmp_path, monkeypatch) -> Any:
    """Airflow's own API server app (plugins from plugins/), reading configs from a DAGs folder whose
    retraining config points at this test's ledger; logged in as an admin with a bearer token."""
    dags = tmp_path / "dags"
    (dags / "retraining").mkdir(parents=True)
    (dags / "retraining" / "churn.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    return api_client(tmp_path, monkeypatch)


def test_the_plugin_registers_the_view_in_the_api_server_and_the_ui_navigation(api):
    plugins = api.get("/api/v2/plugins").json()["plugins"]
    plugin = next(p for p in plugins if p["name"] == "model_history")

    assert plugin["fastapi_apps"][0]["url_prefix"] == "/model-history"
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["nav"]["href"] == "/model-history/" and views["nav"]["url_route"] == "model-history"
    assert views["dag"]["href"] == "/model-history/dags/{DAG_ID}"
    assert api.get(views["nav"]["icon"]).headers["content-type"].startswith("image/svg+xml")


def test_the_view_serves_the_index_a_target_a_dag_and_json(api, config):
    index = api.get("/model-history/")
    assert index.status_code == 200
    assert 'href="/model-history/targets/churn-retrain01"' in index.text and "rollback" in index.text

    target = api.get("/model-history/targets/churn-retrain01", params={"metric": "Accuracy"})
    assert (
        target.status_code == 200
        and 'aria-label="Accuracy of churn-retrain01 over time, by data window"' in target.text
    )
    recorded = api.get("/model-history/targets/churn-retrain01", params={"axis": "recorded"})
    assert 'data-axis="recorded"' in recorded.text and 'class="serving"' in recorded.text

    dag = api.get(f"/model-history/dags/{config.dag_id}")
    assert dag.status_code == 200
    assert 'data-target="churn-retrain01"' in dag.text and 'data-target="churn-retrain02"' in dag.text

    body = api.get("/model-history/api/targets/churn-retrain01").json()
    assert [c["kind"] for c in body["changes"]] == ["baseline", "promotion", "promotion", "rollback"]
    assert "sig=" not in json.dumps(body)


def test_unknown_targets_and_other_dags_are_not_found(api):
    assert api.get("/model-history/targets/nope").status_code == 404
    assert api.get("/model-history/api/targets/nope").status_code == 404
    other = api.get("/model-history/dags/check_connections")
    assert other.status_code == 404 and "not a retraining DAG" in other.text


def test_pages_need_a_login(api):
    del api.headers["Authorization"]

    page = api.get("/model-history/targets/churn-retrain01", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login?next=")
    assert api.get("/model-history/api/targets/churn-retrain01").status_code == 401
    assert api.get("/model-history/icon.svg").status_code == 200  # the nav icon is public


def test_the_ui_session_cookie_is_enough(api):
    token = api.headers.pop("Authorization").removeprefix("Bearer ")
    api.cookies.set("_token", token)
    assert api.get("/model-history/targets/churn-retrain01").status_code == 200
