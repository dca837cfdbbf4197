"""`vitrine dashboard` in a real headless Chromium: sign in, open every page, wait for its charts,
check key texts, save screenshots under test-artifacts/dashboards/.

Set VITRINE_UPDATE_DOCS_SCREENSHOT=1 to also refresh docs/experiment-detail.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.dashboards.helpers import served_dashboard
from tests.dashboards.seed import ROOT, TENANT

pytestmark = pytest.mark.integration

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver (as root; CI does it in .ci/run)"
ARTIFACTS = ROOT / "test-artifacts" / "dashboards"
DOCS_SHOT = ROOT / "docs" / "experiment-detail.png"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1600,2300",
]
WAIT_S = 45

selenium = pytest.importorskip("selenium", reason="pip install selenium (a dev extra) to run the browser test")
if not (CHROMIUM and DRIVER):
    pytest.skip(f"headless Chromium not installed: {INSTALL}", allow_module_level=True)

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture
def dashboard(seeded, settings, tmp_path):
    """`vitrine dashboard` on a free port with an operator password; yields (url, password)."""
    password = "correct horse battery staple"
    with served_dashboard(settings, tmp_path, password) as url:
        yield url, password


@pytest.fixture
def browser(tmp_path, request):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    failed_before = request.session.testsfailed
    yield driver
    if request.session.testsfailed > failed_before:  # keep what the browser showed when it failed
        _shot(driver, f"failed-{request.node.name}")
    driver.quit()


def _wait_text(driver, text: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: text in d.find_element(By.TAG_NAME, "body").text, f"{text!r} never appeared"
    )


def _wait_charts(driver, n: int) -> None:
    # Vega renders into a canvas (or svg) inside .vega-embed once its data arrived.
    WebDriverWait(driver, WAIT_S).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".vega-embed canvas, .vega-embed svg.marks")) >= n,
        f"{n} chart(s) never rendered",
    )


def _idle(driver) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']"), "the app never settled"
    )


def _open(driver, title: str) -> None:
    link = WebDriverWait(driver, WAIT_S).until(
        ec.element_to_be_clickable((By.XPATH, f"//a[@data-testid='stSidebarNavLink'][contains(., '{title}')]"))
    )
    link.click()


def _shot(driver, name: str) -> Path:
    """Save a screenshot under test-artifacts/dashboards/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_every_page_in_chromium(dashboard, browser):
    url, password = dashboard
    browser.get(url)
    field = WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "input[type='password']"))
    )
    _shot(browser, "0-sign-in")
    field.send_keys(password)
    browser.find_element(By.XPATH, "//button[contains(., 'Sign in')]").click()

    _wait_text(browser, "Tenant acme")
    _wait_text(browser, "Open an experiment")  # the table itself is a canvas: its cells are not DOM text
    WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stDataFrame']"))
    )
    _idle(browser)
    _shot(browser, "1-experiments")

    browser.find_element(By.XPATH, "//button[contains(., 'Show details')]").click()  # st.switch_page
    _wait_text(browser, "Verdict:")
    _wait_text(browser, "visual lifts CTR by")
    _wait_charts(browser, 2)
    _wait_text(browser, "Detectable lift now (MDE)")
    _idle(browser)
    shot = _shot(browser, "2-experiment-detail")
    if os.environ.get("VITRINE_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SHOT)

    _open(browser, "Catalog explorer")
    search = WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "input[aria-label='Search products by id or title']"))
    )
    search.send_keys("p-03", Keys.ENTER)
    _wait_text(browser, "What each arm would recommend")
    _wait_text(browser, "indexed at")
    WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stImage'] img"))
    )
    _idle(browser)
    _shot(browser, "3-catalog")

    _open(browser, "Pipeline health")
    _wait_text(browser, "Dead letters (this tenant)")
    _wait_text(browser, "Failed images by reason")
    _wait_charts(browser, 1)
    _idle(browser)
    _shot(browser, "4-pipeline")
    assert TENANT in browser.find_element(By.TAG_NAME, "body").text
