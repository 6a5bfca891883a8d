"""The Airflow UI, end to end in a browser: trigger a retraining from the DAG's form (which refuses
a window without its end first, then takes the run's data interval from Airflow's own "Specify
Manually" fields), watch it succeed, read its result, follow its extra link, and find
the promotion in the model history view.

Airflow runs as separate components (api-server, scheduler, dag-processor, triggerer; LocalExecutor)
against Azurite and the emulator. Its only DAGs are the project's DAG file with a test copy of the
churn config (its own data folder, outputs and ledger). Before the UI part, the target gets a short
past through ``dag.test()`` (a promotion, then a rollback), so the history has every kind of change.
Screenshots of each step: ``test-artifacts/ui/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from azureml_retrain.factory import PROMOTE_TITLES, WINDOW_SECTION, build_rollback_dag
from devtools.cluster import AirflowCluster
from support.browser import UI_ARTIFACTS, Browser, dags_folder_with, run_url, starting
from support.dags import register_dag
from support.retraining import Retraining, build_retraining, land_window

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

DAY1 = datetime(2026, 11, 2, tzinfo=UTC)  # trained and promoted before the UI part, then rolled back
DAY2 = DAY1 + timedelta(days=1)  # trained through the UI
TARGET = "churn-retrain01"


def window_of(day: datetime) -> str:
    """The trigger form's window of ``day``, ``<start>/<end>``."""
    return f"{day:%Y-%m-%d}/{day + timedelta(days=1):%Y-%m-%d}"


@dataclass
class UiAirflow:
    cluster: AirflowCluster
    churn: Retraining


@pytest.fixture(scope="module")
def ui_airflow(
    azurite: str, emulator_session: Any, blob_service: Any, airflow_db: None, local_ports: Any, tmp_path_factory: Any
) -> Iterator[UiAirflow]:
    for old in {*UI_ARTIFACTS.glob("*.png"), *UI_ARTIFACTS.glob("failure.*")}:
        old.unlink(missing_ok=True)
    emulator_session.admin("POST", "reset")
    # Named like the shipped model (DAG retrain_churn); more than one active run, so the scheduled
    # run of the current interval (its data never lands) does not hold the manual one back.
    churn = build_retraining("churn", model="churn", max_active_runs=3)
    root = tmp_path_factory.mktemp("ui-airflow")
    cluster = AirflowCluster(
        home=root / "home", ports=local_ports, dags_folder=dags_folder_with(churn.config, root / "dags")
    )
    for number, day in enumerate((DAY1, DAY2), start=1):
        land_window(blob_service, churn, day, dataset="churn", window=number, seed=number)
    with starting(cluster) as started:
        from airflow.utils.state import DagRunState

        # The target's past, written while Airflow starts: day 1 promoted, then rolled back by hand.
        promoted = churn.dag.test(logical_date=None, run_conf={"window": window_of(DAY1)})
        assert promoted.state == DagRunState.SUCCESS
        rollback = build_rollback_dag([churn.config])
        register_dag(rollback)
        rolled_back = rollback.test(logical_date=None, run_conf={"target": TARGET})
        assert rolled_back.state == DagRunState.SUCCESS
        write_approvals(churn, promoted.run_id)
        started()
        cluster.wait_for_dag(churn.dag_id)
        yield UiAirflow(cluster, churn)


def write_approvals(churn: Any, promoted_run_id: str) -> None:
    """Approval steps in the DAG's decision log, as the approval step writes them (the view draws
    them): day 1's promotion approved, a first run of day 2 rejected (the forced run comes later)."""

    def entry(run_id: str, day: Any, outcome: str, by: str, comment: str) -> dict[str, Any]:
        end = day + timedelta(days=1)
        at = end + timedelta(hours=1)
        return {
            "run_id": run_id,
            "window": {"start": day.isoformat(), "end": end.isoformat()},
            "promote": outcome == "approved",
            "approval": {
                "outcome": outcome,
                "by": by,
                "comment": comment,
                "at": at.isoformat(),
                "why_needed": "the first promotion of the target",
            },
        }

    churn.ledger.note_decision(churn.config.dag_id, entry(promoted_run_id, DAY1, "approved", "admin", "checked"))
    churn.ledger.note_decision(
        churn.config.dag_id, entry("manual__day2_first", DAY2, "rejected", "admin", "day 2 looked incomplete")
    )


def log_in(browser: Browser, user: str, password: str) -> None:
    browser.open("/")
    browser.type("input[name=username]", user)
    browser.type("input[name=password]", password)
    browser.shot("login")
    browser.click("button[type=submit]")
    browser.wait(lambda driver: "/auth/login" not in driver.current_url, message="still on the login page")


DIALOG = "//*[@role='dialog' and @data-state='open']"


def open_section(browser: Browser, title: str) -> None:
    """Unfold the form's section ``title`` (only "Run Parameters" is unfolded at first)."""
    trigger = f"{DIALOG}//button[contains(@id, ':trigger:{title}')]"
    if browser.act(By.XPATH, trigger, lambda e: e.get_attribute("aria-expanded")) != "true":
        browser.click(xpath=trigger)


def set_data_interval(browser: Browser, start: datetime, end: datetime) -> None:
    """Pick the run's data interval in the form's own fields: Data Interval, "Specify Manually", then
    each end's date-time picker (a button opening a date and a time field, in the UI's time zone: UTC)."""
    browser.click(xpath=f"{DIALOG}//label[.//*[normalize-space(.)='Specify Manually']]")
    for label, moment in (("Start", start), ("End", end)):
        field = f"{DIALOG}//label[normalize-space(.)='{label}']/following::*[@data-testid='datetime-input'][1]"
        browser.click(xpath=field)
        popover = "//*[@data-scope='popover' and @data-part='content' and @data-state='open']"
        browser.type_over(f"xpath:{popover}//input[@placeholder='YYYY/MM/DD']", f"{moment:%Y/%m/%d}")
        browser.type_over(f"xpath:{popover}//input[@placeholder='HH:mm']", f"{moment:%H:%M}")
        shown = f"{moment:%b %d, %Y %H:%M}"
        browser.wait(
            lambda _, field=field, shown=shown: browser.act(By.XPATH, field, lambda e: e.text.strip()) == shown,
            message=f"{label} does not show {shown}",
        )
        browser.act(By.XPATH, popover, lambda e: e.send_keys(Keys.ESCAPE))


def fill_trigger_form(browser: Browser, run_id: str, window: str) -> None:
    # The dialog re-renders while its params load: every element is looked up when it is used.
    browser.find("[role=dialog][data-state=open]")
    # The window param is for runs without a logical date, in its own (folded) section.
    open_section(browser, WINDOW_SECTION)
    browser.type_over("#element_window", window)
    # The form unfolds one section at a time.
    open_section(browser, "Run Parameters")
    # "Promote" is a select: open it (the control its label names) and pick the option by its title.
    control = browser.act(By.XPATH, f"{DIALOG}//label[normalize-space(.)='Promote']", lambda e: e.get_attribute("for"))
    browser.act(By.ID, control, lambda element: element.click())
    browser.click(xpath=f"//*[@role='option'][normalize-space(.)='{PROMOTE_TITLES['force']}']")
    browser.wait(lambda driver: driver.find_element(By.NAME, "element_promote").get_attribute("value") == "force")
    browser.shot("trigger-form")
    browser.click(xpath=f"{DIALOG}//button[contains(@id, 'advancedOptions')]")
    browser.type("input[name=dagRunId]", run_id)
    # The conf's editor: the visible one (the rules field has an editor too, in the folded params).
    editor = "[role=dialog][data-state=open] .monaco-editor .view-lines"
    browser.act(By.CSS_SELECTOR, editor, browser.scroll_to)
    browser.wait(
        lambda _: '"promote": "force"' in browser.act(By.CSS_SELECTOR, editor, lambda e: e.text).replace("\xa0", " "),
        message="the form's values are not in the run's conf",
    )
    browser.shot("trigger-conf")


def wait_for_run_in_ui(browser: Browser, cluster: AirflowCluster, dag_id: str, run_id: str) -> str:
    """The run's state as its page shows it, once final (the page refreshes itself; reloaded now and
    then in case a poll was missed)."""
    badge = f"//h2[normalize-space()='{run_id}']/following-sibling::span[@data-testid='state-badge']"
    deadline = time.monotonic() + 600
    browser.open(run_url(dag_id, run_id))
    reloaded = time.monotonic()
    while time.monotonic() < deadline:
        try:  # the page re-renders the badge as it refreshes itself
            state = " ".join(e.text.strip() for e in browser.driver.find_elements(By.XPATH, badge)[:1])
        except StaleElementReferenceException:
            state = ""
        if state in ("Success", "Failed"):
            return state
        if time.monotonic() - reloaded > 30:
            browser.driver.refresh()
            reloaded = time.monotonic()
        time.sleep(1)
    states = {t["task_id"]: t["state"] for t in cluster.task_instances(dag_id, run_id)}
    raise TimeoutError(f"{run_id} did not finish in 10 minutes: {states}")


@pytest.mark.timeout(1200)
def test_retrain_from_the_trigger_form_then_find_the_promotion_in_the_model_history(
    ui_airflow: UiAirflow, browser: Browser, emulator_session: Any
) -> None:
    cluster, churn = ui_airflow.cluster, ui_airflow.churn
    dag_id = churn.dag_id
    run_id = f"ui_retrain_{datetime.now(UTC):%Y%m%dT%H%M%S}"
    browser.base_url = cluster.url

    log_in(browser, *cluster.credentials)

    browser.open(f"/dags/{dag_id}")
    browser.find("[data-testid=trigger-dag-button]")
    browser.wait(lambda _: "wait_for_data" in browser.text(), message="the DAG's tasks are not shown")
    browser.shot("dag")
    browser.click("[data-testid=trigger-dag-button]")
    # The window's start alone: Airflow refuses the run (the window param's schema), and the form says why.
    fill_trigger_form(browser, run_id, f"{DAY2:%Y-%m-%d}")
    browser.click("[data-testid=trigger-dag-submit]")
    alert = "[role=dialog][data-state=open] [data-testid=error-alert]"
    browser.wait(
        lambda _: (
            f"Invalid input for param window: '{DAY2:%Y-%m-%d}' does not match"
            in browser.act(By.CSS_SELECTOR, alert, lambda e: e.text)
        ),
        message="the form did not refuse the incomplete window",
    )
    browser.act(By.CSS_SELECTOR, alert, browser.scroll_to)
    browser.shot("trigger-refused")
    assert run_id not in [r["dag_run_id"] for r in cluster.api("GET", f"dags/{dag_id}/dagRuns")["dag_runs"]]
    # The usual way: the window param left empty, the run's data interval picked in Airflow's own fields.
    open_section(browser, WINDOW_SECTION)
    browser.type_over("#element_window", "")
    browser.wait(
        lambda driver: driver.find_element(By.ID, "element_window").get_attribute("value") == "",
        message="the window field is not empty",
    )
    set_data_interval(browser, DAY2, DAY2 + timedelta(days=1))
    browser.shot("trigger-data-interval")
    # The refusal's toast lies over the submit button until it goes.
    toast = "[data-scope=toast][data-part=root]"
    browser.wait(lambda driver: not driver.find_elements(By.CSS_SELECTOR, toast), message="the toast stays")
    browser.click("[data-testid=trigger-dag-submit]")
    browser.wait(
        lambda driver: not driver.find_elements(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]"),
        message="the trigger dialog did not close",
    )
    run = cluster.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
    assert run["conf"]["promote"] == "force" and not run["conf"].get("window")
    interval = (run["data_interval_start"], run["data_interval_end"])
    assert tuple(map(datetime.fromisoformat, interval)) == (DAY2, DAY2 + timedelta(days=1)), interval

    state = wait_for_run_in_ui(browser, cluster, dag_id, run_id)
    browser.shot("run-finished")
    assert state == "Success", {t["task_id"]: t["state"] for t in cluster.task_instances(dag_id, run_id)}
    # The run trained on the data interval picked in the form.
    planned = cluster.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/plan/xcomEntries/return_value")
    assert planned["value"]["window"] == {"start": DAY2.isoformat(), "end": (DAY2 + timedelta(days=1)).isoformat()}

    # The result: which targets the run promoted, as the report task returned it.
    browser.open(f"{run_url(dag_id, run_id)}/tasks/report/xcom")
    browser.click("[data-testid=expand-all-button]")
    browser.wait(
        lambda _: "churn-retrain01" in browser.text() and "churn-retrain02" in browser.text(),
        message="the report does not list the promoted targets",
    )
    browser.shot("report")
    for target in ("churn-retrain01", "churn-retrain02"):
        head = churn.ledger.head(target)
        assert head is not None and (head.kind, head.run_id) == ("promotion", run_id)

    # The promotion's extra link opens the emulator's view of the very endpoint, serving the new model.
    browser.open(f"{run_url(dag_id, run_id)}/tasks/promote_classic_endpoints/mapped/0/details")
    href = browser.act(By.LINK_TEXT, "Azure ML", lambda link: (browser.scroll_to(link), link.get_attribute("href"))[1])
    workspace = emulator_session.workspace
    service = next(s for s in workspace["web_services"] if s["kind"] == "predictive")
    assert href == (
        f"{emulator_session.url}/_emulator/state/workspaces/{workspace['id']}/webservices/{service['id']}"
        "/endpoints/retrain01"
    )
    browser.shot("extra-link")
    head = churn.ledger.head(TARGET)
    assert head is not None
    browser.driver.get(href)
    endpoint = json.loads(browser.driver.find_element(By.TAG_NAME, "body").text)
    browser.shot("emulator-endpoint")
    assert endpoint["endpoint"]["name"] == "retrain01" and endpoint["model_uri"] == head.model_uri

    # The model history view, from the UI's navigation: the target's ledger and plot include the run.
    browser.open(f"/dags/{dag_id}")
    browser.click("a[href$='/plugin/model-history']")
    browser.driver.switch_to.frame(browser.find("iframe"))
    browser.click(f"a[href$='/targets/{TARGET}']")
    browser.find("svg.plot")
    kinds = browser.wait(
        lambda d: sorted(m.get_attribute("data-kind") for m in d.find_elements(By.CSS_SELECTOR, "svg .marker"))
    )
    assert kinds == ["approved", "baseline", "promotion", "promotion", "rejected", "rollback"]
    assert browser.find("svg.plot").get_attribute("data-axis") == "window"
    newest = "table.ledger tbody tr"
    kind, text = browser.act(By.CSS_SELECTOR, newest, lambda row: (row.get_attribute("data-kind"), row.text))
    assert kind == "promotion" and run_id in text
    # What the model was trained on, linked to the run's train task.
    inputs = browser.act(By.CSS_SELECTOR, f"{newest} a.inputs", lambda link: link.get_attribute("href"))
    assert inputs.endswith(f"{run_url(dag_id, run_id)}/tasks/train")
    browser.driver.switch_to.default_content()
    browser.shot("model-history")

    # Its run link leads to the run's page in the UI itself (not inside the view's frame).
    browser.driver.switch_to.frame(browser.find("iframe"))
    browser.click("table.ledger tbody tr a[data-airflow]:not(.inputs)")
    browser.driver.switch_to.default_content()
    browser.wait(
        lambda driver: (
            driver.current_url.endswith(run_url(dag_id, run_id)) and not driver.find_elements(By.TAG_NAME, "iframe")
        ),
        message="the run link did not lead to the run's page",
    )

    # And as a tab of the DAG: every target of the DAG.
    browser.open(f"/dags/{dag_id}/plugin/model-history-dag")
    browser.driver.switch_to.frame(browser.find("iframe"))
    browser.wait(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "section.target svg.plot")) == 2)
    browser.driver.switch_to.default_content()
    browser.shot("dag-model-history")
