"""The operator's page in a real headless Chromium, served over real HTTP: the lanes a person sees.

`make test` installs Chromium first (`make browser`), so a missing browser is a
failure here, not a skip. Screenshots land in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from app import create_app
from config import Settings
from saga import SagaEngine, SagaRecord
from tests.conftest import BOOKING, ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
USER, PASSWORD = "ops", "s3cret"
# The network here is closed: without these Chromium waits on connections it will never get.
QUIET = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1000",
]


@pytest.fixture
def served(make_settings: Callable[..., Settings], engine: SagaEngine) -> Iterator[str]:
    """The app with /ops mounted, on a real HTTP server on a free port; yields its base URL."""
    app: Flask = create_app(make_settings(dashboard_user=USER, dashboard_password=PASSWORD), engine)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium, logged in to the operator's tools by an Authorization header on every request."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make browser` installs Chromium (make test runs it)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in [*QUIET, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, element_id: str) -> WebElement:
    """The element once the page shows it."""
    return WebDriverWait(driver, 15).until(seen.visibility_of_element_located((By.ID, element_id)))


def lane(driver: WebDriver, element_id: str) -> list[tuple[str, str]]:
    """(step, status) of each filled cell in one lane, as drawn."""
    row = wait_for(driver, element_id)
    return [
        (
            cell.find_element(By.CSS_SELECTOR, ".step-name span").text,
            cell.find_element(By.CSS_SELECTOR, ".badge").text,
        )
        for cell in row.find_elements(By.CSS_SELECTOR, ".cell:not(.empty)")
    ]


def screenshot(driver: WebDriver, name: str) -> Path:
    """The whole page (the window grown to its height) as test-artifacts/<name>."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1500, max(int(height) + 40, 600))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    return path


def test_compensated_saga_lanes_in_chromium(
    served: str, browser: WebDriver, run_saga: Callable[..., SagaRecord], book: Callable[..., str]
) -> None:
    saga = run_saga(sandbox_faults="send_sms=fail")
    running = book(call_id="call-7")  # never drained: still running

    browser.get(f"{served}/ops/")
    rows = wait_for(browser, "sagas").find_elements(By.CSS_SELECTOR, "tbody tr[data-saga]")
    assert [row.get_attribute("data-saga") for row in rows] == [saga.id, running]
    assert [row.find_element(By.CSS_SELECTOR, ".badge").text for row in rows] == ["compensated", "running"]
    screenshot(browser, "ops-list.png")

    rows[0].find_element(By.LINK_TEXT, saga.id).click()  # the way a person gets there
    assert wait_for(browser, "saga-status").text == "compensated"
    assert lane(browser, "lane-forward") == [
        ("book_slot", "succeeded"),
        ("charge_card", "succeeded"),
        ("send_sms", "failed"),
        ("sync_calendar", "pending"),
    ]
    assert lane(browser, "lane-compensation") == [
        ("release_slot", "compensated"),
        ("refund_card", "compensated"),
        ("send_apology", "compensated"),
    ]
    undo_cells = browser.find_element(By.ID, "lane-compensation").find_elements(By.CSS_SELECTOR, "td")
    assert len(undo_cells) == 4 and "empty" in undo_cells[3].find_element(
        By.CSS_SELECTOR, ".cell"
    ).get_attribute("class")
    charge = browser.find_element(By.CSS_SELECTOR, '#lane-forward .cell[data-step="charge_card"]')
    assert saga.step("charge_card").ref in charge.text
    assert "fault injected into send_sms" in browser.find_element(By.ID, "lane-forward").text
    history = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(history) == len(saga.history)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert BOOKING["customer"]["phone"] not in body and BOOKING["customer"]["name"] not in body
    screenshot(browser, "ops-timeline.png")
