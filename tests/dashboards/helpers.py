"""Helpers of the dashboard tests: a page run under Streamlit's AppTest as the signed-in tenant, its texts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.dashboards.seed import APP_DIR, TENANT
from tests.helpers import settings_env, wait_for

TIMEOUT_S = 60


def page(name: str, tenant: str = TENANT) -> AppTest:
    """A page run alone, as the signed-in tenant (app.py sets this after sign-in)."""
    at = AppTest.from_file(str(APP_DIR / "pages" / f"{name}.py"), default_timeout=TIMEOUT_S)
    at.session_state["tenant_id"] = tenant
    return at.run()


def texts(at: AppTest) -> str:
    """Every markdown, caption, title, alert and metric text on the page, joined."""
    parts = [
        e.value
        for kind in ("markdown", "caption", "title", "subheader", "info", "success", "warning", "error")
        for e in getattr(at, kind)
    ]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def served_dashboard(settings, workdir: Path, password: str) -> Iterator[str]:
    """`vitrine dashboard` on a free port with an operator password, for a browser test; yields its URL."""
    from streams.embedded_broker import free_port

    port = free_port()
    env = {**os.environ, **settings_env(settings), "HOME": str(workdir)}
    log = (workdir / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitrine", "dashboard", "--port", str(port), "--password", password],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url) or proc.poll() is not None, 60, what="the dashboard to serve")
        assert proc.poll() is None, (workdir / "dashboard.log").read_text()
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
