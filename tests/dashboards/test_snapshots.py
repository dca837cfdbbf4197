"""The experiment pages read result snapshots: the numbers equal `analyze(...)` as of the snapshot's time,
live and from a stored snapshot; a stale snapshot is recomputed; "Recompute now" replaces it; and
`vitrine bench dashboard --json` times the page on the seeded data."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import insert, text
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from db.experiment_snapshots import load_snapshot, refresh_due
from db.experiment_stats import analyze
from db.models import InteractionEvent
from experiments.analysis import ReportOptions
from tests.dashboards.helpers import TIMEOUT_S, page, texts
from tests.dashboards.seed import EXPERIMENT, TENANT, USERS

pytestmark = pytest.mark.integration


def _table(at: AppTest) -> list[tuple]:
    frame = at.dataframe[0].value
    return [
        (
            r["n"],
            r["value"],
            [r["CI low"], r["CI high"]],
            None if r["arm"].endswith("(control)") else r["p"],
            None if r["arm"].endswith("(control)") else r["p adjusted"],
        )
        for _, r in frame.iterrows()
    ]


def _expected(report: dict) -> list[tuple]:
    return [
        (r["n"], r["value"], r["ci"], r.get("p_value"), r.get("p_value_adjusted"))
        for b in report["metrics"]
        for r in b["rows"]
    ]


def _snapshot(db_engine, max_age_s: float = 3600):
    with db_engine.connect() as conn:
        return load_snapshot(conn, TENANT, EXPERIMENT, max_age_s)


def _analyze_at(db_engine, when):
    with db_engine.connect() as conn:
        return analyze(conn, TENANT, EXPERIMENT, ReportOptions(), now=when)


def _more_clicks(sessions, n: int = 400) -> None:
    """Clicks on baseline users' first requests: the live numbers move away from the stored snapshot's."""
    with sessions() as session, session.begin():
        exposures = session.execute(
            text(
                "SELECT user_id, request_id, occurred_at FROM interaction_events WHERE tenant_id = :t AND "
                "type = 'exposure' AND arm = 'baseline' AND request_id LIKE '%-0' ORDER BY user_id LIMIT :n"
            ),
            {"t": TENANT, "n": n},
        ).all()
        session.execute(
            insert(InteractionEvent),
            [
                {
                    "tenant_id": TENANT,
                    "event_id": f"extra-{i}",
                    "type": "click",
                    "user_id": u,
                    "request_id": r,
                    "product_id": "p-03",
                    "experiment": EXPERIMENT,
                    "arm": "baseline",
                    "value": None,
                    "payload": {},
                    "occurred_at": at + timedelta(seconds=40),
                }
                for i, (u, r, at) in enumerate(exposures)
            ],
        )


def test_detail_page_live_then_from_the_snapshot(seeded, db_engine, sessions):
    import streamlit as st

    assert _snapshot(db_engine) is None
    live = page("experiment")  # no snapshot: computed live, shown, and stored
    assert not live.exception, live.exception
    snap = _snapshot(db_engine)
    assert snap is not None
    expected = _analyze_at(db_engine, snap.computed_at)
    assert _table(live) == _expected(expected)
    assert "from a live computation for this view (rollup path" in texts(live)
    assert f"Results as of {snap.computed_at:%Y-%m-%d %H:%M:%S} UTC (0 min ago)" in texts(live)

    _more_clicks(sessions)  # live numbers change; the stored snapshot does not
    with db_engine.connect() as conn:
        moved = analyze(conn, TENANT, EXPERIMENT, ReportOptions(), now=snap.computed_at)
    assert _expected(moved) != _expected(expected)
    st.cache_data.clear()
    stored = page("experiment")
    assert not stored.exception
    assert _table(stored) == _expected(expected)  # every number from the snapshot, not the events
    body = texts(stored)
    assert "from the stored snapshot (rollup path" in body
    # the calculator and the exposures chart use the same statistics
    row = next(r for b in expected["metrics"] if b["primary"] for r in b["rows"] if not r["is_control"])
    assert f"{row['power']['required_n_control']:,}" in body
    assert f"now {sum(a['users'] for a in expected['arms'] if a['name'] == 'baseline'):,} control users" in body

    assert stored.button[0].label == "Recompute now"
    stored.button[0].click().run()
    assert not stored.exception, stored.exception
    new = _snapshot(db_engine)
    assert new.computed_at > snap.computed_at
    assert _table(stored) == _expected(_analyze_at(db_engine, new.computed_at)) == _expected(moved)
    assert f"Results as of {new.computed_at:%Y-%m-%d %H:%M:%S} UTC" in texts(stored)  # the new snapshot's time


def test_a_stale_snapshot_is_recomputed(seeded, db_engine, monkeypatch):
    import streamlit as st

    page("experiment")
    first = _snapshot(db_engine)
    monkeypatch.setenv("VITRINE_RESULTS_MAX_AGE_S", "0.001")  # every snapshot is too old for this dashboard
    st.cache_data.clear()
    at = page("experiment")
    assert not at.exception
    assert "from a live computation for this view" in texts(at)
    assert _snapshot(db_engine).computed_at > first.computed_at


def test_overview_reads_the_snapshot(seeded, db_engine, sessions):
    import streamlit as st

    live = page("overview")  # no snapshot: the totals computed live, nothing stored
    assert live.dataframe[0].value.set_index("experiment").loc[EXPERIMENT]["as of (UTC)"].endswith("(live)")
    assert _snapshot(db_engine) is None
    assert [r.key for r in refresh_due(db_engine, older_than_s=300)] == [EXPERIMENT]  # what the worker does
    snap = _snapshot(db_engine)
    report = _analyze_at(db_engine, snap.computed_at)
    _more_clicks(sessions)  # the live numbers move; the snapshot's do not
    st.cache_data.clear()
    at = page("overview")
    assert not at.exception
    row = next(r for b in report["metrics"] if b["primary"] for r in b["rows"] if not r["is_control"])
    shown = at.dataframe[0].value.set_index("experiment").loc[EXPERIMENT]
    assert (shown["users"], shown["lift"], shown["p (adjusted)"]) == (USERS, row["lift"], row["p_value_adjusted"])
    assert shown["as of (UTC)"] == f"{snap.computed_at:%Y-%m-%d %H:%M}"


def test_bench_dashboard_json(seeded):
    import vitrine.cli.bench  # noqa: F401  registers the commands
    from vitrine.cli.app import app

    out = CliRunner().invoke(app, ["bench", "dashboard", "--tenant", TENANT, "--key", EXPERIMENT, "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output.strip().splitlines()[-1])
    assert d["benchmark"] == "dashboard" and d["machine"]["cores"] >= 1 and len(d["load_average_before"]) == 3
    (r,) = d["results"]
    assert (r["tenant"], r["experiment"], r["users"], r["source"]) == (TENANT, EXPERIMENT, USERS, "rollup")
    assert r["events"] > USERS and r["days"] >= 5
    for k in ("cold_live_s", "cold_snapshot_s", "warm_s", "refresh_s"):
        assert 0 < r[k] < TIMEOUT_S, k
    assert "live computation" in r["live_line"] and "stored snapshot" in r["snapshot_line"]
    out = CliRunner().invoke(app, ["bench", "dashboard", "--tenant", TENANT])
    assert out.exit_code == 1 and "go together" in out.output
