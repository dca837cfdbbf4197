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
Relative-lift CIs are compared where the construction is the same (revenue, ratio, sequential);
conversion's (log ratio) and CUPED's lift are different constructions (docs/experiments.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
    "revenue/lognormal-5pct-buyers": (
        two_arm(WelchTTest, mean),
        {"effect": EXACT, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA, "lift": EXACT, "lift_ci": SAME_FORMULA},
    ),
    "cuped/gamma-pre-period": (
        two_arm(CupedTTest, regression_adjusted),
        {"effect": SAME_FORMULA, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA},
    ),
    "ratio/clicks-per-impression": (  # z (ours) vs t with ~10^4 dof (theirs)
        two_arm(DeltaMethodRatioTest, ratio),
        {"effect": EXACT, "p_value": 1e-5, "effect_ci": 1e-5, "lift": EXACT, "lift_ci": 2e-5},
    ),
    "sequential/tuning-5000": (
        sequential,
        {"effect": EXACT, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA, "lift_ci": SAME_FORMULA},
    ),
    "sequential/tuning-40000": (
        sequential,
        {"effect": EXACT, "p_value": SAME_FORMULA, "effect_ci": SAME_FORMULA, "lift_ci": SAME_FORMULA},
    ),
}
SRM_CASES = ["srm/1000-1100", "srm/5000-5400", "srm/980-2050-2970", "srm/100-900", "srm/10000-10150"]
# our result field -> (gbstats difference type, gbstats field)
GBSTATS_FIELD = {
    "effect": ("absolute", "expected"),
    "p_value": ("absolute", "p_value"),
    "effect_ci": ("absolute", "ci"),
    "lift": ("relative", "expected"),
    "lift_ci": ("relative", "ci"),
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
