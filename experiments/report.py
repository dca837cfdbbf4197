"""The experiment report: one JSON-serialisable structure, and its text-table rendering.

Order of trust: SRM first (a broken split invalidates everything below it), then per
metric and arm: n, value with CI, lift vs control with CI, p-value, adjusted p-value
(labelled with its correction), significance, and power figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from experiments.bayesian import bayesian_effect
from experiments.capping import small_sample_warning
from experiments.definition import ExperimentDefinition
from experiments.guardrails import FAIL, evaluate_guardrail
from experiments.metrics import METRICS, arm_value, metric_power
from experiments.multiple import adjust_p_values
from experiments.power import DEFAULT_POWER, DEFAULT_TARGET_MDE, MIN_DAYS_FOR_RATE
from experiments.result import ErrorCode, TestResult
from experiments.sequential import DEFAULT_TUNING_N, SequentialTest
from experiments.srm import check_srm
from experiments.stats import ArmStats, ExperimentStats

DEFAULT_METRICS = ("ctr", "ctr_per_user", "conversion", "revenue_per_user")


def _arms(definition: ExperimentDefinition | None, stats: ExperimentStats) -> list[tuple[str, float]]:
    """(name, weight) in configured order; unexpected arms in the data get weight 0 (-> SRM)."""
    if definition is not None:
        named = list(zip(definition.arm_names, definition.weights))
    else:
        names = sorted(a.arm for a in stats.arms)
        if "baseline" in names:  # the project's conventional control
            names.remove("baseline")
            names.insert(0, "baseline")
        named = [(n, 1.0 / len(names)) for n in names] if names else []
    known = {n for n, _ in named}
    named += [(a.arm, 0.0) for a in stats.arms if a.arm not in known]
    return named


def build_report(
    definition: ExperimentDefinition | None,
    stats: ExperimentStats,
    *,
    alpha: float = 0.05,
    correction: str = "holm",
    metrics: Sequence[str] = DEFAULT_METRICS,
    sequential: bool = False,
    tuning_n: float = DEFAULT_TUNING_N,
    cuped: bool = True,
    power: float = DEFAULT_POWER,
    target_relative_mde: float = DEFAULT_TARGET_MDE,
    days_elapsed: float | None = None,
    tenant_id: str | None = None,
    cap_revenue: bool = True,
) -> dict[str, Any]:
    """The full report as plain dicts, lists, strings and finite floats (JSON-ready).

    With `cap_revenue` and a cap in `stats` (the loader computes one), revenue per user is the capped revenue.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    guardrails = definition.guardrails if definition is not None else ()
    if definition is not None:
        # the decision's metrics are always shown: the primary and the guardrails are added when not asked for
        metrics = list(dict.fromkeys([*metrics, definition.primary_metric, *(g.metric for g in guardrails)]))
    primary_metric = definition.primary_metric if definition is not None else None
    arms = _arms(definition, stats)
    warnings: list[str] = []
    if len(arms) < 2:
        warnings.append("fewer than two arms have data: nothing to compare")
    control = arms[0][0] if arms else "baseline"
    arm_stats = {name: stats.arm(name) for name, _ in arms}
    capping = None
    if stats.revenue_cap is not None:
        applied = cap_revenue and stats.revenue_cap > 0
        capping = {"percentile": stats.revenue_cap_percentile, "cap": stats.revenue_cap, "applied": applied}
        if applied:
            arm_stats = {name: a.capped() for name, a in arm_stats.items()}
        elif cap_revenue:
            # more users than the percentile spent nothing: a cap of 0 would erase the metric
            warnings.append(
                f"revenue per user is not capped: the p{100 * (stats.revenue_cap_percentile or 0):g} of users' "
                "revenue is 0 (too few buyers); one large order can decide the revenue result"
            )
    srm = check_srm([arm_stats[n].users for n, _ in arms], [w for _, w in arms]) if len(arms) >= 2 else None
    if srm is not None and srm.mismatch:
        warnings.append(
            f"SAMPLE RATIO MISMATCH (p = {srm.p_value:.2g} < {srm.threshold}): the split does not "
            "match the weights; do not trust the results below until the cause is found"
        )
    if stats.multi_arm_users:
        warnings.append(f"{stats.multi_arm_users} users were exposed to several arms and are excluded")
    if days_elapsed is None and stats.daily:
        days_elapsed = float(len({d.day for d in stats.daily}))
    c = arm_stats.get(control, ArmStats(arm=control))
    # days remaining are extrapolated only from at least one full day of traffic (minutes say nothing)
    too_early = days_elapsed is not None and days_elapsed < MIN_DAYS_FOR_RATE
    per_day = c.users / days_elapsed if days_elapsed and not too_early else 0.0
    use_cuped = cuped and all(arm_stats[n].has_pre_period for n, _ in arms) and bool(arms)

    if "revenue_per_user" in metrics and len(arms) >= 2:
        # revenue is heavy-tailed: its t-test needs enough buyers per arm (A/A simulation in docs/experiments.md)
        warning = small_sample_warning("revenue per user", {n: arm_stats[n].purchasers for n, _ in arms})
        if warning:
            warnings.append(warning)

    # Power at the level the decision uses: the primary at alpha (Holm over its treatment arms: alpha / k at
    # worst), a secondary at its Holm level, conservatively alpha / m; sequential: the always-valid width.
    n_treatments = max(len(arms) - 1, 1)
    n_secondary = max(sum(1 for m in metrics if m != primary_metric) * n_treatments, 1)
    power_tuning_n = tuning_n if sequential else None
    metric_blocks, family = [], []
    guardrail_results = []
    for name in metrics:
        metric = METRICS[name]
        role = (
            "primary"
            if name == primary_metric
            else "guardrail"
            if name in {g.metric for g in guardrails}
            else "secondary"
        )
        rows = []
        cuped_applied = False  # a CUPED test ran (cuped_or_welch / cuped_ratio_or_delta fall back without a covariate)
        for arm_name, weight in arms:
            s = arm_stats[arm_name]
            value, ci = arm_value(metric, s, alpha)
            row: dict[str, Any] = {
                "arm": arm_name,
                "is_control": arm_name == control,
                "weight": weight,
                "n": s.users,
                "value": value,
                "ci": list(ci),
            }
            if arm_name != control:
                test = metric.make_test(c, s, alpha, use_cuped and metric.cuped_capable)
                cuped_applied = cuped_applied or test.METHOD.startswith("CUPED")
                result: TestResult = (SequentialTest(test, tuning_n) if sequential else test).compute_result()
                # the Bayesian view of the lift, or of the difference when the lift is undefined
                estimate = test.estimate()
                relative = estimate is not None and estimate.lift_defined
                bayes = bayesian_effect(estimate if result.error != ErrorCode.INVALID_INPUT else None, alpha, relative)
                row.update(
                    method=result.method,
                    effect=result.effect,
                    effect_ci=list(result.effect_ci),
                    lift=result.lift,
                    lift_ci=list(result.lift_ci),
                    p_value=result.p_value,
                    error=result.error.value if result.error else None,
                    decisive=result.decisive,
                    bayesian=bayes.to_dict(),
                )
                family.append((len(metric_blocks), len(rows), result, role))
                for g in [g for g in guardrails if g.metric == name]:
                    # one-sided at alpha: the ends of the same test's two-sided (1 - 2 alpha) interval
                    g_test = metric.make_test(c, s, min(2 * alpha, 0.99), use_cuped and metric.cuped_capable)
                    g_result = (SequentialTest(g_test, tuning_n) if sequential else g_test).compute_result()
                    verdict = evaluate_guardrail(g, arm_name, g_result, alpha)
                    guardrail_results.append(verdict.to_dict())
                    row["guardrail"] = verdict.status
                decision_alpha = alpha / (n_treatments if role == "primary" else n_secondary)
                pw = metric_power(metric, c, s, decision_alpha, power, target_relative_mde, per_day, power_tuning_n)
                if too_early and pw.days_remaining is None and not pw.error:
                    pw = replace(pw, too_early=True)
                row["power"] = pw.to_dict()
            rows.append(row)
        metric_blocks.append(
            {
                "name": name,
                "label": metric.label,
                "primary": role == "primary",
                "role": role,
                "cuped": cuped_applied,
                "capping": capping if name == "revenue_per_user" else None,
                "rows": rows,
            }
        )

    # The primary metric is the decision: tested at alpha, corrected only across its treatment arms (Holm; with
    # one treatment arm, unadjusted). Every other metric is one secondary family, corrected as asked.
    primary_family = [f for f in family if f[3] == "primary"]
    secondary_family = [f for f in family if f[3] != "primary"]
    primary_adjusted = adjust_p_values([f[2].p_value for f in primary_family], "holm", alpha)
    adjusted = adjust_p_values([f[2].p_value for f in secondary_family], correction, alpha)
    for fam, adj in ((primary_family, primary_adjusted), (secondary_family, adjusted)):
        for (mi, ri, result, _), p_adj in zip(fam, adj.adjusted):
            row = metric_blocks[mi]["rows"][ri]
            row["p_value_adjusted"] = p_adj
            # a note about the lift (baseline_zero) does not block the verdict; too_small, zero_variance etc. do
            row["significant"] = result.decisive and p_adj < alpha
    failed = [g for g in guardrail_results if g["status"] == FAIL]
    for g in reversed(failed):
        warnings.insert(0, f"GUARDRAIL FAILED: {g['metric']} on {g['arm']}: {g['reason']}")
    return _clean(
        {
            "experiment": stats.key,
            "tenant": tenant_id,
            "control": control,
            "primary_metric": primary_metric,
            "alpha": alpha,
            "analysis": (
                f"sequential (always-valid normal-mixture confidence sequences, tuning_n={tuning_n:g})"
                if sequential
                else "fixed-horizon"
            ),
            "cuped": use_cuped,
            "days_elapsed": days_elapsed,
            "arms": [{"name": n, "weight": w, "users": arm_stats[n].users} for n, w in arms],
            "srm": srm.to_dict() if srm else None,
            "multi_arm_users": stats.multi_arm_users,
            "correction": {
                "method": adjusted.method,
                "label": adjusted.label,
                "family": (
                    f"{len(secondary_family)} secondary comparisons: every treatment arm vs {control} on every "
                    "metric but the primary"
                ),
                "primary": (
                    f"{primary_metric} at alpha = {alpha:g}, not diluted by the secondaries"
                    + (f" (Holm across its {len(primary_family)} treatment arms)" if len(primary_family) > 1 else "")
                    if primary_family
                    else None
                ),
            },
            "revenue_capping": capping,
            "guardrails": guardrail_results,
            "guardrails_failed": bool(failed),
            "power_settings": {"power": power, "target_relative_mde": target_relative_mde},
            "warnings": warnings,
            "metrics": metric_blocks,
        }
    )


def daily_series(
    definition: ExperimentDefinition | None,
    stats: ExperimentStats,
    metric: str = "ctr",
    *,
    alpha: float = 0.05,
    sequential: bool = True,
    tuning_n: float = DEFAULT_TUNING_N,
    cap_revenue: bool = True,
) -> list[dict[str, Any]]:
    """Per day and treatment arm, from the cumulative daily stats: n, values, lift and its CI, p.

    Sequential by default: a chart of daily lifts is a peek per day, so only always-valid
    intervals may be read off it. Revenue is capped as in `build_report` (the loader's daily series
    carries the totals' cap), so the last day shows the table's value.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    m = METRICS[metric]
    capped = cap_revenue and stats.revenue_cap is not None and stats.revenue_cap > 0
    by_day: dict[Any, dict[str, ArmStats]] = {}
    for d in stats.daily:
        by_day.setdefault(d.day, {})[d.stats.arm] = d.stats.capped() if capped else d.stats
    present = ExperimentStats(stats.key, tuple(ArmStats(a) for a in sorted({d.stats.arm for d in stats.daily})))
    arms = [name for name, _ in _arms(definition, present)]
    if not arms:
        return []
    control, out = arms[0], []
    for day in sorted(by_day):
        c = by_day[day].get(control, ArmStats(arm=control))
        for arm_name in arms[1:]:
            t = by_day[day].get(arm_name, ArmStats(arm=arm_name))
            test = m.make_test(c, t, alpha, False)
            r = (SequentialTest(test, tuning_n) if sequential else test).compute_result()
            out.append(
                _clean(
                    {
                        "day": day.isoformat(),
                        "arm": arm_name,
                        "n_control": c.users,
                        "n": t.users,
                        "control_value": r.control_value,
                        "value": r.treatment_value,
                        "lift": r.lift,
                        "lift_ci": list(r.lift_ci),
                        "effect_ci": list(r.effect_ci),
                        "p_value": r.p_value,
                        "method": r.method,
                        "error": r.error.value if r.error else None,
                    }
                )
            )
    return out


def _clean(x: Any) -> Any:
    """Guarantee strict JSON: no NaN/inf survives (they become None)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pct(x: float | None, signed: bool = True) -> str:
    return "-" if x is None else (f"{x:+.2%}" if signed else f"{x:.2%}")


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:,.1f}"


def _p(x: float | None) -> str:
    return "-" if x is None else ("<0.0001" if x < 1e-4 else f"{x:.4f}")


def render_text(report: dict[str, Any]) -> str:
    """The report as fixed-width text tables (what `vitrine experiment report` prints)."""
    out = []
    head = f"Experiment {report['experiment']}"
    if report.get("tenant"):
        head += f" (tenant {report['tenant']})"
    out.append(head)
    out.append(
        f"control: {report['control']}   primary metric: {report['primary_metric'] or '-'}   "
        f"alpha: {report['alpha']}   analysis: {report['analysis']}" + ("   CUPED: on" if report["cuped"] else "")
    )
    srm = report["srm"]
    if srm:
        exp = "/".join(f"{e:,.0f}" for e in srm["expected"])
        obs = "/".join(f"{o:,}" for o in srm["observed"])
        out.append(
            f"SRM: {srm['status'].upper()} (chi-square p = {_p(srm['p_value'])}, threshold "
            f"{srm['threshold']}; users observed {obs}, expected {exp})"
        )
    for w in report["warnings"]:
        out.append(f"WARNING: {w}")
    if report["correction"].get("primary"):
        out.append(f"primary: {report['correction']['primary']}")
    out.append(f"adjusted p: {report['correction']['label']}; family: {report['correction']['family']}")
    if report.get("guardrails"):
        head = "GUARDRAILS: FAILED" if report.get("guardrails_failed") else "guardrails"
        out.append(f"{head} (non-inferiority of the lift against -margin, one-sided at alpha):")
        for g in report["guardrails"]:
            out.append(
                f"  {g['status'].upper():<12} {g['metric']} ({g['arm']}, margin {g['margin']:.2%}): {g['reason']}"
            )
    for m in report["metrics"]:
        out.append("")
        role = {"primary": " [primary]", "guardrail": " [guardrail]"}.get(m.get("role", ""), "")
        title = m["label"] + role + (" [CUPED]" if m["cuped"] else "")
        cap = m.get("capping")
        if cap and cap["applied"]:
            title += f" [capped per user at {_num(cap['cap'])}, p{100 * cap['percentile']:g} of all users]"
        out.append(title)
        cols = ["arm", "n", "value", "CI", "lift", "lift CI", "p", "p adj", "sig", "note"]
        table = [cols]
        for r in m["rows"]:
            ci = f"[{_num(r['ci'][0])}, {_num(r['ci'][1])}]"
            if r["is_control"]:
                table.append([r["arm"], f"{r['n']:,}", _num(r["value"]), ci, "(control)", "", "", "", "", ""])
                continue
            note = r["error"] or ""
            pw = r.get("power") or {}
            if not pw.get("error"):
                note = (note + " " if note else "") + f"MDE {_pct(pw.get('mde_relative'), False)}"
                if pw.get("required_n_control"):
                    days = pw.get("days_remaining")
                    note += f", {_pct(pw['target_relative_mde'], False)} needs {pw['required_n_control']:,}/arm" + (
                        f" (~{days:.1f} d more)" if days else " (too early to tell)" if pw.get("too_early") else ""
                    )
            table.append(
                [
                    r["arm"],
                    f"{r['n']:,}",
                    _num(r["value"]),
                    ci,
                    _pct(r["lift"]),
                    f"[{_pct(r['lift_ci'][0])}, {_pct(r['lift_ci'][1])}]",
                    _p(r["p_value"]),
                    _p(r.get("p_value_adjusted")),
                    "yes" if r.get("significant") else "no",
                    note,
                ]
            )
        widths = [max(len(str(row[i])) for row in table) for i in range(len(cols))]
        for row in table:
            out.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(out) + "\n"
