"""`vitrine bench dashboard`: the experiment detail page timed in-process with Streamlit's AppTest.

Per experiment: cold with no snapshot (the page computes the statistics live and stores them),
cold from the stored snapshot (cache cleared), warm (cache kept), and the snapshot refresh alone
(what the worker's timer pays). "Cold" clears `st.cache_data` but keeps the connection pool
(`st.cache_resource`), as a page served by a running dashboard would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

import dashboards

PAGE = Path(dashboards.__file__).resolve().parent / "pages" / "experiment.py"
TIMEOUT_S = 900  # a live computation at 10M events takes ~30 s; AppTest's default is 3 s


def _run_page(tenant_id: str, key: str) -> tuple[float, str]:
    """(seconds, the as-of line) of one run of the experiment page; raises if the page failed."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=TIMEOUT_S)
    at.session_state["tenant_id"] = tenant_id
    at.session_state["experiment_key"] = key
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the experiment page failed: {at.exception[0].value}")
    as_of = next((c.value for c in at.caption if str(c.value).startswith("Results as of")), "")
    if not as_of:
        raise RuntimeError("the experiment page showed no results (no 'Results as of' line)")
    return seconds, as_of


def time_experiment_page(database_url: str, tenant_id: str, key: str) -> dict[str, Any]:
    """Cold live, cold from snapshot, warm, and refresh times of one experiment's page (seconds)."""
    import streamlit as st

    from dashboards import data
    from db.experiment_snapshots import lock, refresh_snapshot

    os.environ["VITRINE_DATABASE_URL"] = database_url  # what the page's get_settings() reads
    engine = data.engine(database_url)
    with engine.connect() as conn:
        events = conn.execute(
            text("SELECT count(*) FROM interaction_events WHERE tenant_id = :t AND experiment = :k"),
            {"t": tenant_id, "k": key},
        ).scalar()
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM experiment_snapshots WHERE tenant_id = :t AND experiment = :k"),
            {"t": tenant_id, "k": key},
        )
    st.cache_data.clear()
    cold_live_s, live_line = _run_page(tenant_id, key)
    st.cache_data.clear()
    cold_snapshot_s, snapshot_line = _run_page(tenant_id, key)
    warm_s, _ = _run_page(tenant_id, key)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        lock(conn, tenant_id, key)
        snapshot = refresh_snapshot(conn, tenant_id, key)
    refresh_s = time.perf_counter() - t0
    return {
        "tenant": tenant_id,
        "experiment": key,
        "events": int(events or 0),
        "users": sum(a.users for a in snapshot.stats.arms),
        "days": len({d.day for d in snapshot.stats.daily}),
        "source": snapshot.source,
        "cold_live_s": cold_live_s,
        "cold_snapshot_s": cold_snapshot_s,
        "warm_s": warm_s,
        "refresh_s": refresh_s,
        "live_line": live_line,
        "snapshot_line": snapshot_line,
    }


def warm_imports() -> None:
    """Import what the page imports, so the first timed run does not pay for module loading."""
    import altair  # noqa: F401
    import pandas  # noqa: F401
    import streamlit.testing.v1  # noqa: F401

    import dashboards.data
    import dashboards.ui  # noqa: F401
