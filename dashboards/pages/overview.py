"""Experiments overview: every experiment of the tenant with its primary-metric result and health badges."""

from __future__ import annotations

from datetime import UTC

import pandas as pd
import streamlit as st

from dashboards import data
from dashboards.ui import (
    current_tenant,
    database_url_or_stop,
    primary_block,
    short_label,
    srm_text,
    treatment_rows,
    underpowered,
)

SELECTED_KEY = "experiment_key"


def _arms_text(arms: list[dict]) -> str:
    return " / ".join(f"{a.get('name')} {float(a.get('weight', 0)):.0%}" for a in arms)


def overview_rows(url: str, tenant: str, experiments: list[dict], max_age_s: float) -> list[dict]:
    """One row per experiment and treatment arm, every figure taken from the experiment's report."""
    rows = []
    for exp in experiments:
        report, as_of, live = data.summary(url, tenant, exp["key"], max_age_s)
        base = {
            "experiment": exp["key"],
            "status": exp["status"],
            "arms": _arms_text(exp["arms"]),
            "as of (UTC)": f"{as_of.astimezone(UTC):%Y-%m-%d %H:%M}" + (" (live)" if live else ""),
        }
        if report is None:
            rows.append(base | {"users": 0, "verdict": "no data yet"})
            continue
        block = primary_block(report)
        base |= {
            "users": sum(a["users"] for a in report["arms"]),
            "SRM": srm_text(report),
            "primary metric": short_label(block["name"]) if block else "–",
        }
        treatments = treatment_rows(block) if base["users"] else []
        if not treatments:
            rows.append(base | {"verdict": "no data yet: no exposures in two arms"})
        for r in treatments:
            lo, hi = r["lift_ci"]
            if r.get("error"):
                badge = f"no result ({r['error']})"
            else:
                badge = "significant" if r.get("significant") else "not significant"
            rows.append(
                base
                | {
                    "arm": r["arm"],
                    "lift": r["lift"],
                    "lift CI low": lo,
                    "lift CI high": hi,
                    "p (adjusted)": r.get("p_value_adjusted"),
                    "verdict": badge,
                    "power": "under-powered" if underpowered(r) else "ok",
                }
            )
    return rows


tenant = current_tenant()
url = database_url_or_stop()
st.title("Experiments")
max_age_s = data.get_settings().results_max_age_s
st.caption(
    f"Tenant **{tenant}** · primary metric per experiment, treatment vs control · figures from each "
    f"experiment's stored result snapshot when under {max_age_s / 60:.0f} min old, else the totals computed "
    "live (the worker refreshes snapshots on a schedule; *Recompute now* on the detail page forces it)"
)
experiments = data.experiments(url, tenant)
if not experiments:
    st.info(
        f"No experiments yet for tenant {tenant}. Create one with "
        f"`vitrine experiment create KEY --tenant {tenant} --arms baseline=0.5,visual=0.5`, start it with "
        "`vitrine experiment start`, and its results appear here as exposures arrive."
    )
    st.stop()

rows = overview_rows(url, tenant, experiments, max_age_s)
COLUMNS = [
    "experiment",
    "status",
    "arms",
    "users",
    "arm",
    "lift",
    "lift CI low",
    "lift CI high",
    "p (adjusted)",
    "verdict",
    "SRM",
    "power",
    "primary metric",
    "as of (UTC)",
]
frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
st.dataframe(
    frame,
    hide_index=True,
    width="stretch",
    column_config={
        "lift": st.column_config.NumberColumn("lift", format="percent"),
        "lift CI low": st.column_config.NumberColumn("lift CI low", format="percent"),
        "lift CI high": st.column_config.NumberColumn("lift CI high", format="percent"),
        "p (adjusted)": st.column_config.NumberColumn("p (adjusted)", format="%.4f"),
    },
)
for r in rows:
    if r.get("SRM", "").startswith("SRM MISMATCH"):
        st.error(f"{r['experiment']}: {r['SRM']} — the split does not match the weights; fix that first.")
    if r.get("power") == "under-powered" and r.get("verdict") != "significant":
        st.warning(f"{r['experiment']} ({r['arm']}): under-powered — not enough users yet to detect the target lift.")

keys = [e["key"] for e in experiments]
col, _ = st.columns([1, 2])
choice = col.selectbox("Open an experiment", keys, index=len(keys) - 1)
if col.button("Show details"):
    st.session_state[SELECTED_KEY] = choice
    st.switch_page("pages/experiment.py")
