"""Metric roles (issue #17, defect 4): the primary is not diluted by the secondaries; guardrails are evaluated."""

from __future__ import annotations

import json

import pytest

from experiments.definition import Arm, ExperimentDefinition, Guardrail, parse_guardrails
from experiments.guardrails import evaluate_guardrail
from experiments.proportions import TwoProportionZTest
from experiments.report import build_report, render_text
from experiments.stats import ExperimentStats, ProportionStatistic
from tests.experiments.helpers import conversion_arm

ARMS = (Arm("baseline", 0.5), Arm("visual", 0.5))


def test_the_primary_is_tested_at_alpha_not_diluted_by_the_secondaries():
    # 200/4000 vs 250/4000: unpooled z = 2.43, p = 0.0150 (Holm over 4 metrics made it 0.060: "not significant")
    stats = ExperimentStats("e", (conversion_arm("baseline", 4000, 200), conversion_arm("visual", 4000, 250)))
    rep = build_report(ExperimentDefinition("e", ARMS, primary_metric="conversion"), stats)
    conv = next(m for m in rep["metrics"] if m["name"] == "conversion")
    row = conv["rows"][1]
    assert conv["role"] == "primary" and row["p_value"] == pytest.approx(0.0150, abs=5e-4)
    assert row["p_value_adjusted"] == row["p_value"] and row["significant"]
    assert {m["role"] for m in rep["metrics"] if m["name"] != "conversion"} == {"secondary"}
    assert (
        "3 secondary comparisons" in rep["correction"]["family"]
        and "conversion at alpha" in rep["correction"]["primary"]
    )
    # the same data with ctr as primary: conversion is one of 3 secondaries, Holm-adjusted 0.0150 * 3
    rep = build_report(ExperimentDefinition("e", ARMS, primary_metric="ctr"), stats)
    row = next(m for m in rep["metrics"] if m["name"] == "conversion")["rows"][1]
    assert row["p_value_adjusted"] == pytest.approx(3 * row["p_value"]) and row["significant"]


def test_unknown_or_bad_guardrails_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="unknown guardrail metric 'nosuch_metric'"):
        parse_guardrails(["nosuch_metric"])
    with pytest.raises(ValueError, match="margin must be a relative loss"):
        parse_guardrails([{"metric": "conversion", "margin": 2}])
    with pytest.raises(ValueError, match="listed twice"):
        parse_guardrails(["conversion", {"metric": "conversion", "margin": 0.01}])
    # rows stored before validation still load (serving must go on): the bad entry is skipped
    assert parse_guardrails(["nosuch_metric", "ctr"], strict=False) == (Guardrail("ctr"),)
    assert parse_guardrails(["ctr"]) == (Guardrail("ctr", 0.02),)


def guarded(margin: float) -> ExperimentDefinition:
    return ExperimentDefinition("e", ARMS, primary_metric="ctr", guardrails=(Guardrail("conversion", margin),))


def test_guardrail_pass_inconclusive_and_fail_with_a_top_level_flag():
    equal = ExperimentStats("e", (conversion_arm("baseline", 20000, 500), conversion_arm("visual", 20000, 500)))
    # lift 0, one-sided 95 % lower bound -9.8 %: non-inferior at a 20 % margin, not at 2 %
    passed = build_report(guarded(0.2), equal)
    assert [g["status"] for g in passed["guardrails"]] == ["pass"] and not passed["guardrails_failed"]
    assert -0.11 < passed["guardrails"][0]["lower_bound"] < -0.09
    assert build_report(guarded(0.02), equal)["guardrails"][0]["status"] == "inconclusive"
    # 400 -> 300 purchasers of 10,000: lift -25 %, significantly worse
    worse = ExperimentStats("e", (conversion_arm("baseline", 10000, 400), conversion_arm("visual", 10000, 300)))
    rep = build_report(guarded(0.02), worse)
    json.dumps(rep, allow_nan=False)
    g = rep["guardrails"][0]
    assert g["status"] == "fail" and g["upper_bound"] < 0 and rep["guardrails_failed"] is True
    assert rep["warnings"][0].startswith("GUARDRAIL FAILED: conversion on visual")
    conv = next(m for m in rep["metrics"] if m["name"] == "conversion")
    assert conv["role"] == "guardrail" and conv["rows"][1]["guardrail"] == "fail"
    assert "GUARDRAILS: FAILED" in render_text(rep)


def test_guardrail_bounds_are_one_sided_at_alpha():
    # the lower bound is the 2-alpha two-sided Fieller limit: exactly -margin there is the edge of "pass"
    c, t = ProportionStatistic(20000, 500), ProportionStatistic(20000, 500)
    lo = TwoProportionZTest(c, t, 0.10).compute_result().lift_ci[0]
    result = TwoProportionZTest(c, t, 0.10).compute_result()
    assert evaluate_guardrail(Guardrail("conversion", -lo + 1e-9), "v", result, 0.05).status == "pass"
    assert evaluate_guardrail(Guardrail("conversion", -lo - 1e-9), "v", result, 0.05).status == "inconclusive"
    # degenerate data never passes
    tiny = TwoProportionZTest(ProportionStatistic(10, 0), ProportionStatistic(10, 0), 0.10).compute_result()
    assert evaluate_guardrail(Guardrail("conversion"), "v", tiny, 0.05).status == "inconclusive"
