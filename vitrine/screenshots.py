"""`vitrine dashboard screenshots`: the experiment results page in headless Chromium, one PNG per state.

A real embedded Postgres (or a given database) is seeded with **simulated** storefront traffic (tenant
`simulated-shop`: exposures carrying the serving model, request-attributed clicks and purchases, one
experiment per state), `vitrine dashboard` serves it, and Chromium (Debian's `chromium` +
`chromium-driver`, driven by selenium) signs in once with the operator password, then opens each
state's deep link (the sign-in cookie carries over), waits for the charts and saves the full page at
1,280 px. The page's DOM text is checked for 'None' / 'nan' and for horizontal overflow.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
TENANT = "simulated-shop"
PASSWORD = "screenshots-only-password"  # a throwaway operator password for this private dashboard
MODEL = "efficientnet-lite0"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
WAIT_S = 120  # a cold page computes its statistics live: slow on a loaded machine
BAD_WORDS = re.compile(r"\b(None|nan|NaN)\b")


@dataclass(frozen=True)
class Scenario:
    """One experiment of the simulated tenant, in the state it shows."""

    key: str
    status: str
    placement: str
    users: int
    days: int  # days of traffic before now (or before the stop)
    click_p: tuple[float, float]  # per exposure, baseline / visual
    buy_p: tuple[float, float]  # per user
    split: float = 0.5  # share of users in the baseline arm (0.5 = as configured; else an SRM)
    primary_metric: str = "ctr"
    guardrails: tuple[dict, ...] = ({"metric": "conversion", "margin": 0.02},)
    stopped_days_ago: int = 0


STATES: dict[str, Scenario] = {
    "running": Scenario("similar-visual-v2", "running", "similar", 6000, 6, (0.10, 0.12), (0.05, 0.052)),
    "stopped": Scenario(
        "search-visual-v1", "stopped", "search", 6000, 7, (0.08, 0.092), (0.04, 0.047), stopped_days_ago=2
    ),
    "draft": Scenario(
        "cart-visual-v1",
        "draft",
        "cart",
        0,
        0,
        (0, 0),
        (0, 0),
        guardrails=({"metric": "revenue_per_user", "margin": 0.02},),
    ),
    "srm": Scenario("home-visual-v1", "running", "home", 6000, 5, (0.10, 0.11), (0.05, 0.056), split=0.54),
    "guardrail": Scenario("email-visual-v1", "running", "email", 8000, 6, (0.10, 0.12), (0.06, 0.042)),
}


class BrowserMissing(RuntimeError):
    """Chromium, chromedriver or selenium is not installed."""


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or BrowserMissing saying how to install them."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise BrowserMissing("selenium is not installed: pip install selenium") from None
    if not (chromium and driver):
        raise BrowserMissing("headless Chromium not installed: apt-get install -y chromium chromium-driver")
    return chromium, driver


def _events(
    s: Scenario, now: datetime, rng: np.random.Generator, scale: float = 1.0
) -> tuple[list[dict], datetime, datetime | None]:
    """Simulated exposures (1-4 per user, the serving model in the payload), clicks and purchases."""
    end = now - timedelta(days=s.stopped_days_ago)
    start = (end - timedelta(days=s.days)).replace(minute=0, second=0, microsecond=0)
    rows: list[dict] = []
    span = (end - start).total_seconds() - 3600
    for u in range(int(s.users * scale)):
        visual = rng.random() >= s.split
        arm = "visual" if visual else "baseline"
        user = f"sim-{s.key}-{u}"
        first = start + timedelta(seconds=float(rng.random() * span))
        requests = []
        for r in range(int(rng.integers(1, 5))):
            at = first + timedelta(minutes=7 * r)
            request = f"{user}-r{r}"
            requests.append((request, at))
            # the visual arm falls back to the baseline list for 3 % of requests (no model then)
            model = MODEL if visual and rng.random() > 0.03 else None
            rows.append(_row(s, user, request, "exposure", arm, at, {"model": model}))
            if rng.random() < s.click_p[visual]:
                rows.append(_row(s, user, request, "click", arm, at + timedelta(seconds=20)))
        if rng.random() < s.buy_p[visual]:
            request, at = requests[int(rng.integers(len(requests)))]
            value = round(float(rng.lognormal(3.6, 0.7)), 2)
            rows.append(_row(s, user, request, "purchase", arm, at + timedelta(minutes=3), value=value))
    return rows, start, end if s.status == "stopped" else None


def _row(s, user, request, kind, arm, at, payload=None, value=None) -> dict:
    return {
        "tenant_id": TENANT,
        "event_id": f"{request}-{kind}",
        "type": kind,
        "user_id": user,
        "request_id": request,
        "product_id": "sim-p-01",
        "experiment": s.key,
        "arm": arm,
        "value": value,
        "payload": payload or {},
        "occurred_at": at,
    }


def seed(database_url: str, states: list[str], seed_value: int = 20261204, scale: float = 1.0) -> dict[str, str]:
    """Write the simulated tenant, its products (priced in EUR) and one experiment per state; {state: key}."""
    from sqlalchemy import insert, text

    from core.contracts import CatalogEvent
    from db.catalog import upsert_product
    from db.experiments import create_experiment, get_experiment
    from db.models import InteractionEvent
    from db.session import create_db_engine, session_factory
    from db.tenants import create_tenant

    engine = create_db_engine(database_url)
    sessions = session_factory(engine)
    rng = np.random.default_rng(seed_value)
    now = datetime.now(UTC)
    try:
        with sessions() as session, session.begin():
            create_tenant(session, "Simulated shop", TENANT)
            for i in range(1, 4):
                event = CatalogEvent(
                    event_id=f"sim-ev-{i}",
                    tenant_id=TENANT,
                    type="product.upserted",
                    product={
                        "id": f"sim-p-{i:02d}",
                        "version": 1,
                        "title": f"simulated product {i}",
                        "price": 20 + i,
                        "currency": "EUR",
                        "image_urls": [],
                    },
                )
                upsert_product(session, event, [], model_key=MODEL, dim=1280)
        for state in states:
            s = STATES[state]
            rows, start, stop = _events(s, now, rng, scale)
            with sessions() as session, session.begin():
                create_experiment(
                    session,
                    TENANT,
                    s.key,
                    placement=s.placement,
                    primary_metric=s.primary_metric,
                    guardrails=list(s.guardrails),
                    planned_sample_size=max(s.users, 1000),
                    arms=[{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}],
                )
                if s.status != "draft":
                    exp = get_experiment(session, TENANT, s.key)
                    exp.status, exp.started_at, exp.stopped_at = s.status, start, stop
                if rows:
                    session.execute(insert(InteractionEvent), rows)
            log.info("seeded %s (%s): %d simulated events", s.key, state, len(rows))
        with engine.connect() as conn:
            conn.execute(text("ANALYZE interaction_events"))
    finally:
        engine.dispose()
    return {state: STATES[state].key for state in states}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _serve(stack: ExitStack, database_url: str, workdir: Path) -> str:
    """`vitrine dashboard` on a free port for this database (no broker: the results page needs none)."""
    from streams.embedded_broker import free_port

    port = free_port()
    env = {
        **os.environ,
        "VITRINE_DATABASE_URL": database_url,
        "VITRINE_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # never contacted by the experiment pages
        "VITRINE_DATA_DIR": str(workdir / "data"),
        "VITRINE_RESULTS_REFRESH_S": "0",
        "HOME": str(workdir),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    for name in ("VITRINE_ADMIN_KEY", "VITRINE_DASHBOARD_PASSWORD", "VITRINE_DASHBOARD_SECRET"):
        env.pop(name, None)
    logfile = (workdir / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitrine", "dashboard", "--port", str(port), "--password", PASSWORD],
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def stop() -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        logfile.close()

    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: _healthy(url) or proc.poll() is not None, 60, "the dashboard to serve")
    if proc.poll() is not None:
        raise RuntimeError(f"the dashboard exited: {(workdir / 'dashboard.log').read_text()[-2000:]}")
    return url


def _browser(stack: ExitStack, workdir: Path, width: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={workdir / 'chromium'}", f"--window-size={width},1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    stack.callback(driver.quit)
    return driver


def _sign_in(driver, url: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    field = WebDriverWait(driver, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "input[type='password']"))
    )
    field.send_keys(password)
    driver.find_element(By.XPATH, "//button[contains(., 'Sign in')]").click()
    # the page exchanges its ticket for the HttpOnly cookie: every deep link below relies on it
    WebDriverWait(driver, WAIT_S).until(lambda d: d.get_cookie("vitrine_session"), "the sign-in cookie never came")


def _settle(driver, marker: str, charts: int) -> None:
    from selenium.common.exceptions import TimeoutException

    try:
        _wait_page(driver, marker, charts)
    except TimeoutException as exc:
        raise TimeoutError(exc.msg) from None


def _wait_page(driver, marker: str, charts: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: marker in d.find_element(By.TAG_NAME, "body").text, f"{marker!r} never appeared")
    if charts:
        wait.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".vega-embed canvas, .vega-embed svg.marks")) >= charts,
            f"{charts} chart(s) never rendered",
        )
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']"), "never settled")
    time.sleep(0.5)  # the last chart's transition


CONTENT_HEIGHT_JS = """
const main = document.querySelector('[data-testid="stMain"]') || document.body;
const block = document.querySelector('[data-testid="stMainBlockContainer"]') || main;
return [Math.max(main.scrollHeight, block.scrollHeight + 120), main.scrollWidth, main.clientWidth];
"""


def capture(driver, url: str, marker: str, charts: int, path: Path, width: int, name: str) -> dict[str, Any]:
    """Open `url`, wait for `marker` and `charts`, grow the window to the page's height, save `path`; the
    page's size, time, text and checks ('None'/'nan' shown, sideways overflow). A page that never renders
    leaves failed-<name>.png beside `path` and raises TimeoutError."""
    from selenium.webdriver.common.by import By

    t0 = time.monotonic()
    driver.set_window_size(width, 1000)
    driver.get(url)
    try:
        _settle(driver, marker, charts)
    except TimeoutError as exc:
        failed = path.parent / f"failed-{name}.png"
        driver.save_screenshot(str(failed))  # what the page showed instead
        raise TimeoutError(f"{name}: {exc} (see {failed})") from exc
    height, scroll_w, client_w = driver.execute_script(CONTENT_HEIGHT_JS)
    driver.set_window_size(width, min(int(height), 6000))
    _settle(driver, marker, charts)
    driver.save_screenshot(str(path))
    body = driver.find_element(By.TAG_NAME, "body").text
    return {
        "path": str(path),
        "width": width,
        "height": min(int(height), 6000),
        "seconds": round(time.monotonic() - t0, 1),
        "bad_words": sorted(set(BAD_WORDS.findall(body))),
        "overflow_x": scroll_w > client_w + 1,
        "text": body,
    }


def _shoot(driver, url: str, state: str, key: str, out: Path, width: int) -> dict[str, Any]:
    draft = STATES[state].status == "draft"
    marker, charts = ("A draft has no results", 0) if draft else ("Results per metric and arm", 2)
    page = f"{url}/experiment?tenant={TENANT}&experiment={key}"
    return {"state": state, "experiment": key} | capture(
        driver, page, marker, charts, out / f"results-{state}.png", width, state
    )


def take_screenshots(
    out: Path,
    states: list[str] | None = None,
    width: int = 1280,
    database_url: str | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Seed simulated traffic, serve the dashboard, save results-<state>.png under `out`; figures per shot.

    Without `database_url` an embedded Postgres is started (and removed) under .vitrine/; `scale` multiplies
    the simulated users (the test uses fewer).
    """
    browser_paths()
    states = list(states or STATES)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    state_root = ROOT / ".vitrine"
    state_root.mkdir(exist_ok=True)
    with ExitStack() as stack:
        # under the project's state dir, not /tmp: pgserver (as root) chmods the data dir's parents
        workdir = Path(tempfile.mkdtemp(prefix="screenshots-", dir=state_root))
        stack.callback(shutil.rmtree, workdir, True)
        if database_url is None:
            from db.embedded import EmbeddedPostgres
            from db.migrate import upgrade

            pg = EmbeddedPostgres(workdir / "pg").start()
            stack.callback(pg.stop)
            database_url = pg.create_database("screenshots")
            upgrade(database_url)
        keys = seed(database_url, states, scale=scale)
        seeded_s = time.monotonic() - t0
        url = _serve(stack, database_url, workdir)
        driver = _browser(stack, workdir, width)
        _sign_in(driver, url)
        shots = [_shoot(driver, url, state, keys[state], out, width) for state in states]
    return {
        "screenshots": shots,
        "seed_seconds": round(seeded_s, 1),
        "total_seconds": round(time.monotonic() - t0, 1),
        "data": f"simulated traffic, tenant {TENANT}",
    }
