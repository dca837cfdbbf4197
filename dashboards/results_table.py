"""The results page's tables as HTML: a row per metric and arm with its lift's CI bar against zero, the
verdict coloured (green win, red loss), the chance to win; the guardrails; which model served each arm.

Pure functions of a report of `experiments.report.build_report`; every text goes through
`dashboards.ui`'s formatters (no 'None', no 'nan') and `html.escape` (arm and model names come from tenants).
"""

from __future__ import annotations

from html import escape
from typing import Any

from dashboards.ui import count, meaning, metric_value, p_value, pct, short_label

LIFT_LIMIT = 1.0  # bars are drawn within ±100 %; a wider interval runs off the edge with an arrow

CELL_CLASS = {0: "vt-arm", 1: "vt-num", 3: "vt-num", 5: "vt-num", 6: "vt-num", 7: "vt-num", 9: "vt-why"}
STYLE = """<style>
.vt-table {border-collapse: collapse; width: 100%; font-size: 0.86rem; font-variant-numeric: tabular-nums;}
.vt-table th {text-align: left; font-weight: 600; color: #555; border-bottom: 2px solid #ddd; padding: 4px 6px;}
.vt-table td {border-bottom: 1px solid #eee; padding: 3px 6px; vertical-align: middle; white-space: nowrap;}
.vt-table td.vt-num {text-align: right;}
.vt-table tr.vt-metric td {background: #f6f7f9; font-weight: 600; padding-top: 7px;}
.vt-table td.vt-why {white-space: normal; min-width: 100px; max-width: 200px; color: #444;}
.vt-table td.vt-arm {white-space: normal; overflow-wrap: anywhere; min-width: 90px; max-width: 170px;}
.vt-results td.vt-arm {padding-left: 14px;}
.vt-badge {display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 0.78rem; font-weight: 600;}
.vt-win .vt-badge, .vt-pass .vt-badge {background: #d3f2dc; color: #0a6b2b;}
.vt-loss .vt-badge, .vt-fail .vt-badge {background: #fbd9d7; color: #a3150b;}
.vt-flat .vt-badge, .vt-inconclusive .vt-badge {background: #eceef1; color: #444;}
.vt-noverdict .vt-badge {background: #fff1cc; color: #7a5200;}
.vt-control .vt-badge {background: #e4ecfb; color: #1d4ea3;}
.vt-role {font-size: 0.75rem; font-weight: 600; color: #666; margin-left: 6px;}
.vt-bar {position: relative; width: 140px; height: 18px;}
.vt-bar .vt-zero {position: absolute; top: 0; bottom: 0; border-left: 1px dashed #333;}
.vt-bar .vt-ci {position: absolute; top: 4px; height: 10px; border-radius: 3px; opacity: 0.45;}
.vt-bar .vt-point {position: absolute; top: 5px; width: 8px; height: 8px; margin-left: -4px; border-radius: 50%;}
.vt-bar .vt-more {position: absolute; top: 4px; width: 0; height: 0; border: 5px solid transparent;}
</style>"""


def _bar(row: dict[str, Any], outcome: str, lo_dom: float, hi_dom: float) -> str:
    """The lift's CI as a bar against the zero line, with its point estimate (positioned divs: st.html keeps
    inline styles, and the bar stays text-free for the DOM checks)."""
    span = hi_dom - lo_dom

    def x(v: float) -> float:
        return round((min(max(v, lo_dom), hi_dom) - lo_dom) / span * 100, 2)

    colour = {"vt-win": "#1a9d49", "vt-loss": "#d2302a"}.get(outcome, "#8a94a6")
    parts = [f'<div class="vt-zero" style="left: {x(0.0)}%"></div>']
    lo, hi = row["lift_ci"]
    if _has_lift(row) and lo is not None and hi is not None:
        parts.append(
            f'<div class="vt-ci" style="left: {x(lo)}%; width: {max(x(hi) - x(lo), 0.8)}%; background: {colour}"></div>'
        )
        parts.append(f'<div class="vt-point" style="left: {x(row["lift"])}%; background: {colour}"></div>')
        if lo < lo_dom:
            parts.append(f'<div class="vt-more" style="left: 0; border-right-color: {colour}"></div>')
        if hi > hi_dom:
            parts.append(f'<div class="vt-more vt-right" style="right: 0; border-left-color: {colour}"></div>')
    title = f"lift CI {pct(lo)} to {pct(hi)}" if _has_lift(row) else "no lift interval"
    return f'<div class="vt-bar" title="{escape(title)}">{"".join(parts)}</div>'


def _has_lift(row: dict[str, Any]) -> bool:
    """Whether the row's relative lift and its CI are real numbers (not the neutral zeros of a code)."""
    # no code, or one that keeps real estimates; baseline_zero / lift_unbounded mean the lift itself is undefined
    return row.get("lift") is not None and row.get("error") in (None, "too_small", "zero_variance")


def outcome(row: dict[str, Any]) -> str:
    """The row's CSS class: vt-control, vt-win (significant gain), vt-loss, vt-flat (not significant), vt-noverdict."""
    if row["is_control"]:
        return "vt-control"
    if row.get("error") and not row.get("decisive"):
        return "vt-noverdict"
    if row.get("significant"):
        return "vt-win" if (row.get("effect") or 0) > 0 else "vt-loss"
    return "vt-flat"


def _result_text(row: dict[str, Any], cls: str) -> tuple[str, str]:
    """(badge, why) for a treatment row."""
    pw = row.get("power") or {}
    if cls == "vt-noverdict":
        return "no verdict", meaning(row["error"])
    note = meaning(row["error"]) if row.get("error") else ""
    if cls == "vt-win":
        return "win", note
    if cls == "vt-loss":
        return "loss", note
    if pw.get("too_early"):
        return "not significant", "; ".join(t for t in (note, meaning("too_early")) if t)
    if not pw.get("error") and pw.get("required_n_control", 0) > pw.get("n_control", 0):
        need = (
            f"under-powered: a {pct(pw['target_relative_mde'], signed=False)} lift needs "
            f"{count(pw['required_n_control'])} per arm"
        )
        return "not significant", "; ".join(t for t in (note, need) if t)
    return "not significant", note


def _chance(row: dict[str, Any]) -> tuple[str, str]:
    """(chance to win, tooltip) from the row's Bayesian view."""
    b = row.get("bayesian") or {}
    if not b or b.get("error") or (row.get("error") and not row.get("decisive")):
        return "–", meaning(b.get("error") or row.get("error")) or "no Bayesian result"
    relative = bool(b.get("relative"))

    def fmt(v: float, signed: bool = True) -> str:
        return pct(v, signed=signed) if relative else (f"{v:+.4g}" if signed else f"{v:.4g}")

    lo, hi = b["ci"]
    tip = (
        f"posterior {'lift' if relative else 'difference'} {fmt(b['expected'])}, credible interval {fmt(lo)} to "
        f"{fmt(hi)}; expected loss if shipped {fmt(b['expected_loss'], signed=False)}"
    )
    return pct(b["chance_to_win"], signed=False), tip


def _domain(rows: list[dict[str, Any]]) -> tuple[float, float]:
    lows = [r["lift_ci"][0] for r in rows if _has_lift(r) and r["lift_ci"][0] is not None]
    highs = [r["lift_ci"][1] for r in rows if _has_lift(r) and r["lift_ci"][1] is not None]
    lo = max(min(lows + [0.0]), -LIFT_LIMIT)
    hi = min(max(highs + [0.0]), LIFT_LIMIT)
    pad = max(hi - lo, 0.02) * 0.08
    return lo - pad, hi + pad


def results_html(report: dict[str, Any], currency: str | None = None) -> str:
    """The results table: per metric block a header (role, capping), then one row per arm."""
    head = (
        "<tr><th>metric / arm</th><th>users</th><th>value [95 % CI]</th><th>lift</th><th>lift CI against 0</th>"
        "<th>lift CI</th><th>p (adj.)</th><th>chance to win</th><th>result</th><th></th></tr>"
    )
    level = f"{1 - report['alpha']:.0%}"
    head = head.replace("95 %", level.replace("%", " %"))
    body = []
    for block in report["metrics"]:
        name = block["name"]
        role = {"primary": "PRIMARY", "guardrail": "GUARDRAIL"}.get(block.get("role", ""), "secondary")
        extra = []
        if block.get("cuped"):
            extra.append("CUPED")
        cap = block.get("capping")
        if cap and cap.get("applied"):
            extra.append(
                f"capped per user at {metric_value(name, cap['cap'], currency)} (p{100 * cap['percentile']:g})"
            )
        note = f" · {escape(', '.join(extra))}" if extra else ""
        body.append(
            f'<tr class="vt-metric"><td colspan="10">{escape(short_label(name))}'
            f'<span class="vt-role">{role}</span><span class="vt-role">{note}</span></td></tr>'
        )
        lo_dom, hi_dom = _domain([r for r in block["rows"] if not r["is_control"]])
        for r in block["rows"]:
            cls = outcome(r)
            ci = f"[{metric_value(name, r['ci'][0], currency)}, {metric_value(name, r['ci'][1], currency)}]"
            value = f"{metric_value(name, r['value'], currency)}<br><small>{ci}</small>"  # two lines: fits 1,280 px
            if r["is_control"]:
                cells = [
                    escape(r["arm"]),
                    count(r["n"]),
                    value,
                    "",
                    "",
                    "",
                    "",
                    "",
                    '<span class="vt-badge">control</span>',
                    "",
                ]
            else:
                badge, why = _result_text(r, cls)
                chance, tip = _chance(r)
                lift = pct(r["lift"]) if _has_lift(r) else "–"
                lift_ci = f"[{pct(r['lift_ci'][0])}, {pct(r['lift_ci'][1])}]" if _has_lift(r) else "–"
                cells = [
                    escape(r["arm"]),
                    count(r["n"]),
                    value,
                    lift,
                    _bar(r, cls, lo_dom, hi_dom),
                    lift_ci,
                    p_value(r.get("p_value_adjusted")),
                    f'<span title="{escape(tip)}">{chance}</span>',
                    f'<span class="vt-badge">{badge}</span>',
                    escape(why),
                ]
            tds = "".join(f'<td class="{CELL_CLASS.get(i, "")}">{c}</td>' for i, c in enumerate(cells))
            body.append(f'<tr class="{cls}" data-metric="{escape(name)}" data-arm="{escape(r["arm"])}">{tds}</tr>')
    return f'{STYLE}<table class="vt-table vt-results">{head}{"".join(body)}</table>'


def guardrails_html(report: dict[str, Any]) -> str:
    """One row per guardrail and arm: pass / fail / inconclusive, its margin, the one-sided bounds, why."""
    rows = []
    for g in report.get("guardrails") or []:
        status = g["status"]
        bounds = (
            f"[{pct(g['lower_bound'])}, {pct(g['upper_bound'])}]"
            if g.get("lower_bound") is not None and g.get("upper_bound") is not None
            else "–"
        )
        rows.append(
            f'<tr class="vt-{escape(status)}"><td><span class="vt-badge">{escape(status)}</span></td>'
            f"<td>{escape(short_label(g['metric']))}</td><td class='vt-arm'>{escape(g['arm'])}</td>"
            f'<td class="vt-num">−{pct(g["margin"], signed=False)}</td>'
            f'<td class="vt-num">{pct(g["lift"]) if g.get("lift") is not None and bounds != "–" else "–"}</td>'
            f'<td class="vt-num">{bounds}</td><td class="vt-why">{escape(g["reason"])}</td></tr>'
        )
    head = (
        "<tr><th>status</th><th>metric</th><th>arm</th><th>margin</th><th>lift</th>"
        f"<th>one-sided {1 - report['alpha']:.0%} bounds</th><th>why</th></tr>"
    )
    return f'{STYLE}<table class="vt-table vt-guardrails">{head}{"".join(rows)}</table>'


def served_text(models: dict[str | None, int]) -> str:
    """'vision-effnet@3 (98.0 %), no model: baseline or fallback (2.0 %)' for one arm; '–' without exposures."""
    total = sum(models.values())
    if not total:
        return "–"
    return ", ".join(
        f"{model if model is not None else 'no model (baseline or fallback)'} ({pct(n / total, signed=False)})"
        for model, n in sorted(models.items(), key=lambda kv: -kv[1])
    )


def arms_html(arms: list[dict[str, Any]], users: dict[str, int], served: dict[str, dict[str | None, int]]) -> str:
    """The arms: weight, users analysed, exposures, and which model served them."""
    rows = []
    for a in arms:
        name = a.get("name", "")
        models = served.get(name, {})
        rows.append(
            f"<tr><td class='vt-arm'>{escape(name)}</td>"
            f"<td class='vt-num'>{pct(float(a.get('weight', 0)), signed=False)}</td>"
            f"<td class='vt-num'>{count(users.get(name)) if name in users else '–'}</td>"
            f"<td class='vt-num'>{count(sum(models.values()))}</td>"
            f"<td class='vt-why'>{escape(served_text(models))}</td></tr>"
        )
    head = "<tr><th>arm</th><th>weight</th><th>users</th><th>exposures</th><th>served by</th></tr>"
    return f'{STYLE}<table class="vt-table vt-arms">{head}{"".join(rows)}</table>'
