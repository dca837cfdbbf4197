"""Seeded A/A and A/B simulations that check the tests' error rates end to end.

Everything runs through the real test classes (no re-implemented formulas), so the
figures validate the code the report uses:
- conversion, fixed horizon: A/A false-positive rate and A/B empirical vs theoretical power;
- conversion under daily peeking: "stop at the first p < alpha" with the naive z-test
  (inflated) vs the always-valid sequential test (must stay <= alpha);
- CTR with heterogeneous users (per-user draws): the user-level delta method keeps the A/A
  rate near alpha, while treating impressions as independent inflates it;
- heavy-tailed revenue per user with 1:9 arms (issue #17): the A/A rate of the Welch test without
  capping (inflated, in favour of the larger arm) and with per-user capping at a percentile, and how
  often the small-sample warning fires;
- CUPED for CTR (issue #17): the same users' pre-period CTR as covariate; A/A rate, variance removed,
  and A/B runs showing the adjusted estimate is unbiased (same mean effect as the plain one, smaller spread).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from core.machine import machine_info
from experiments.capping import Capping, capped_statistic, small_sample_warning
from experiments.cuped import CupedRatioTest
from experiments.means import WelchTTest
from experiments.power import proportion_test_power
from experiments.proportions import TwoProportionZTest
from experiments.ratio import DeltaMethodRatioTest
from experiments.sequential import SequentialTest
from experiments.stats import ArmStats, ProportionStatistic


@dataclass(frozen=True)
class SimulationSettings:
    """What to simulate; `users` is the total over both arms at the last day of a run."""

    runs: int = 2000
    users: int = 40000
    days: int = 14
    baseline_rate: float = 0.05
    effect: float = 0.10  # relative lift of the treatment in A/B runs
    alpha: float = 0.05
    seed: int = 20261121
    tuning_n: float = 0.0  # sequential tuning parameter; 0 = `users` (the planned sample size)
    ctr_users: int = 4000  # users per arm in the per-user CTR runs
    ctr_mean: float = 0.10
    ctr_beta_concentration: float = 2.0  # Beta(a, b) with a + b = this: small = very heterogeneous users
    exposures_mean: float = 5.0  # 1 + Poisson(mean - 1) exposures per user
    revenue_runs: int = 1000  # A/A revenue runs per size
    revenue_users: tuple[int, ...] = (50_000, 10_000)  # users per experiment (both arms), one scenario each
    revenue_control_share: float = 0.1  # 1:9 arms
    buyer_rate: float = 0.05
    order_lognormal: tuple[float, float] = (3.0, 2.0)  # order value ~ lognormal(mu, sigma)
    cap_percentile: float = 0.99  # of all per-user values (zeros included), both arms together
    ctr_pre_active: float = 0.7  # share of users with pre-period exposures (CUPED for CTR)
    ctr_cuped_effect: float = 0.05  # relative CTR lift in the CUPED A/B runs

    def __post_init__(self) -> None:
        if self.runs < 1 or self.users < 4 or self.days < 1 or self.ctr_users < 2:
            raise ValueError("runs >= 1, users >= 4, days >= 1 and ctr_users >= 2 are required")
        if not (0 < self.baseline_rate < 1 and 0 < self.baseline_rate * (1 + self.effect) < 1):
            raise ValueError("baseline_rate and baseline_rate * (1 + effect) must be in (0, 1)")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.revenue_runs < 1 or any(u < 20 for u in self.revenue_users) or not 0 < self.buyer_rate < 1:
            raise ValueError("revenue_runs >= 1, revenue_users >= 20 each and buyer_rate in (0, 1) are required")
        if not 0 < self.revenue_control_share < 1:
            raise ValueError("revenue_control_share must be in (0, 1)")
        Capping(self.cap_percentile)  # validates the percentile


@dataclass(frozen=True)
class Rate:
    """An estimated rate with its 95 % Wilson interval over the runs."""

    rate: float
    ci: tuple[float, float]
    hits: int
    runs: int


@dataclass(frozen=True)
class RevenueAA:
    """A/A revenue per user at one size: false-positive rates without and with capping, warnings raised."""

    users_control: int
    users_treatment: int
    fpr_uncapped: Rate
    fpr_capped: Rate
    larger_arm_wins_uncapped: float  # share of the uncapped false positives in favour of the larger arm
    warned: Rate  # runs where the small-sample warning fired
    median_cap: float


@dataclass(frozen=True)
class CtrCuped:
    """CUPED for CTR against the plain delta-method test on the same seeded runs (A/A and A/B)."""

    users_per_arm: int
    fpr_plain: Rate
    fpr_cuped: Rate
    mean_variance_reduction: float  # 1 - Var(adjusted diff) / Var(plain diff), mean over the A/A runs
    true_effect: float  # the A/B runs' CTR difference in expectation
    mean_effect_plain: float
    mean_effect_cuped: float
    sd_effect_plain: float  # spread of the estimates over the A/B runs
    sd_effect_cuped: float
    power_plain: Rate
    power_cuped: Rate


@dataclass(frozen=True)
class SimulationResult:
    """The figures of one simulation, JSON-ready through `to_dict`."""

    settings: SimulationSettings
    aa_fpr: Rate
    ab_power: Rate
    ab_power_theoretical: float
    peeking_fpr_naive: Rate
    peeking_fpr_sequential: Rate
    ab_power_sequential: Rate
    ctr_aa_fpr_delta_method: Rate
    ctr_aa_fpr_naive_impressions: Rate
    revenue: tuple[RevenueAA, ...]
    seconds: float
    ctr_cuped: CtrCuped | None = None

    def to_dict(self) -> dict:
        """A JSON-serialisable dict, including the machine it ran on."""
        d = asdict(self)
        d["settings"]["tuning_n"] = effective_tuning_n(self.settings)
        d["machine"] = machine_info()
        return d


def effective_tuning_n(s: SimulationSettings) -> float:
    """The sequential tuning parameter used: the planned total sample size unless set."""
    return s.tuning_n or float(s.users)


def rate_with_ci(hits: int, runs: int) -> Rate:
    """hits / runs with its 95 % Wilson interval."""
    lo, hi = proportion_confint(hits, runs, alpha=0.05, method="wilson")
    return Rate(hits / runs, (float(lo), float(hi)), int(hits), int(runs))


def _daily_counts(rng: np.random.Generator, s: SimulationSettings, rate_t: float) -> tuple[np.ndarray, ...]:
    """Cumulative users and conversions per (run, day) for control and treatment."""
    per_arm_day = np.full(s.days, s.users // 2 // s.days)
    per_arm_day[: (s.users // 2) % s.days] += 1  # spread the remainder, total = users // 2
    n = np.cumsum(per_arm_day)
    conv_c = np.cumsum(rng.binomial(per_arm_day, s.baseline_rate, size=(s.runs, s.days)), axis=1)
    conv_t = np.cumsum(rng.binomial(per_arm_day, rate_t, size=(s.runs, s.days)), axis=1)
    return n, conv_c, conv_t


def fixed_horizon_rejection_rate(settings: SimulationSettings, treatment_rate: float) -> Rate:
    """Share of runs where the z-test at the last day rejects (FPR when rates are equal)."""
    s = settings
    rng = np.random.default_rng(s.seed)
    n, conv_c, conv_t = _daily_counts(rng, s, treatment_rate)
    hits = sum(
        TwoProportionZTest(
            ProportionStatistic(int(n[-1]), int(conv_c[r, -1])),
            ProportionStatistic(int(n[-1]), int(conv_t[r, -1])),
            s.alpha,
        ).p_value
        < s.alpha
        for r in range(s.runs)
    )
    return rate_with_ci(hits, s.runs)


def _conversion_runs(rng: np.random.Generator, s: SimulationSettings, rate_t: float) -> tuple[int, int, int, int]:
    """(final-day rejections, naive ever-rejected, sequential ever-rejected, runs)."""
    n, conv_c, conv_t = _daily_counts(rng, s, rate_t)
    tuning = effective_tuning_n(s)
    final = naive_ever = seq_ever = 0
    for r in range(s.runs):
        naive_hit = seq_hit = False
        for d in range(s.days):
            test = TwoProportionZTest(
                ProportionStatistic(int(n[d]), int(conv_c[r, d])),
                ProportionStatistic(int(n[d]), int(conv_t[r, d])),
                s.alpha,
            )
            p = test.p_value
            naive_hit = naive_hit or p < s.alpha
            seq_hit = seq_hit or SequentialTest(test, tuning).p_value < s.alpha
            if d == s.days - 1 and p < s.alpha:
                final += 1
        naive_ever += naive_hit
        seq_ever += seq_hit
    return final, naive_ever, seq_ever, s.runs


def _ctr_arm(rng: np.random.Generator, s: SimulationSettings, arm: str) -> ArmStats:
    """Per-user draws: heterogeneous CTR ~ Beta, exposures 1 + Poisson, clicks ~ Binomial."""
    a = s.ctr_mean * s.ctr_beta_concentration
    b = (1 - s.ctr_mean) * s.ctr_beta_concentration
    x = 1 + rng.poisson(s.exposures_mean - 1, size=s.ctr_users)
    y = rng.binomial(x, rng.beta(a, b, size=s.ctr_users))
    xf, yf = x.astype(float), y.astype(float)
    return ArmStats(
        arm=arm,
        users=s.ctr_users,
        exposures=int(x.sum()),
        exposures_sum_squares=float((xf * xf).sum()),
        clicks=int(y.sum()),
        clicks_sum_squares=float((yf * yf).sum()),
        clicks_exposures_sum_products=float((xf * yf).sum()),
        clickers=int((y > 0).sum()),
    )


def ctr_arm_stats(arm: str, x: np.ndarray, y: np.ndarray, xp: np.ndarray, yp: np.ndarray) -> ArmStats:
    """The CTR sums of `ArmStats` (with the pre-period CUPED sums) from per-user arrays (numpy, for simulations)."""
    x, y, xp, yp = (np.asarray(v, dtype=float) for v in (x, y, xp, yp))
    return ArmStats(
        arm=arm,
        users=int(x.size),
        exposures=int(x.sum()),
        exposures_sum_squares=float((x * x).sum()),
        clicks=int(y.sum()),
        clicks_sum_squares=float((y * y).sum()),
        clicks_exposures_sum_products=float((x * y).sum()),
        clickers=int((y > 0).sum()),
        pre_active_users=int(((xp > 0) | (yp > 0)).sum()),
        pre_exposures_sum=float(xp.sum()),
        pre_exposures_sum_squares=float((xp * xp).sum()),
        pre_clicks_sum=float(yp.sum()),
        pre_clicks_sum_squares=float((yp * yp).sum()),
        pre_clicks_pre_exposures_sum_products=float((xp * yp).sum()),
        exposures_pre_exposures_sum_products=float((x * xp).sum()),
        exposures_pre_clicks_sum_products=float((x * yp).sum()),
        clicks_pre_exposures_sum_products=float((y * xp).sum()),
        clicks_pre_clicks_sum_products=float((y * yp).sum()),
    )


def ctr_users(rng: np.random.Generator, s: SimulationSettings, n: int, lift: float = 0.0) -> tuple[np.ndarray, ...]:
    """Per-user (x, y, xp, yp): CTR ~ Beta per user, in the experiment and (for a share of users) before it.

    The pre-period uses the same user's CTR, which is what makes it a covariate; the treatment multiplies
    the in-experiment CTR by 1 + lift and cannot touch the pre-period.
    """
    a = s.ctr_mean * s.ctr_beta_concentration
    b = (1 - s.ctr_mean) * s.ctr_beta_concentration
    p = rng.beta(a, b, size=n)
    x = 1 + rng.poisson(s.exposures_mean - 1, size=n)
    y = rng.binomial(x, np.minimum(p * (1 + lift), 1.0))
    xp = np.where(rng.random(n) < s.ctr_pre_active, 1 + rng.poisson(s.exposures_mean - 1, size=n), 0)
    yp = rng.binomial(xp, p)
    return x, y, xp, yp


def ctr_cuped(s: SimulationSettings, rng: np.random.Generator) -> CtrCuped:
    """`s.runs` A/A and `s.runs` A/B runs of CTR, `s.ctr_users` per arm: plain delta method vs CUPED on the ratio."""
    n = s.ctr_users
    fp_plain = fp_cuped = hit_plain = hit_cuped = 0
    reductions, effects_plain, effects_cuped = [], [], []
    for lift in (0.0, s.ctr_cuped_effect):
        for _ in range(s.runs):
            c = ctr_arm_stats("a", *ctr_users(rng, s, n))
            t = ctr_arm_stats("b", *ctr_users(rng, s, n, lift))
            plain = DeltaMethodRatioTest(c.ctr, t.ctr, s.alpha).compute_result()
            test = CupedRatioTest(c.ctr_cuped, t.ctr_cuped, s.alpha)
            adjusted = test.compute_result()
            if lift == 0.0:
                fp_plain += plain.p_value < s.alpha
                fp_cuped += adjusted.p_value < s.alpha
                reductions.append(test.variance_reduction)
            else:
                hit_plain += plain.p_value < s.alpha
                hit_cuped += adjusted.p_value < s.alpha
                effects_plain.append(plain.effect)
                effects_cuped.append(adjusted.effect)
    return CtrCuped(
        users_per_arm=n,
        fpr_plain=rate_with_ci(fp_plain, s.runs),
        fpr_cuped=rate_with_ci(fp_cuped, s.runs),
        mean_variance_reduction=float(np.mean(reductions)),
        # E[sum y] / E[sum x] with x independent of the user's CTR p: (1 + lift) E[p] - E[p]
        true_effect=s.ctr_cuped_effect * s.ctr_mean,
        mean_effect_plain=float(np.mean(effects_plain)),
        mean_effect_cuped=float(np.mean(effects_cuped)),
        sd_effect_plain=float(np.std(effects_plain, ddof=1)) if s.runs > 1 else 0.0,
        sd_effect_cuped=float(np.std(effects_cuped, ddof=1)) if s.runs > 1 else 0.0,
        power_plain=rate_with_ci(hit_plain, s.runs),
        power_cuped=rate_with_ci(hit_cuped, s.runs),
    )


def _ctr_runs(rng: np.random.Generator, s: SimulationSettings) -> tuple[int, int]:
    """A/A CTR runs: rejections of the delta-method test and of the impression-level z-test."""
    delta = naive = 0
    for _ in range(s.runs):
        c, t = _ctr_arm(rng, s, "a"), _ctr_arm(rng, s, "b")
        delta += DeltaMethodRatioTest(c.ctr, t.ctr, s.alpha).p_value < s.alpha
        naive += (
            TwoProportionZTest(
                ProportionStatistic(c.exposures, c.clicks), ProportionStatistic(t.exposures, t.clicks), s.alpha
            ).p_value
            < s.alpha
        )
    return delta, naive


def revenue_aa(s: SimulationSettings, users: int, rng: np.random.Generator) -> RevenueAA:
    """A/A runs of revenue per user (5 % buyers, lognormal orders) with unequal arms, Welch test."""
    n_c = max(2, round(users * s.revenue_control_share))
    n_t = users - n_c
    capping = Capping(s.cap_percentile)
    mu, sigma = s.order_lognormal
    plain = capped = warned = larger = 0
    caps = []
    for _ in range(s.revenue_runs):
        c = np.where(rng.random(n_c) < s.buyer_rate, rng.lognormal(mu, sigma, n_c), 0.0)
        t = np.where(rng.random(n_t) < s.buyer_rate, rng.lognormal(mu, sigma, n_t), 0.0)
        r = WelchTTest(capped_statistic(c, None), capped_statistic(t, None), s.alpha).compute_result()
        if r.p_value < s.alpha:
            plain += 1
            larger += (r.effect > 0) == (n_t > n_c)
        cap = capping.cap(c, t)
        caps.append(cap or 0.0)
        capped += WelchTTest(capped_statistic(c, cap), capped_statistic(t, cap), s.alpha).p_value < s.alpha
        warned += small_sample_warning("revenue", {"c": int((c > 0).sum()), "t": int((t > 0).sum())}) is not None
    return RevenueAA(
        users_control=n_c,
        users_treatment=n_t,
        fpr_uncapped=rate_with_ci(plain, s.revenue_runs),
        fpr_capped=rate_with_ci(capped, s.revenue_runs),
        larger_arm_wins_uncapped=larger / plain if plain else 0.0,
        warned=rate_with_ci(warned, s.revenue_runs),
        median_cap=float(np.median(caps)),
    )


def simulate(settings: SimulationSettings) -> SimulationResult:
    """Run all simulations with one seed; deterministic for given settings."""
    s = settings
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    aa_final, aa_naive, aa_seq, runs = _conversion_runs(rng, s, s.baseline_rate)
    rate_t = s.baseline_rate * (1 + s.effect)
    ab_final, _, ab_seq, _ = _conversion_runs(rng, s, rate_t)
    ctr_delta, ctr_naive = _ctr_runs(rng, s)
    revenue = tuple(revenue_aa(s, users, rng) for users in s.revenue_users)
    cuped = ctr_cuped(s, rng)
    theory = proportion_test_power(s.baseline_rate, rate_t, s.users // 2, 1.0, s.alpha)
    return SimulationResult(
        settings=s,
        aa_fpr=rate_with_ci(aa_final, runs),
        ab_power=rate_with_ci(ab_final, runs),
        ab_power_theoretical=theory,
        peeking_fpr_naive=rate_with_ci(aa_naive, runs),
        peeking_fpr_sequential=rate_with_ci(aa_seq, runs),
        ab_power_sequential=rate_with_ci(ab_seq, runs),
        ctr_aa_fpr_delta_method=rate_with_ci(ctr_delta, s.runs),
        ctr_aa_fpr_naive_impressions=rate_with_ci(ctr_naive, s.runs),
        revenue=revenue,
        seconds=time.perf_counter() - t0,
        ctr_cuped=cuped,
    )


def render_text(r: SimulationResult) -> str:
    """The figures as aligned text lines."""
    s = r.settings

    def fmt(x: Rate) -> str:
        return f"{x.rate:.4f}  [95% CI {x.ci[0]:.4f}, {x.ci[1]:.4f}]  ({x.hits}/{x.runs})"

    figures = [
        ("A/A false-positive rate, fixed horizon (z-test)", fmt(r.aa_fpr)),
        ("A/B power, fixed horizon: empirical", fmt(r.ab_power)),
        ("A/B power, fixed horizon: theoretical (NormalIndPower)", f"{r.ab_power_theoretical:.4f}"),
        ("A/A FPR under daily peeking: naive z-test", fmt(r.peeking_fpr_naive)),
        ("A/A FPR under daily peeking: sequential (always valid)", fmt(r.peeking_fpr_sequential)),
        ("A/B power under daily peeking: sequential", fmt(r.ab_power_sequential)),
        (f"CTR A/A FPR: user-level delta method ({s.ctr_users}/arm)", fmt(r.ctr_aa_fpr_delta_method)),
        ("CTR A/A FPR: impressions as independent (wrong)", fmt(r.ctr_aa_fpr_naive_impressions)),
    ]
    if r.ctr_cuped is not None:
        cc = r.ctr_cuped
        figures += [
            (f"CTR A/A FPR, {cc.users_per_arm}/arm: delta method", fmt(cc.fpr_plain)),
            (f"CTR A/A FPR, {cc.users_per_arm}/arm: CUPED (pre-period CTR)", fmt(cc.fpr_cuped)),
            ("CTR CUPED: variance removed (mean over A/A runs)", f"{cc.mean_variance_reduction:.4f}"),
            (
                f"CTR A/B +{s.ctr_cuped_effect:.0%}: mean effect plain / CUPED (true)",
                f"{cc.mean_effect_plain:.6f} / {cc.mean_effect_cuped:.6f}  ({cc.true_effect:.6f})",
            ),
            ("CTR A/B: sd of the effect plain / CUPED", f"{cc.sd_effect_plain:.6f} / {cc.sd_effect_cuped:.6f}"),
            ("CTR A/B power: delta method", fmt(cc.power_plain)),
            ("CTR A/B power: CUPED", fmt(cc.power_cuped)),
        ]
    for rv in r.revenue:
        arms = f"{rv.users_control:,} vs {rv.users_treatment:,}"
        figures += [
            (f"Revenue A/A FPR, {arms}: no capping", fmt(rv.fpr_uncapped)),
            (f"Revenue A/A FPR, {arms}: capped at p{s.cap_percentile * 100:g}", fmt(rv.fpr_capped)),
            (f"Revenue A/A, {arms}: small-sample warning raised", fmt(rv.warned)),
        ]
    width = max(len(name) for name, _ in figures)
    lines = [
        f"settings: runs={s.runs} users={s.users} (both arms) days={s.days} baseline={s.baseline_rate} "
        f"effect={s.effect:+.0%} alpha={s.alpha} seed={s.seed} tuning_n={effective_tuning_n(s):g}"
    ]
    lines += [f"{name.ljust(width)}  {value}" for name, value in figures]
    if r.revenue:
        mu, sigma = s.order_lognormal
        lines.append(
            f"revenue runs: {s.revenue_runs} per size, {s.buyer_rate:.0%} buyers, orders lognormal({mu:g}, {sigma:g}), "
            f"cap = p{s.cap_percentile * 100:g} of all per-user values (median cap "
            + ", ".join(f"{rv.median_cap:,.0f}" for rv in r.revenue)
            + ")"
        )
    lines.append(f"seconds: {r.seconds:.1f}")
    return "\n".join(lines) + "\n"
