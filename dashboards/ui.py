"""Shared page helpers: the signed-in tenant, number formatting, badges and the verdict sentence.

Formatting only: every number passed in comes from a report of `experiments.analysis`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from experiments.metrics import METRICS

TENANT_KEY = "tenant_id"
ALLOWED_KEY = "allowed_tenants"  # set at sign-in: list of tenant ids, or None for every tenant


def current_tenant() -> str:
    """The tenant chosen in the sidebar after sign-in; stops the page with an explanation otherwise."""
    tenant = st.session_state.get(TENANT_KEY)
    if not tenant:
        st.info("Sign in with a tenant admin key (or the dashboard password) on the start page first.")
        st.stop()
    allowed = st.session_state.get(ALLOWED_KEY)
    if ALLOWED_KEY in st.session_state and allowed is not None and tenant not in allowed:
        st.error(f"This sign-in does not open tenant {tenant}.")
        st.stop()
    return tenant


def database_url_or_stop() -> str:
    """The database URL of the resolved settings; stops with the reason if none is configured."""
    from core.settings import StackNotRunning
    from dashboards.data import get_settings

    try:
        return get_settings().database_url
    except StackNotRunning as exc:
        st.error(f"No database configured: {exc}")
        st.stop()


def short_label(metric: str) -> str:
    """'CTR' from 'CTR (clicks / exposures, ...)'."""
    label = METRICS[metric].label if metric in METRICS else metric
    return label.split(" (")[0]


PCT_DIGITS = 1  # one precision for every percentage on the pages
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
PERCENT_METRICS = {"ctr", "ctr_per_user", "conversion", "click_through"}
MONEY_METRICS = {"revenue_per_user"}

# Result codes (experiments.result.ErrorCode, and the power figures' too_early) as what they mean.
CODE_MEANINGS = {
    "zero_users": "an arm has no users yet",
    "zero_denominator": "an arm has no exposures yet",
    "too_few_users": "fewer than 2 users in an arm: no variance yet",
    "too_small": "too few users or conversions for a reliable test: shown, not a verdict",
    "zero_variance": "every user has the same value in each arm: the difference is exact, no test statistic",
    "baseline_zero": "control is 0: the relative lift is undefined (the difference and p decide)",
    "lift_unbounded": "control is not distinguishable from 0: the lift's interval is unbounded",
    "all_conversions": "all users (or none) converted in both arms: nothing to compare",
    "no_pre_period": "no pre-period data: CUPED is off",
    "invalid_input": "invalid data (negative counts or non-finite values): check the event feed",
    "too_early": "too early to tell: less than one full day of traffic",
}


def meaning(code: str | None) -> str:
    """A result code as what it means ('' for none); an unknown code is shown as itself."""
    if not code:
        return ""
    return CODE_MEANINGS.get(code, code.replace("_", " "))


def pct(x: float | None, signed: bool = True, digits: int = PCT_DIGITS) -> str:
    """A fraction as a percentage ('+4.1 %'), '–' when missing."""
    if x is None:
        return "–"
    return f"{x * 100:+.{digits}f} %" if signed else f"{x * 100:.{digits}f} %"


def money(x: float | None, currency: str | None = None, signed: bool = False) -> str:
    """An amount with its currency ('€12.34', '12.34 SEK'), '–' when missing."""
    if x is None:
        return "–"
    sign = ("+" if x > 0 else "−" if x < 0 else "") if signed else ("−" if x < 0 else "")
    amount = f"{abs(x):,.2f}"
    if not currency:
        return f"{sign}{amount}"
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency.upper()}"


def metric_value(metric: str, x: float | None, currency: str | None = None, signed: bool = False) -> str:
    """A metric's value in its unit: a percentage for rates, money for revenue, else a plain number."""
    if x is None:
        return "–"
    if metric in PERCENT_METRICS:
        return pct(x, signed=signed)
    if metric in MONEY_METRICS:
        return money(x, currency, signed=signed)
    return f"{x:+,.4f}" if signed else f"{x:,.4f}"


def count(n: float | None) -> str:
    """A count with thousands separators, '–' when missing."""
    return "–" if n is None else f"{n:,.0f}"


def p_value(p: float | None) -> str:
    """A p-value alone: '< 0.0001', '0.0123', '–' when missing."""
    if p is None:
        return "–"
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def p_text(p: float | None) -> str:
    """A p-value the way the verdict writes it ('p < 0.0001', 'p = 0.0123')."""
    if p is None:
        return "–"
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.4f}"


def primary_block(report: dict[str, Any]) -> dict[str, Any] | None:
    """The primary metric's block of the report (else the first metric)."""
    blocks = report.get("metrics") or []
    for block in blocks:
        if block["primary"]:
            return block
    return blocks[0] if blocks else None


def treatment_rows(block: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The non-control rows of a metric block."""
    return [r for r in (block or {}).get("rows", []) if not r["is_control"]]


def underpowered(row: dict[str, Any]) -> bool:
    """True when the current sample is below what the report's target MDE needs."""
    pw = row.get("power") or {}
    return not pw.get("error") and pw.get("required_n_control", 0) > pw.get("n_control", 0)


def srm_text(report: dict[str, Any]) -> str:
    """'SRM ok' / 'SRM MISMATCH (p = …)' / 'SRM n/a'."""
    srm = report.get("srm")
    if not srm:
        return "SRM n/a"
    if srm["mismatch"]:
        return f"SRM MISMATCH ({p_text(srm['p_value'])})"
    return "SRM ok" if srm["status"] == "ok" else f"SRM n/a ({srm['status'].replace('_', ' ')})"


def verdict(report: dict[str, Any]) -> str:
    """One sentence per treatment arm on the primary metric, then SRM and the correction family."""
    block = primary_block(report)
    rows = treatment_rows(block)
    if block is None or not rows or sum(a["users"] for a in report["arms"]) == 0:
        return "Not enough data yet: no exposures in two arms."
    metric = short_label(block["name"])
    n_metrics = len(report["metrics"])
    method = report["correction"]["method"]
    correction = "Holm-adjusted" if method == "holm" else ("BH-adjusted" if method == "fdr_bh" else method)
    parts = []
    for r in rows:
        interval = f"{pct(r['lift'])} [{pct(r['lift_ci'][0])}, {pct(r['lift_ci'][1])}]"
        p = p_text(r.get("p_value_adjusted"))
        if r.get("error") and not r.get("decisive"):
            parts.append(f"{r['arm']} vs {report['control']} on {metric}: no verdict, {meaning(r['error'])}")
        elif r.get("significant") and r.get("error"):  # a note about the lift: the difference decides
            verb = "raises" if (r.get("effect") or 0) > 0 else "lowers"
            parts.append(f"{r['arm']} {verb} {metric} ({meaning(r['error'])}), {p}")
        elif r.get("significant"):
            verb = "lifts" if (r["lift"] or 0) > 0 else "lowers"
            size = pct(abs(r["lift"] or 0), signed=False)
            parts.append(f"{r['arm']} {verb} {metric} by {size} [{pct(r['lift_ci'][0])}, {pct(r['lift_ci'][1])}], {p}")
        elif r.get("error"):
            parts.append(f"no significant difference in {metric} yet: {r['arm']} ({meaning(r['error'])}), {p}")
        else:
            parts.append(f"no significant difference in {metric} yet: {r['arm']} {interval}, {p}")
        pw = r.get("power") or {}
        if pw.get("too_early") and not r.get("significant"):
            parts[-1] += f" ({meaning('too_early')})"
        elif underpowered(r) and not r.get("significant"):
            parts[-1] += (
                f" (under-powered: a {pct(pw['target_relative_mde'], signed=False)} lift needs "
                f"{pw['required_n_control']:,} users per arm)"
            )
    tail = f"{srm_text(report)}; {n_metrics} metric{'s' if n_metrics != 1 else ''}, {correction}"
    if report.get("srm") and report["srm"]["mismatch"]:
        tail += " — do not trust these results until the split is explained"
    return "; ".join(parts) + "; " + tail


def as_of_text(snapshot: Any, live: bool, now: datetime | None = None) -> str:
    """'Results as of 2026-11-21 11:05 UTC (3 min ago), from ...' for an `experiments.snapshots.Snapshot`."""
    at = snapshot.computed_at.astimezone(UTC)
    minutes = max(((now or datetime.now(UTC)) - at).total_seconds(), 0.0) / 60
    took = f"{snapshot.duration_ms / 1000:.1f} s"
    where = (
        f"a live computation for this view ({snapshot.source} path, {took}; now stored)"
        if live
        else f"the stored snapshot ({snapshot.source} path, computed in {took})"
    )
    return f"Results as of {at:%Y-%m-%d %H:%M:%S} UTC ({minutes:.0f} min ago), from {where}"


def duration_text(seconds: float) -> str:
    """'45 s', '3 min', '2 h 5 min', '1 d 3 h'."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def outage_lines(health: dict[str, Any], now: datetime | None = None) -> list[tuple[str, str]]:
    """(level, sentence) for the pipeline page from `dashboards.data.outage_health`: each outage, or 'healthy'."""
    now = now or datetime.now(UTC)

    def since(ts: float, clock: str) -> str:
        at = datetime.fromtimestamp(ts, UTC)
        day = "" if at.date() == now.date() else f"{at:%Y-%m-%d} "
        whose = "the worker's clock" if clock == "worker" else "first seen by this dashboard"
        return f"since {day}{at:%H:%M:%S} UTC ({duration_text((now - at).total_seconds())}; {whose})"

    lines = []
    for name in ("database", "broker"):
        dep = health[name]
        if not dep["ok"]:
            lines.append(("error", f"{name} unreachable {since(dep['since'], dep['clock'])}: {dep['error']}"))
    waiting = health.get("worker_waiting_since")
    if waiting and health["database"]["ok"]:  # the worker's pool has not noticed the return yet
        lines.append(("warning", f"worker waiting for the database {since(waiting, 'worker')}"))
    if waiting:
        lines.append(("info", "the worker holds its partitions meanwhile: nothing is dead-lettered for the outage"))
    return lines or [("success", "healthy: the database and the broker answer")]
