"""CUPED for the ratio metric CTR: a hand-derived case, raw-data linearisation, fallbacks, a seeded simulation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from experiments.cuped import RATIO_METHOD, CupedRatioTest, cuped_ratio_or_delta
from experiments.definition import Arm, ExperimentDefinition
from experiments.ratio import DeltaMethodRatioTest
from experiments.report import build_report
from experiments.result import ErrorCode
from experiments.sequential import SequentialTest
from experiments.simulate import SimulationSettings, ctr_arm_stats, ctr_cuped, ctr_users
from experiments.stats import ArmStats, ExperimentStats

# Per user (exposures x, clicks y, pre-period exposures xp, pre-period clicks yp).
CONTROL = [(1, 1, 1, 1), (2, 0, 2, 0), (3, 1, 1, 0)]
TREATMENT = [(1, 0, 1, 0), (2, 2, 2, 1), (3, 1, 3, 2)]


def arm(name: str, users: list[tuple[int, int, int, int]]) -> ArmStats:
    x, y, xp, yp = zip(*users)
    return ArmStats.from_users(name, x, y, pre_exposures=xp, pre_clicks=yp)


def test_hand_derived_case():
    # By hand. Control: xbar 2, ybar 2/3, r = 1/3; pre xpbar 4/3, ypbar 1/3, rp = 1/4.
    #   L = (y - x/3)/2 = (1/3, -1/3, 0); Lp = (yp - xp/4)/(4/3) = (9/16, -3/8, -3/16)
    #   Var L = 1/9, Var Lp = 63/256, Cov = 5/32 (ddof 1; both means 0).
    # Treatment: r = 3/6 = 1/2, rp = 3/6 = 1/2; L = (y - x/2)/2 = (-1/4, 1/2, -1/4); Lp = (yp - xp/2)/2
    #   = (-1/4, 0, 1/4); Var L = 3/16, Var Lp = 1/16, Cov = 0.
    # theta = (5/32 + 0) / (63/256 + 1/16) = 40/79 (equal n); pooled rp = 4/10 = 2/5.
    # r_adj,c = 1/3 - 40/79 (1/4 - 2/5) = 97/237; r_adj,t = 1/2 - 40/79 (1/2 - 2/5) = 71/158.
    # Var(r_adj,c) = (1/9 - 2 (40/79)(5/32) + (40/79)^2 63/256) / 3 = 3589/674028;
    # Var(r_adj,t) = (3/16 + (40/79)^2 / 16) / 3 = 20323/299568.
    c, t = arm("c", CONTROL).ctr_cuped, arm("t", TREATMENT).ctr_cuped
    assert (c.post_variance, c.pre_variance, c.covariance) == pytest.approx((1 / 9, 63 / 256, 5 / 32), rel=1e-14)
    assert (t.post_variance, t.pre_variance, t.covariance) == pytest.approx((3 / 16, 1 / 16, 0.0), abs=1e-15)
    test = CupedRatioTest(c, t)
    assert test.theta == pytest.approx(40 / 79, rel=1e-14)
    r = test.compute_result()
    vc, vt = Fraction(3589, 674028), Fraction(20323, 299568)
    assert (r.control_value, r.treatment_value, r.effect) == pytest.approx((97 / 237, 71 / 158, 19 / 474), rel=1e-14)
    assert r.statistic == pytest.approx(19 / 474 / math.sqrt(vc + vt), rel=1e-13)
    assert r.error == ErrorCode.TOO_SMALL  # 3 users per arm: numbers, no verdict
    assert r.method == RATIO_METHOD
    assert test.variance_reduction == pytest.approx(1 - float(vc + vt) / (1 / 9 / 3 + 3 / 16 / 3), rel=1e-13)


def test_matches_cuped_on_linearised_raw_values():
    # The same estimator computed from raw per-user arrays (numpy), not from sufficient statistics.
    s = SimulationSettings()
    rng = np.random.default_rng(5)
    raw = [ctr_users(rng, s, 700), ctr_users(rng, s, 900, 0.1)]
    lin = []
    for x, y, xp, yp in raw:
        r, rp = y.sum() / x.sum(), yp.sum() / xp.sum()
        lin.append(((y - r * x) / x.mean(), (yp - rp * xp) / xp.mean(), r, rp, len(x)))
    cov = [np.cov(L, Lp, ddof=1) for L, Lp, *_ in lin]
    theta = sum(m[0, 1] / n for m, (*_, n) in zip(cov, lin)) / sum(m[1, 1] / n for m, (*_, n) in zip(cov, lin))
    pooled = sum(v[3].sum() for v in raw) / sum(v[2].sum() for v in raw)
    adjusted = [r - theta * (rp - pooled) for _, _, r, rp, _ in lin]
    variances = [np.var(L - theta * Lp, ddof=1) / n for L, Lp, _, _, n in lin]
    c, t = (ctr_arm_stats(name, *v) for name, v in zip("ct", raw))
    test = CupedRatioTest(c.ctr_cuped, t.ctr_cuped)
    est = test.estimate()
    assert test.theta == pytest.approx(theta, rel=1e-10)
    assert (est.control_value, est.treatment_value) == pytest.approx(adjusted, rel=1e-12)
    assert (est.control_variance, est.treatment_variance) == pytest.approx(variances, rel=1e-9)
    assert test.compute_result().error is None


def test_without_pre_period_falls_back_to_the_delta_method():
    c = arm("c", [(x, y, 0, 0) for x, y, _, _ in CONTROL * 20])
    t = arm("t", [(x, y, 0, 0) for x, y, _, _ in TREATMENT * 20])
    assert CupedRatioTest(c.ctr_cuped, t.ctr_cuped).compute_result().error == ErrorCode.NO_PRE_PERIOD
    fallback = cuped_ratio_or_delta(c.ctr_cuped, t.ctr_cuped)
    assert isinstance(fallback, DeltaMethodRatioTest)
    assert fallback.p_value == DeltaMethodRatioTest(c.ctr, t.ctr).p_value
    # a constant pre-period CTR (every user clicked 1 in 2) carries no information either
    const = arm("k", [(x, y, 2, 1) for x, y, _, _ in CONTROL * 20])
    assert CupedRatioTest(const.ctr_cuped, const.ctr_cuped).error == ErrorCode.NO_PRE_PERIOD
    assert CupedRatioTest(ArmStats("e").ctr_cuped, t.ctr_cuped).compute_result().error == ErrorCode.ZERO_USERS


def test_report_uses_cuped_for_ctr_and_the_sequential_view_wraps_it():
    s = SimulationSettings()
    rng = np.random.default_rng(9)
    c, t = ctr_arm_stats("baseline", *ctr_users(rng, s, 3000)), ctr_arm_stats("visual", *ctr_users(rng, s, 3000))
    definition = ExperimentDefinition("e", (Arm("baseline", 0.5), Arm("visual", 0.5)), primary_metric="ctr")
    stats = ExperimentStats("e", (c, t))
    for sequential in (False, True):
        rep = build_report(definition, stats, sequential=sequential)
        ctr = next(m for m in rep["metrics"] if m["name"] == "ctr")
        assert ctr["cuped"] and RATIO_METHOD in ctr["rows"][1]["method"]
        plain = build_report(definition, stats, sequential=sequential, cuped=False)
        plain_ctr = next(m for m in plain["metrics"] if m["name"] == "ctr")
        assert not plain_ctr["cuped"]
        # CUPED narrows the interval of the same comparison
        width = ctr["rows"][1]["effect_ci"][1] - ctr["rows"][1]["effect_ci"][0]
        plain_width = plain_ctr["rows"][1]["effect_ci"][1] - plain_ctr["rows"][1]["effect_ci"][0]
        assert width < 0.95 * plain_width
    seq = SequentialTest(CupedRatioTest(c.ctr_cuped, t.ctr_cuped), 6000).compute_result()
    assert seq.method.startswith("sequential " + RATIO_METHOD)


def test_seeded_simulation_reduces_variance_without_bias():
    # 600 A/A and 600 A/B runs of 1,000 users per arm; users' CTR ~ Beta(0.2, 1.8), 70 % with a pre-period.
    s = SimulationSettings(runs=600, ctr_users=1000, seed=17)
    r = ctr_cuped(s, np.random.default_rng(s.seed))
    assert 0.03 <= r.fpr_cuped.rate <= 0.07, r.fpr_cuped  # A/A: CUPED keeps the level
    assert r.mean_variance_reduction > 0.2  # the pre-period CTR explains a fifth or more of the variance
    assert r.sd_effect_cuped < 0.92 * r.sd_effect_plain  # and the estimates do spread less across runs
    # unbiased: the mean adjusted effect is the true effect within 3 standard errors of a mean of 600 runs
    assert abs(r.mean_effect_cuped - r.true_effect) < 3 * r.sd_effect_cuped / math.sqrt(s.runs)
    assert r.power_cuped.rate > r.power_plain.rate
