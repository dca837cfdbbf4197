"""Helpers of the dashboard tests: a page run under Streamlit's AppTest as the signed-in tenant, its texts."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.dashboards.seed import APP_DIR, TENANT

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
