"""Driving the Airflow UI with the system's Chromium (Selenium), and running an Airflow for it."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devtools.cluster import AirflowCluster
from devtools.services import ROOT

UI_ARTIFACTS = ROOT / "test-artifacts" / "ui"
WINDOW_SIZE = (1400, 1000)


@dataclass
class Browser:
    """A Chromium session against one Airflow that saves numbered screenshots of the steps."""

    driver: Any
    base_url: str
    artifacts: Path
    shots: list[Path] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base_url}{path}")

    def wait(self, condition: Callable[[Any], Any], timeout: float = 60, message: str = "") -> Any:
        """``condition``'s first truthy answer. The UI is React: an element found a moment ago may be
        re-rendered under the condition's feet, so a stale element is one more try, not a failure."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(
            self.driver, timeout, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,)
        ).until(condition, message)

    def find(self, css: str, timeout: float = 60) -> Any:
        """The first visible element matching ``css`` (waits for one). Use it at once: to act on an
        element the page may re-render, use :meth:`act`."""
        from selenium.webdriver.common.by import By

        return self.act(By.CSS_SELECTOR, css, lambda element: element, timeout)

    def act(self, by: str, locator: str, action: Callable[[Any], Any], timeout: float = 60) -> Any:
        """Find the first visible element ``locator`` names and apply ``action`` to it, finding it
        again whenever a re-render made it stale in between; ``action``'s result."""

        def acted(driver: Any) -> Any:
            element = next((e for e in driver.find_elements(by, locator) if e.is_displayed()), None)
            if element is None:
                return False
            return (action(element),)  # a one-tuple: an action answering None or False still counts

        return self.wait(acted, timeout, f"nothing visible matches {locator}")[0]

    def click(self, css: str = "", *, xpath: str = "", timeout: float = 60) -> None:
        """Scroll the element into view and click it (found afresh if it went stale)."""
        from selenium.webdriver.common.by import By

        def scroll_and_click(element: Any) -> None:
            self.scroll_to(element)
            element.click()

        by, locator = (By.XPATH, xpath) if xpath else (By.CSS_SELECTOR, css)
        self.act(by, locator, scroll_and_click, timeout)

    def type(self, css: str, text: str, timeout: float = 60) -> None:
        """Type ``text`` into the field ``css`` names (found afresh if it went stale before typing)."""
        from selenium.webdriver.common.by import By

        self.act(By.CSS_SELECTOR, css, lambda element: element.send_keys(text), timeout)

    def type_over(self, locator: str, text: str, timeout: float = 60) -> None:
        """Replace what the field ``locator`` holds with ``text`` (empty: clear it), as a user does:
        select all, then type or delete. ``locator`` is CSS, or XPath after ``xpath:``."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        by, where = (
            (By.XPATH, locator.removeprefix("xpath:")) if locator.startswith("xpath:") else (By.CSS_SELECTOR, locator)
        )
        self.act(
            by, where, lambda element: element.send_keys(Keys.CONTROL, "a", Keys.NULL, Keys.BACK_SPACE, text), timeout
        )

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def scroll_to(self, element: Any) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)

    def shot(self, name: str) -> Path:
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        print(f"{time.strftime('%H:%M:%S')} screenshot {path.name}")  # step times, in the test's output
        return path


def chrome(binary: str, driver_path: str) -> Any:
    """Headless Chromium at ``binary`` through the chromedriver at ``driver_path`` (an explicit driver
    path keeps Selenium Manager from looking for, or downloading, anything)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start; the pages are our own
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def start_in_background(cluster: AirflowCluster) -> Callable[[], None]:
    """Start ``cluster`` in a thread (it takes a while); the returned call waits for it and re-raises."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            cluster.start()
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=run, name="airflow-cluster-start", daemon=True)
    thread.start()

    def join() -> None:
        thread.join(timeout=600)
        if thread.is_alive():
            raise TimeoutError("Airflow did not start within 10 minutes")
        if errors:
            raise errors[0]

    return join


@contextlib.contextmanager
def starting(cluster: AirflowCluster) -> Iterator[Callable[[], None]]:
    """Start ``cluster`` in the background for the block (which may prepare data meanwhile); yields
    the call that waits until it is up. On exit the cluster stops and its logs are kept."""
    started = start_in_background(cluster)
    try:
        yield started
    finally:
        with contextlib.suppress(Exception):
            started()
        cluster.stop()
        keep_logs(cluster)


def dags_folder_with(config: Any, folder: Path) -> Path:
    """A DAGs folder holding the project's DAG files and one retraining config."""
    from support.dags import install_retraining_config

    folder.mkdir(parents=True, exist_ok=True)
    install_retraining_config(folder, config.model_dump(mode="json"))
    return folder


def keep_logs(cluster: AirflowCluster) -> None:
    """Copy the cluster's logs next to the screenshots (they explain a failure), in a folder named
    after the cluster's own (each test module's cluster keeps its logs)."""
    target = UI_ARTIFACTS / "airflow-logs" / cluster.home.parent.name
    shutil.rmtree(target, ignore_errors=True)
    if cluster.log_dir.exists():
        shutil.copytree(cluster.log_dir, target, dirs_exist_ok=True)


def run_url(dag_id: str, run_id: str) -> str:
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
