"""Experiment results: state and start/stop, SRM and guardrail banners, verdict, a row per metric and arm with its
CI bar and chance to win, guardrails, which model served each arm, cumulative lift, daily exposures, power."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import auth, data
from dashboards.results_table import arms_html, guardrails_html, results_html
from dashboards.ui import (
    as_of_text,
    count,
    current_tenant,
    database_url_or_stop,
    duration_text,
    meaning,
    p_text,
    pct,
    primary_block,
    short_label,
    srm_text,
    verdict,
)

SELECTED_KEY = "experiment_key"
FLASH_KEY = "experiment_flash"
STATE_BADGES = {
    "draft": ":gray-badge[:material/edit_note: Draft]",
    "running": ":green-badge[:material/play_circle: Running]",
    "stopped": ":red-badge[:material/stop_circle: Stopped]",
}
log = logging.getLogger(__name__)
CORRECTIONS = {"holm": "Holm (family-wise error)", "fdr_bh": "Benjamini-Hochberg (false discovery rate)"}


def table_frame(report: dict) -> pd.DataFrame:
    """The report's metric blocks as one row per metric and arm (values exactly as in the report)."""
    rows = []
    for block in report["metrics"]:
        for r in block["rows"]:
            rows.append(
                {
                    "metric": short_label(block["name"]) + (" ★" if block["primary"] else ""),
                    "arm": r["arm"] + (" (control)" if r["is_control"] else ""),
                    "n": r["n"],
                    "value": r["value"],
                    "CI low": r["ci"][0],
                    "CI high": r["ci"][1],
                    "lift": r.get("lift"),
                    "lift CI low": (r.get("lift_ci") or [None, None])[0],
                    "lift CI high": (r.get("lift_ci") or [None, None])[1],
                    "p": r.get("p_value"),
                    "p adjusted": r.get("p_value_adjusted"),
                    "significant": None if r["is_control"] else bool(r.get("significant")),
                    "note": meaning(r.get("error")),
                }
            )
    return pd.DataFrame(rows)


def lift_chart(series: list[dict], sequential: bool) -> alt.Chart:
    """Cumulative lift per day with its confidence band (always-valid when sequential)."""
    frame = pd.DataFrame(
        [
            {"day": s["day"], "arm": s["arm"], "lift": s["lift"], "low": s["lift_ci"][0], "high": s["lift_ci"][1]}
            for s in series
        ]
    )
    frame["day"] = pd.to_datetime(frame["day"])
    band_title = "always-valid CI" if sequential else "fixed-horizon CI"
    base = alt.Chart(frame).encode(x=alt.X("day:T", title="day"), color=alt.Color("arm:N", title="arm"))
    band = base.mark_area(opacity=0.25).encode(
        y=alt.Y("low:Q", title=f"lift vs control ({band_title})", axis=alt.Axis(format="%")), y2="high:Q"
    )
    line = base.mark_line(point=True).encode(
        y="lift:Q",
        tooltip=[
            "day:T",
            "arm:N",
            alt.Tooltip("lift:Q", format=".2%"),
            alt.Tooltip("low:Q", format=".2%"),
            alt.Tooltip("high:Q", format=".2%"),
        ],
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    return (band + line + zero).properties(height=320)


def exposures_frame(counts: list[dict]) -> pd.DataFrame:
    """Exposures per day and arm, from the loader's cumulative counts (differenced per arm)."""
    frame = pd.DataFrame(counts)
    frame["day"] = pd.to_datetime(frame["day"])
    frame = frame.sort_values(["arm", "day"])
    frame["exposures that day"] = frame.groupby("arm")["exposures"].diff().fillna(frame["exposures"]).astype(int)
    return frame


def power_calculator(res: data.Results, report: dict) -> None:
    """Pre-filled with the experiment's alpha, traffic and target MDE; figures from experiments.metrics.metric_power."""
    st.subheader("Power and sample size")
    block = primary_block(report)
    names = [m["name"] for m in report["metrics"]]
    treatments = [a["name"] for a in report["arms"] if a["name"] != report["control"]]
    if block is None or not treatments:
        st.info("The calculator needs exposures in at least two arms.")
        return
    control_users = next(a["users"] for a in report["arms"] if a["name"] == report["control"])
    days = report.get("days_elapsed") or 0
    c1, c2, c3, c4, c5 = st.columns(5)
    metric = c1.selectbox("Metric", names, index=names.index(block["name"]), format_func=short_label)
    arm = c2.selectbox("Treatment arm", treatments)
    power_level = c3.number_input("Power", 0.5, 0.99, float(report["power_settings"]["power"]), 0.05)
    mde = c4.number_input(
        "Target lift (relative)",
        0.005,
        1.0,
        float(report["power_settings"]["target_relative_mde"]),
        0.005,
        format="%.3f",
    )
    per_day = c5.number_input(
        "Control users per day",
        0.0,
        None,
        data.default_users_per_day(control_users, days),
        10.0,
        help="Default: the control arm's users so far per day elapsed, over at least one day",
    )
    pw = data.power(res, metric, arm, report["control"], report["alpha"], power_level, mde, per_day)
    if pw["error"]:
        st.info(f"No power figures for {short_label(metric)} yet ({pw['error']}).")
        return
    m1, m2, m3 = st.columns(3)
    m1.metric("Detectable lift now (MDE)", pct(pw["mde_relative"], signed=False))
    m2.metric(
        f"Users per arm for a {pct(pw['target_relative_mde'], signed=False)} lift", f"{pw['required_n_control']:,}"
    )
    remaining = pw["days_remaining"]
    if pw.get("too_early"):  # under a full day of traffic: no extrapolation from minutes
        shown = meaning("too_early").split(":")[0]
    else:
        shown = "reached" if remaining == 0 else ("– (no traffic)" if remaining is None else f"{remaining:.1f}")
    m3.metric("Days remaining at this traffic", shown)
    st.caption(
        f"Two-sided, alpha = {pw['alpha']}, power = {pw['power']:.0%}; now {pw['n_control']:,} control users; "
        f"{pw['kind']} metric (statsmodels NormalIndPower)."
    )


def state_line(exp: dict, now: datetime) -> str:
    """'Running since 2026-11-28 09:00 UTC (5 d 3 h)', 'Stopped 2026-12-01 ... after 3 d 2 h', 'Draft: ...'."""
    started, stopped = exp.get("started_at"), exp.get("stopped_at")
    if exp["status"] == "running" and started:
        return f"since {started:%Y-%m-%d %H:%M} UTC ({duration_text((now - started).total_seconds())})"
    if exp["status"] == "stopped" and started and stopped:
        return f"on {stopped:%Y-%m-%d %H:%M} UTC after {duration_text((stopped - started).total_seconds())}"
    if exp["status"] == "draft":
        return "not started: nobody is assigned or served yet"
    return ""


def state_controls(url: str, tenant: str, exp: dict) -> None:
    """Start (a draft) / stop (a running experiment) for a signed-in admin of this tenant, via db.experiments."""
    if not auth.may_manage(tenant) or exp["status"] == "stopped":
        return
    if exp["status"] == "draft":
        if st.button("Start experiment", type="primary", icon=":material/play_arrow:"):
            _change(url, tenant, exp["key"], "start")
        return
    confirm = st.checkbox("Stopping is final", help="A stopped experiment cannot run again; create a new one.")
    if st.button("Stop experiment", disabled=not confirm, icon=":material/stop:"):
        _change(url, tenant, exp["key"], "stop")


def _change(url: str, tenant: str, key: str, action: str) -> None:
    refused = data.change_status(url, tenant, key, action)
    if refused:
        st.error(f"Could not {action} {key}: {refused}")
        return
    log.info("experiment %s of tenant %s: %s from the dashboard", key, tenant, action)
    st.session_state[FLASH_KEY] = f"Experiment {key} {'started' if action == 'start' else 'stopped'}."
    st.rerun()


def definition_text(exp: dict) -> str:
    """The experiment's definition in one line (primary metric, guardrails, traffic, planned size)."""
    guards = ", ".join(
        f"{short_label(g['metric'])} (−{pct(g.get('margin', 0.02), signed=False)})" if isinstance(g, dict) else g
        for g in exp.get("guardrails") or []
    )
    return (
        f"placement **{exp['placement']}** · primary metric **{short_label(exp['primary_metric'])}** · "
        f"guardrails **{guards or 'none'}** · traffic **{pct(exp.get('traffic_fraction', 1.0), signed=False)}**"
        + (f" · planned **{count(exp['planned_sample_size'])}** users" if exp.get("planned_sample_size") else "")
    )


def srm_banner(report: dict) -> None:
    """A loud banner when the split does not match the weights."""
    srm = report.get("srm")
    if not (srm and srm["mismatch"]):
        return
    names = [a["name"] for a in report["arms"]]
    observed = " / ".join(f"{n} {count(o)}" for n, o in zip(names, srm["observed"]))
    expected = " / ".join(count(e) for e in srm["expected"])
    st.error(
        f"**Sample ratio mismatch** ({p_text(srm['p_value'])}): users {observed}, expected {expected} at the "
        "configured weights. Do not trust any result below until the cause is found (assignment, a bot "
        "filter or a serving failure hitting one arm).",
        icon=":material/error:",
    )


def guardrail_banner(report: dict) -> None:
    """A loud banner per failed guardrail."""
    for g in report.get("guardrails") or []:
        if g["status"] == "fail":
            st.error(
                f"**Guardrail failed: {short_label(g['metric'])}** on {g['arm']}: {g['reason']}. Do not ship this arm.",
                icon=":material/gpp_bad:",
            )


tenant = current_tenant()
url = database_url_or_stop()
experiments = data.experiments(url, tenant)
if not experiments:
    st.title("Experiment results")
    st.info(f"No experiments yet for tenant {tenant}; create one with `vitrine experiment create`.")
    st.stop()
keys = [e["key"] for e in experiments]
wanted = st.session_state.get(SELECTED_KEY) or st.query_params.get("experiment")
with st.sidebar:
    key = st.selectbox("Experiment", keys, index=keys.index(wanted) if wanted in keys else len(keys) - 1)
    sequential = st.toggle(
        "Sequential (peeking-safe) analysis",
        value=False,
        help="Always-valid confidence sequences: safe to look every day.",
    )
    correction = st.radio("Multiple-testing correction", list(CORRECTIONS), format_func=CORRECTIONS.get)
st.session_state[SELECTED_KEY] = key
st.query_params["experiment"] = key
st.query_params["tenant"] = tenant  # a deep link opens this tenant's experiment
exp = next(e for e in experiments if e["key"] == key)

title, controls = st.columns([3, 1], vertical_alignment="bottom")
title.title(f"Experiment {key}")
with controls:
    state_controls(url, tenant, exp)
if flash := st.session_state.pop(FLASH_KEY, None):
    st.success(flash)
st.markdown(f"{STATE_BADGES.get(exp['status'], exp['status'])} {state_line(exp, datetime.now(UTC))}")
st.caption(definition_text(exp))
served = data.served(url, tenant, key)

if exp["status"] == "draft":
    st.info(
        "A draft has no results: nobody is assigned to it yet. Start it to split traffic by the weights below; "
        "results appear here as exposures arrive."
    )
    st.html(arms_html(exp["arms"], {}, served))
    st.stop()

# One statistics load (a stored snapshot, or computed now and stored) feeds every figure below.
res = data.results(url, tenant, key, data.get_settings().results_max_age_s)
as_of, recompute = st.columns([4, 1])
as_of.caption(as_of_text(res.snapshot, res.live))
if recompute.button(
    "Recompute now",
    help="Aggregate the events again now and replace the stored snapshot "
    "(takes as long as a live computation: ~25 s at 10M events)",
):
    with st.spinner("Recomputing the experiment's statistics…"):
        data.recompute(url, tenant, key)
    st.rerun()
report = data.report(res, sequential, correction)
if report is None:
    st.info("This experiment has no exposures yet.")
    st.html(arms_html(exp["arms"], {}, served))
    st.stop()

srm_banner(report)
guardrail_banner(report)
st.caption(
    f"control **{report['control']}** · alpha {report['alpha']} · {report['analysis']}"
    + (" · CUPED on" if report["cuped"] else "")
)
text = verdict(report)
sig = any(r.get("significant") for b in report["metrics"] if b["primary"] for r in b["rows"])
srm_bad = bool(report["srm"] and report["srm"]["mismatch"])
(st.error if srm_bad or report.get("guardrails_failed") else st.success if sig else st.info)(f"**Verdict:** {text}")
for w in report["warnings"]:
    if not w.startswith(("SAMPLE RATIO MISMATCH", "GUARDRAIL FAILED")):  # already the banners above
        st.warning(w)
st.markdown(f"{srm_text(report)} · adjusted p: {report['correction']['label']} ({report['correction']['family']})")

st.subheader("Results per metric and arm")
st.html(results_html(report, data.tenant_currency(url, tenant)))
st.caption(
    "Bars: the lift's confidence interval against 0 (dashed); green = significant win, red = significant loss "
    "(adjusted p < alpha). Chance to win: the Bayesian posterior probability that the arm beats control "
    "(flat prior; hover for the credible interval and expected loss)."
)

st.subheader("Guardrails")
if report.get("guardrails"):
    st.html(guardrails_html(report))
    st.caption(
        "One-sided non-inferiority of the lift against −margin: pass = a loss beyond the margin is excluded; "
        "fail = significantly worse and a loss beyond the margin not excluded; inconclusive otherwise."
    )
else:
    st.caption("No guardrails defined for this experiment.")

st.subheader("Arms and the model that served them")
st.html(arms_html(exp["arms"], {a["name"]: a["users"] for a in report["arms"]}, served))
st.caption("Served by: the model key on the arm's exposure events (none for the baseline arm or a fallback).")

with st.expander("Exact values (for export)"):
    st.dataframe(
        table_frame(report),
        hide_index=True,
        width="stretch",
        column_config={
            "value": st.column_config.NumberColumn(format="%.4f"),
            "CI low": st.column_config.NumberColumn(format="%.4f"),
            "CI high": st.column_config.NumberColumn(format="%.4f"),
            "lift": st.column_config.NumberColumn(format="percent"),
            "lift CI low": st.column_config.NumberColumn(format="percent"),
            "lift CI high": st.column_config.NumberColumn(format="percent"),
            "p": st.column_config.NumberColumn(format="%.4f"),
            "p adjusted": st.column_config.NumberColumn(format="%.4f"),
        },
    )

st.subheader("Cumulative lift over time")
block = primary_block(report)
metric_names = [m["name"] for m in report["metrics"]]
chart_metric = st.selectbox(
    "Metric",
    metric_names,
    index=metric_names.index(block["name"]) if block else 0,
    format_func=short_label,
    key=f"chart_metric:{tenant}:{key}",  # per experiment: opening another one starts on its primary metric
)
daily = data.daily(res, chart_metric, sequential, report["alpha"])
if not daily["series"]:
    st.info("No daily data yet: the chart appears once two arms have exposures.")
else:
    st.altair_chart(lift_chart(daily["series"], sequential), width="stretch")
    st.caption(
        f"{short_label(chart_metric)}. "
        + (
            f"Band: always-valid confidence sequence (tuning n = {daily['tuning_n']:,.0f}); safe to read every day."
            if sequential
            else "Band: fixed-horizon CI per day. Reading it every day inflates false positives; "
            "switch on the sequential analysis to peek safely."
        )
    )
if daily["counts"]:
    st.subheader("Exposures per day and arm")
    exposures = exposures_frame(daily["counts"])
    st.altair_chart(
        alt.Chart(exposures)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(day):O", title="day"),
            xOffset="arm:N",
            y=alt.Y("exposures that day:Q"),
            color="arm:N",
            tooltip=["day:T", "arm:N", "exposures that day:Q", "users:Q"],
        )
        .properties(height=240),
        width="stretch",
    )
    st.caption("A sudden drop in one arm or a split drifting from the weights shows here first (SRM).")

power_calculator(res, report)
