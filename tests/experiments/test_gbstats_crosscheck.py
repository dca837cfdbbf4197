"""Cross-check with a peer: GrowthBook's gbstats frequentist engine on the same inputs.

gbstats pins numpy < 2 and pandas < 2, so it is not installed here: its results are in
gbstats_golden.json, written by gbstats_golden.py in a venv of its own (gbstats_requirements.txt).
.ci/run rebuilds that venv and regenerates the file on every run, failing on any difference beyond
1e-12 relative, so these are gbstats' numbers; this module compares ours with them.

Tolerances, and why they are what they are:
- conversion: we use the pooled z-test + Newcombe CI (statsmodels), gbstats an unpooled
  Welch t-test; they agree to 2e-4 in p and CI bounds at n = 1,000 per arm, 2e-5 at 50,000
  (equal arms; unequal arms move the pooled and unpooled variances apart: 2e-4 in p at 20,000);
- revenue (Welch), CUPED, ratio (delta method), sequential and SRM: the same formulas, so
  they agree to 1e-9 (floating point), except the ratio test (z vs gbstats' t: 1e-5, its lift CI 2e-5);
- point estimates (difference, lift) are the same arithmetic: 1e-12.
A wrong statistic (another variance, dof or critical value) moves p or a CI bound by far more.
Relative-lift CIs are not compared: since issue #17 ours are Fieller intervals (the inversion of the
difference test, so they agree with p), gbstats' are symmetric delta-method intervals. The delta-method
lift variance itself is checked through the Bayesian view, which gbstats builds on it.
- Bayesian (gbstats `EffectBayesianABTest`, flat and proper N(0, 0.3^2) priors on the lift, flat on the
  difference): the same normal posterior, so chance to win, credible interval and expected losses agree
  to 1e-9 where the frequentist inputs are the same formula (means, ratio; proportions since the unpooled
  variance), 1e-8 for the expected losses (truncated-normal means near 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from experiments.bayesian import GaussianPrior, bayesian_effect
from experiments.cuped import CupedTTest
from experiments.means import WelchTTest
from experiments.proportions import TwoProportionZTest
from experiments.ratio import DeltaMethodRatioTest
from experiments.sequential import SequentialTest
from experiments.srm import check_srm
from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)

GOLDEN = json.loads((Path(__file__).parent / "gbstats_golden.json").read_text(encoding="utf-8"))
EXACT = 1e-12  # same arithmetic
SAME_FORMULA = 1e-9  # same formula, other code path


def mean(d: dict) -> SampleMeanStatistic:
    return SampleMeanStatistic(d["n"], d["sum"], d["sum_squares"])


def proportion(arm: dict) -> ProportionStatistic:
    return ProportionStatistic(arm["n"], arm["sum"])


def regression_adjusted(arm: dict) -> RegressionAdjustedStatistic:
    return RegressionAdjustedStatistic(mean(arm["post"]), mean(arm["pre"]), arm["post_pre_sum_of_products"])


def ratio(arm: dict) -> RatioStatistic:
    return RatioStatistic(mean(arm["m"]), mean(arm["d"]), arm["m_d_sum_of_products"])


def sequential(case: dict) -> SequentialTest:
    return SequentialTest(
        TwoProportionZTest(proportion(case["control"]), proportion(case["treatment"])), case["sequential_tuning"]
    )


def two_arm(test: Callable, arm: Callable) -> Callable[[dict], Any]:
    return lambda case: test(arm(case["control"]), arm(case["treatment"]))


CONVERSION = two_arm(TwoProportionZTest, proportion)
# case in gbstats_golden.json -> (our test on its inputs, {our field: tolerance})
CASES: dict[str, tuple[Callable[[dict], Any], dict[str, float]]] = {
    "conversion/1000-100-vs-1000-130": (
        CONVERSION,
        {"effect": EXACT, "p_value": 2e-4, "effect_ci": 2e-4, "lift": EXACT},
    ),
    "conversion/50000-2500-vs-50000-2650": (
        CONVERSION,
        {"effect": EXACT, "p_value": 2e-5, "effect_ci": 2e-5, "lift": EXACT},
    ),
    "conversion/20000-1000-vs-20400-1100": (
        CONVERSION,
        {"effect": EXACT, "p_value": 2e-4, "effect_ci": 2e-5, "lift": EXACT},
    ),
    "conversion/3000-150-vs-3100-140": (
        CONVERSION,
        {"effect": EXACT, "p_value": 2e-4, "effect_ci": 2e-4, "lift": EXACT},
    ),
    "revenue/lognormal-5pct-buyers": (
        two_arm(WelchTTest, mean),
        {"effect": EXACT, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA, "lift": EXACT},
    ),
    "cuped/gamma-pre-period": (
        two_arm(CupedTTest, regression_adjusted),
        {"effect": SAME_FORMULA, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA},
    ),
    "ratio/clicks-per-impression": (  # z (ours) vs t with ~10^4 dof (theirs)
        two_arm(DeltaMethodRatioTest, ratio),
        {"effect": EXACT, "p_value": 1e-5, "effect_ci": 1e-5, "lift": EXACT},
    ),
    "sequential/tuning-5000": (
        sequential,
        {"effect": EXACT, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA},
    ),
    "sequential/tuning-40000": (
        sequential,
        {"effect": EXACT, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA},
    ),
}
SRM_CASES = ["srm/1000-1100", "srm/5000-5400", "srm/980-2050-2970", "srm/100-900", "srm/10000-10150"]
# our result field -> (gbstats difference type, gbstats field)
GBSTATS_FIELD = {
    "effect": ("absolute", "expected"),
    "p_value": ("absolute", "p_value"),
    "effect_ci": ("absolute", "ci"),
    "lift": ("relative", "expected"),
}
BAYESIAN_CASES = [name for name, case in GOLDEN["cases"].items() if "bayesian" in case.get("gbstats", {})]
PRIORS = {
    "relative": (True, GaussianPrior()),
    "absolute": (False, GaussianPrior()),
    "relative_proper": (True, GaussianPrior(0.0, 0.09, proper=True)),
}


def test_every_golden_case_is_checked():
    assert GOLDEN["versions"]["gbstats"] == "0.8.0"
    assert sorted(GOLDEN["cases"]) == sorted([*CASES, *SRM_CASES])


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_gbstats(name):
    make, tolerances = CASES[name]
    case = GOLDEN["cases"][name]
    ours = make(case).compute_result()
    assert ours.ok, ours.error
    for field, tol in tolerances.items():
        difference_type, gb_field = GBSTATS_FIELD[field]
        theirs = case["gbstats"][difference_type][gb_field]
        value = getattr(ours, field)
        expected = tuple(theirs) if isinstance(theirs, list) else theirs
        assert value == pytest.approx(expected, abs=tol), f"{name}: {field}"


@pytest.mark.parametrize("name", SRM_CASES)
def test_srm_agrees_with_gbstats(name):
    case = GOLDEN["cases"][name]
    assert check_srm(case["users"], case["weights"]).p_value == pytest.approx(case["gbstats"]["p_value"], abs=EXACT)


def test_bayesian_cases_cover_every_kind():
    assert {GOLDEN["cases"][n]["kind"] for n in BAYESIAN_CASES} == {"proportion", "mean", "ratio"}


@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("name", BAYESIAN_CASES)
def test_bayesian_view_agrees_with_gbstats(name, prior):
    case = GOLDEN["cases"][name]
    make = {"proportion": CONVERSION, "mean": two_arm(WelchTTest, mean), "ratio": two_arm(DeltaMethodRatioTest, ratio)}
    relative, gaussian = PRIORS[prior]
    ours = bayesian_effect(make[case["kind"]](case).estimate(), 0.05, relative, gaussian)
    theirs = case["gbstats"]["bayesian"][prior]
    assert ours.error is None
    assert ours.expected == pytest.approx(theirs["expected"], abs=SAME_FORMULA)
    assert ours.ci == pytest.approx(tuple(theirs["ci"]), abs=SAME_FORMULA)
    assert ours.chance_to_win == pytest.approx(theirs["chance_to_win"], abs=SAME_FORMULA)
    assert (ours.control_loss, ours.expected_loss) == pytest.approx(tuple(theirs["risk"]), abs=1e-8)
