"""Browser tests: a real Airflow (separate components, LocalExecutor) driven through its UI by headless
Chromium from the system's packages, with a screenshot of every step in ``test-artifacts/ui/``.

Chromium and chromedriver come from Debian's ``chromium`` and ``chromium-driver`` packages
(``make browser`` installs them; ``make test`` does it first). Selenium gets the driver's path, so
it never downloads a browser or a driver.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from support.browser import UI_ARTIFACTS, Browser, chrome


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Paths of the system's Chromium and its chromedriver."""
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail(
            "The browser tests need Chromium and its driver from the system's packages: run `make browser` "
            "(as root: apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    return browser, driver


@pytest.fixture
def browser(chromium: tuple[str, str], request: pytest.FixtureRequest) -> Iterator[Browser]:
    UI_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    driver = chrome(*chromium)
    print(f"Chromium started in {time.monotonic() - began:.1f}s")
    try:
        yield Browser(driver, "", UI_ARTIFACTS)
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            driver.save_screenshot(str(UI_ARTIFACTS / "failure.png"))
            (UI_ARTIFACTS / "failure.html").write_text(driver.page_source)
        driver.quit()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets the browser fixture know whether the test failed, to keep the page it failed on.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
