#!/usr/bin/env python3
"""GrowthBook's gbstats on fixed inputs, written to gbstats_golden.json for test_gbstats_crosscheck.py.

gbstats 0.8 pins numpy < 2 and pandas < 2, so it cannot live in the product's environment. It runs
here, in a small venv of its own with exactly gbstats_requirements.txt, and nothing from vitrine is
imported: the inputs are sufficient statistics (plain numbers), made below from seeded generators.

    python3 -m venv /tmp/gbstats-venv
    /tmp/gbstats-venv/bin/pip install -r tests/experiments/gbstats_requirements.txt
    /tmp/gbstats-venv/bin/python tests/experiments/gbstats_golden.py --write   # (re)generate the JSON
    /tmp/gbstats-venv/bin/python tests/experiments/gbstats_golden.py --check   # what .ci/run does

--check regenerates everything in memory and fails (exit 1) if any input or gbstats output differs
from the committed JSON by more than CHECK_REL_TOL / CHECK_ABS_TOL, or if a case was added, removed
or renamed: every CI run proves that the committed numbers are what this gbstats computes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import FrequentistConfig, SequentialConfig, SequentialTwoSidedTTest, TwoSidedTTest
from gbstats.models import statistics as gb
from gbstats.utils import check_srm

GOLDEN = Path(__file__).with_name("gbstats_golden.json")
# Same pinned versions on another CPU: only the last bits of a sum or a special function may move.
# Far below the cross-check's own tolerances (1e-12 at the tightest), so a stale file cannot pass.
CHECK_REL_TOL = 1e-12
CHECK_ABS_TOL = 1e-14
PINNED = ("gbstats", "numpy", "scipy", "pandas")

ABSOLUTE = FrequentistConfig(difference_type="absolute")
RELATIVE = FrequentistConfig(difference_type="relative")


def mean_stat(x: np.ndarray) -> dict:
    return {"n": int(len(x)), "sum": float(x.sum()), "sum_squares": float((x * x).sum())}


def gb_mean(d: dict) -> gb.SampleMeanStatistic:
    return gb.SampleMeanStatistic(n=d["n"], sum=d["sum"], sum_squares=d["sum_squares"])


def to_gb(kind: str, arm: dict):
    """One arm's sufficient statistics (JSON form) as the gbstats statistic."""
    if kind == "proportion":
        return gb.ProportionStatistic(n=arm["n"], sum=arm["sum"])
    if kind == "mean":
        return gb_mean(arm)
    if kind == "regression_adjusted":
        return gb.RegressionAdjustedStatistic(
            n=arm["post"]["n"],
            post_statistic=gb_mean(arm["post"]),
            pre_statistic=gb_mean(arm["pre"]),
            post_pre_sum_of_products=arm["post_pre_sum_of_products"],
            theta=0,
        )
    if kind == "ratio":
        return gb.RatioStatistic(
            n=arm["m"]["n"],
            m_statistic=gb_mean(arm["m"]),
            d_statistic=gb_mean(arm["d"]),
            m_d_sum_of_products=arm["m_d_sum_of_products"],
        )
    raise ValueError(kind)


def result(test) -> dict:
    r = test.compute_result()
    return {"expected": float(r.expected), "p_value": float(r.p_value), "ci": [float(v) for v in r.ci]}


# Bayesian views cross-checked (issue #17): flat prior on the lift and on the difference, and a proper
# N(0, 0.3^2) prior on the lift (gbstats' relative prior).
BAYESIAN = {
    "relative": EffectBayesianConfig(difference_type="relative"),
    "absolute": EffectBayesianConfig(difference_type="absolute"),
    "relative_proper": EffectBayesianConfig(
        difference_type="relative", prior_effect=GaussianPrior(mean=0, variance=0.09, proper=True)
    ),
}
BAYESIAN_KINDS = ("proportion", "mean", "ratio")


def bayesian_result(test) -> dict:
    r = test.compute_result()
    return {
        "expected": float(r.expected),
        "ci": [float(v) for v in r.ci],
        "chance_to_win": float(r.chance_to_win),
        "risk": [float(v) for v in r.risk],
    }


def inputs() -> dict[str, dict]:
    """Every case's inputs; the seeds and draws are the ones the in-process cross-check used."""
    cases: dict[str, dict] = {}
    for n_c, a, n_t, b in [
        (1000, 100, 1000, 130),
        (50_000, 2500, 50_000, 2650),
        (20_000, 1000, 20_400, 1100),
        (3000, 150, 3100, 140),  # a loss: chance to win below 1/2, the treatment's expected loss dominant
    ]:
        cases[f"conversion/{n_c}-{a}-vs-{n_t}-{b}"] = {
            "kind": "proportion",
            "control": {"n": n_c, "sum": a},
            "treatment": {"n": n_t, "sum": b},
        }

    def revenue(seed: int, n: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.where(rng.random(n) < 0.05, rng.lognormal(3, 1, n), 0.0)

    cases["revenue/lognormal-5pct-buyers"] = {
        "kind": "mean",
        "control": mean_stat(revenue(1, 4000)),
        "treatment": mean_stat(revenue(2, 4200)),
    }

    rng = np.random.default_rng(7)
    pre = [rng.gamma(2, 5, n) for n in (3000, 3100)]
    post = [0.7 * x + rng.normal(0, 3, len(x)) for x in pre]
    post[1] = post[1] + 0.3
    cuped = [
        {"post": mean_stat(y), "pre": mean_stat(x), "post_pre_sum_of_products": float((x * y).sum())}
        for x, y in zip(pre, post)
    ]
    cases["cuped/gamma-pre-period"] = {"kind": "regression_adjusted", "control": cuped[0], "treatment": cuped[1]}

    rng = np.random.default_rng(3)
    ratio = []
    for n, ctr in ((5000, 0.10), (5000, 0.106)):
        x = (1 + rng.poisson(4, n)).astype(float)
        y = rng.binomial(x.astype(int), rng.beta(ctr * 2, (1 - ctr) * 2, n)).astype(float)
        ratio.append({"m": mean_stat(y), "d": mean_stat(x), "m_d_sum_of_products": float((x * y).sum())})
    cases["ratio/clicks-per-impression"] = {"kind": "ratio", "control": ratio[0], "treatment": ratio[1]}

    for tuning in (5000, 40_000):
        cases[f"sequential/tuning-{tuning}"] = {
            "kind": "proportion",
            "sequential_tuning": tuning,
            "control": {"n": 6000, "sum": 600},
            "treatment": {"n": 6100, "sum": 700},
        }

    for users, weights in [
        ([1000, 1100], [0.5, 0.5]),
        ([5000, 5400], [0.5, 0.5]),
        ([980, 2050, 2970], [0.2, 0.3, 0.5]),
        ([100, 900], [0.1, 0.9]),
        ([10_000, 10_150], [0.5, 0.5]),
    ]:
        cases["srm/" + "-".join(map(str, users))] = {"kind": "srm", "users": users, "weights": weights}
    return cases


def compute() -> dict:
    """The whole golden document: versions, and per case its inputs and gbstats' outputs."""
    cases = inputs()
    for case in cases.values():
        if case["kind"] == "srm":
            case["gbstats"] = {"p_value": float(check_srm(case["users"], case["weights"]))}
            continue
        c, t = to_gb(case["kind"], case["control"]), to_gb(case["kind"], case["treatment"])
        if "sequential_tuning" in case:
            case["gbstats"] = {
                d: result(
                    SequentialTwoSidedTTest(
                        c, t, SequentialConfig(difference_type=d, sequential_tuning_parameter=case["sequential_tuning"])
                    )
                )
                for d in ("absolute", "relative")
            }
        else:
            case["gbstats"] = {
                "absolute": result(TwoSidedTTest(c, t, ABSOLUTE)),
                "relative": result(TwoSidedTTest(c, t, RELATIVE)),
            }
            if case["kind"] in BAYESIAN_KINDS:
                case["gbstats"]["bayesian"] = {
                    name: bayesian_result(EffectBayesianABTest(c, t, config)) for name, config in BAYESIAN.items()
                }
    return {
        "_comment": "Made by tests/experiments/gbstats_golden.py in a venv of gbstats_requirements.txt; "
        "do not edit by hand. .ci/run regenerates it and fails on any difference.",
        "versions": {name: version(name) for name in PINNED},
        "cases": cases,
    }


def differences(committed, fresh, path: str = "") -> list[str]:
    """Where two documents differ: structure exactly, numbers within the check tolerance."""
    if isinstance(fresh, dict) and isinstance(committed, dict):
        out = [f"{path}/{k}: only in the committed file" for k in committed.keys() - fresh.keys()]
        out += [f"{path}/{k}: missing from the committed file" for k in fresh.keys() - committed.keys()]
        for k in fresh.keys() & committed.keys():
            out += differences(committed[k], fresh[k], f"{path}/{k}")
        return out
    if isinstance(fresh, list) and isinstance(committed, list) and len(fresh) == len(committed):
        return [d for i, (a, b) in enumerate(zip(committed, fresh)) for d in differences(a, b, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(fresh, numbers) and isinstance(committed, numbers) and not isinstance(fresh, bool):
        if math.isclose(committed, fresh, rel_tol=CHECK_REL_TOL, abs_tol=CHECK_ABS_TOL):
            return []
    elif committed == fresh:
        return []
    return [f"{path}: committed {committed!r}, gbstats now gives {fresh!r}"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"(re)write {GOLDEN.name}")
    mode.add_argument("--check", action="store_true", help=f"fail if {GOLDEN.name} is not what gbstats gives")
    args = parser.parse_args(argv)
    fresh = compute()
    if args.write:
        GOLDEN.write_text(json.dumps(fresh, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {GOLDEN} ({len(fresh['cases'])} cases, {fresh['versions']})")
        return 0
    diffs = differences(json.loads(GOLDEN.read_text(encoding="utf-8")), fresh)
    for d in diffs:
        print(f"gbstats golden: {d}", file=sys.stderr)
    if diffs:
        print(f"{GOLDEN.name} is not what gbstats computes; regenerate with --write and review", file=sys.stderr)
        return 1
    print(f"{GOLDEN.name}: {len(fresh['cases'])} cases agree with gbstats {fresh['versions']['gbstats']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
