"""Sufficient statistics: what the loader computes in SQL and every test consumes.

The unit is the user (the unit of randomisation). Each statistic keeps only sums,
sums of squares and cross-products, so 10M events reduce to a few numbers per arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date

import numpy as np


@dataclass(frozen=True)
class ProportionStatistic:
    """`successes` of `n` units had the outcome (e.g. purchasers among exposed users)."""

    n: int
    successes: int

    @property
    def mean(self) -> float:
        """The proportion successes / n (0 when n is 0)."""
        return self.successes / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """The Bernoulli variance p (1 - p) of one unit."""
        p = self.mean
        return p * (1.0 - p)

    @property
    def is_valid(self) -> bool:
        """Counts are non-negative and successes <= n."""
        return self.n >= 0 and 0 <= self.successes <= self.n


@dataclass(frozen=True)
class SampleMeanStatistic:
    """Per-unit values x_i summarised as n, sum (x_i - shift) and sum (x_i - shift)^2.

    `shift` (0 unless set) is any value near the mean: sums of squares of raw values lose every
    digit of the variance when the mean dwarfs the spread (1e6 + N(0, 1): ~1e-4 relative error),
    shifted sums do not (the shifted-data algorithm; Chan, Golub and LeVeque 1983). `from_values`
    picks the shift. `sum` and `sum_squares` are of the shifted values.
    """

    n: int
    sum: float
    sum_squares: float
    shift: float = 0.0

    @classmethod
    def from_values(cls, values: Sequence[float]) -> SampleMeanStatistic:
        """Sufficient statistics of raw per-unit values, shifted by their first value (numerically stable)."""
        x = np.asarray(values, dtype=float)
        k = float(x[0]) if x.size else 0.0
        d = x - k
        # numpy sums pairwise: rounding error O(log n) ulp, against O(n) for a running sum
        return cls(int(x.size), float(d.sum()), float((d * d).sum()), k)

    @property
    def mean(self) -> float:
        """The sample mean (0 when n is 0)."""
        return self.shift + self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance (ddof=1); 0 when n < 2, never negative."""
        if self.n < 2:
            return 0.0
        # Cancellation can make a constant sample slightly negative; clamp.
        return max((self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1), 0.0)

    @property
    def variance_of_mean(self) -> float:
        """Var(mean) = s^2 / n."""
        return self.variance / self.n if self.n > 0 else 0.0


@dataclass(frozen=True)
class RatioStatistic:
    """A ratio of per-unit sums, e.g. CTR = sum clicks_i / sum exposures_i over users i.

    `sum_products` is sum x_i y_i of numerator and denominator, needed for the
    delta method (correlated impressions of one user).
    """

    numerator: SampleMeanStatistic
    denominator: SampleMeanStatistic
    sum_products: float

    @property
    def n(self) -> int:
        """Number of units (users)."""
        return self.numerator.n

    @property
    def ratio(self) -> float:
        """sum numerator / sum denominator (0 when the denominator is 0)."""
        return self.numerator.sum / self.denominator.sum if self.denominator.sum else 0.0

    @property
    def covariance(self) -> float:
        """Sample covariance of numerator and denominator per unit (ddof=1)."""
        n = self.n
        if n < 2:
            return 0.0
        return (self.sum_products - self.numerator.sum * self.denominator.sum / n) / (n - 1)

    @property
    def variance_of_ratio(self) -> float:
        """Delta-method Var(ybar / xbar) = (s_y^2 - 2 r s_xy + r^2 s_x^2) / (n xbar^2)."""
        n, xbar = self.n, self.denominator.mean
        if n < 2 or xbar == 0:
            return 0.0
        r = self.numerator.mean / xbar
        v = self.numerator.variance - 2 * r * self.covariance + r * r * self.denominator.variance
        return max(v, 0.0) / (n * xbar * xbar)


@dataclass(frozen=True)
class RegressionAdjustedStatistic:
    """A post-period metric y with a pre-period covariate x per unit, for CUPED."""

    post: SampleMeanStatistic
    pre: SampleMeanStatistic
    sum_products: float

    @property
    def n(self) -> int:
        """Number of units (users)."""
        return self.post.n

    @property
    def covariance(self) -> float:
        """Sample covariance of y and x (ddof=1)."""
        n = self.n
        if n < 2:
            return 0.0
        return (self.sum_products - self.post.sum * self.pre.sum / n) / (n - 1)


@dataclass(frozen=True)
class RegressionAdjustedRatioStatistic:
    """A ratio metric (CTR = sum y / sum x) with the same users' pre-period ratio (sum yp / sum xp) as covariate.

    The four cross-products of post and pre numerator and denominator are what the delta method needs for
    the covariance of the two ratios (CUPED for ratio metrics: Deng et al. 2013, with the linearisation of
    Deng et al. 2018). Per-unit quantities of the linearised ratios L = (y - r x) / xbar, Lp = (yp - rp xp) / xpbar.
    """

    post: RatioStatistic
    pre: RatioStatistic
    post_num_pre_num: float  # sum y_i yp_i
    post_num_pre_den: float  # sum y_i xp_i
    post_den_pre_num: float  # sum x_i yp_i
    post_den_pre_den: float  # sum x_i xp_i

    @property
    def n(self) -> int:
        """Number of units (users)."""
        return self.post.n

    def _cov(self, a: SampleMeanStatistic, b: SampleMeanStatistic, products: float) -> float:
        n = self.n
        return (products - a.sum * b.sum / n) / (n - 1) if n >= 2 else 0.0

    @property
    def post_variance(self) -> float:
        """Var(L) per unit: n Var(post ratio) by the delta method."""
        return self.post.variance_of_ratio * self.n

    @property
    def pre_variance(self) -> float:
        """Var(Lp) per unit: n Var(pre ratio) (0 without pre-period exposures)."""
        return self.pre.variance_of_ratio * self.n

    @property
    def covariance(self) -> float:
        """Cov(L, Lp) per unit: [C(y,yp) - rp C(y,xp) - r C(x,yp) + r rp C(x,xp)] / (xbar xpbar)."""
        xbar, xpbar = self.post.denominator.mean, self.pre.denominator.mean
        if self.n < 2 or xbar == 0 or xpbar == 0:
            return 0.0
        y, x, yp, xp = self.post.numerator, self.post.denominator, self.pre.numerator, self.pre.denominator
        r, rp = self.post.ratio, self.pre.ratio
        c = (
            self._cov(y, yp, self.post_num_pre_num)
            - rp * self._cov(y, xp, self.post_num_pre_den)
            - r * self._cov(x, yp, self.post_den_pre_num)
            + r * rp * self._cov(x, xp, self.post_den_pre_den)
        )
        return c / (xbar * xpbar)


@dataclass(frozen=True)
class ArmStats:
    """Everything the analysis needs about one arm, with the user as the unit.

    Per-user x = exposures, y = attributed clicks, r = revenue, c = y / x; the
    `pre_*` fields describe the same users before the experiment (CUPED covariate).
    """

    arm: str
    users: int = 0
    exposures: int = 0
    exposures_sum_squares: float = 0.0
    clicks: int = 0
    clicks_sum_squares: float = 0.0
    clicks_exposures_sum_products: float = 0.0
    clickers: int = 0
    click_rate_sum: float = 0.0
    click_rate_sum_squares: float = 0.0
    purchasers: int = 0
    revenue_sum: float = 0.0
    revenue_sum_squares: float = 0.0
    pre_active_users: int = 0  # users with any event in the pre-period
    pre_purchasers: int = 0
    pre_and_post_purchasers: int = 0
    pre_revenue_sum: float = 0.0
    pre_revenue_sum_squares: float = 0.0
    revenue_pre_revenue_sum_products: float = 0.0
    # revenue capped at the experiment's cap (ExperimentStats.revenue_cap); the loader fills them, 0 otherwise
    capped_revenue_sum: float = 0.0
    capped_revenue_sum_squares: float = 0.0
    capped_revenue_pre_revenue_sum_products: float = 0.0
    # CUPED for CTR: the same users' pre-period exposures xp and clicks yp, and their products with x and y
    pre_exposures_sum: float = 0.0
    pre_exposures_sum_squares: float = 0.0
    pre_clicks_sum: float = 0.0
    pre_clicks_sum_squares: float = 0.0
    pre_clicks_pre_exposures_sum_products: float = 0.0
    exposures_pre_exposures_sum_products: float = 0.0
    exposures_pre_clicks_sum_products: float = 0.0
    clicks_pre_exposures_sum_products: float = 0.0
    clicks_pre_clicks_sum_products: float = 0.0

    def capped(self) -> ArmStats:
        """This arm with revenue replaced by the capped revenue (purchasers unchanged: capping keeps buyers)."""
        return replace(
            self,
            revenue_sum=self.capped_revenue_sum,
            revenue_sum_squares=self.capped_revenue_sum_squares,
            revenue_pre_revenue_sum_products=self.capped_revenue_pre_revenue_sum_products,
        )

    @property
    def conversion(self) -> ProportionStatistic:
        """Purchasers among exposed users."""
        return ProportionStatistic(self.users, self.purchasers)

    @property
    def click_through(self) -> ProportionStatistic:
        """Users who clicked at least once among exposed users."""
        return ProportionStatistic(self.users, self.clickers)

    @property
    def ctr(self) -> RatioStatistic:
        """Clicks / exposures as a ratio of per-user sums (delta method)."""
        return RatioStatistic(
            numerator=SampleMeanStatistic(self.users, self.clicks, self.clicks_sum_squares),
            denominator=SampleMeanStatistic(self.users, self.exposures, self.exposures_sum_squares),
            sum_products=self.clicks_exposures_sum_products,
        )

    @property
    def ctr_per_user(self) -> SampleMeanStatistic:
        """The mean over users of each user's own clicks / exposures."""
        return SampleMeanStatistic(self.users, self.click_rate_sum, self.click_rate_sum_squares)

    @property
    def revenue_per_user(self) -> SampleMeanStatistic:
        """Revenue per exposed user (users without a purchase count as 0)."""
        return SampleMeanStatistic(self.users, self.revenue_sum, self.revenue_sum_squares)

    @property
    def has_pre_period(self) -> bool:
        """True when some users of this arm were active before the experiment."""
        return self.pre_active_users > 0

    @property
    def revenue_cuped(self) -> RegressionAdjustedStatistic:
        """Revenue per user with pre-period revenue per user as covariate."""
        return RegressionAdjustedStatistic(
            post=self.revenue_per_user,
            pre=SampleMeanStatistic(self.users, self.pre_revenue_sum, self.pre_revenue_sum_squares),
            sum_products=self.revenue_pre_revenue_sum_products,
        )

    @property
    def conversion_cuped(self) -> RegressionAdjustedStatistic:
        """Conversion (0/1 per user) with pre-period purchase (0/1) as covariate."""
        # For 0/1 values sum == sum of squares, and sum x y counts users with both.
        return RegressionAdjustedStatistic(
            post=SampleMeanStatistic(self.users, self.purchasers, self.purchasers),
            pre=SampleMeanStatistic(self.users, self.pre_purchasers, self.pre_purchasers),
            sum_products=self.pre_and_post_purchasers,
        )

    @property
    def ctr_cuped(self) -> RegressionAdjustedRatioStatistic:
        """CTR with the user's pre-period CTR (pre-period clicks / exposures) as covariate."""
        n = self.users
        return RegressionAdjustedRatioStatistic(
            post=self.ctr,
            pre=RatioStatistic(
                numerator=SampleMeanStatistic(n, self.pre_clicks_sum, self.pre_clicks_sum_squares),
                denominator=SampleMeanStatistic(n, self.pre_exposures_sum, self.pre_exposures_sum_squares),
                sum_products=self.pre_clicks_pre_exposures_sum_products,
            ),
            post_num_pre_num=self.clicks_pre_clicks_sum_products,
            post_num_pre_den=self.clicks_pre_exposures_sum_products,
            post_den_pre_num=self.exposures_pre_clicks_sum_products,
            post_den_pre_den=self.exposures_pre_exposures_sum_products,
        )

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of the raw sums."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_users(
        cls,
        arm: str,
        exposures: Sequence[float],
        clicks: Sequence[float],
        revenue: Sequence[float] | None = None,
        pre_revenue: Sequence[float] | None = None,
        pre_active: Sequence[bool] | None = None,
        pre_exposures: Sequence[float] | None = None,
        pre_clicks: Sequence[float] | None = None,
    ) -> ArmStats:
        """Sum per-user values (one entry per user, exposures >= 1) into sufficient statistics.

        What the loader's SQL computes, for tests, simulations and in-memory data. A user
        converts when their revenue is > 0; with `pre_revenue`, pre-period purchase = pre > 0;
        pre-period activity defaults to any pre-period revenue, exposure or click.
        """
        n = len(exposures)
        rev = list(revenue) if revenue is not None else [0.0] * n
        pre = list(pre_revenue) if pre_revenue is not None else [0.0] * n
        pre_x = list(pre_exposures) if pre_exposures is not None else [0.0] * n
        pre_y = list(pre_clicks) if pre_clicks is not None else [0.0] * n
        if pre_active is not None:
            active = list(pre_active)
        else:
            active = [p > 0 or a > 0 or b > 0 for p, a, b in zip(pre, pre_x, pre_y)]
        if not (len(clicks) == len(rev) == len(pre) == len(active) == len(pre_x) == len(pre_y) == n):
            raise ValueError("per-user sequences must all have one entry per user")
        if any(x <= 0 for x in exposures):
            raise ValueError("every user in an arm has at least one exposure")
        ctr = [y / x for x, y in zip(exposures, clicks)]
        return cls(
            arm=arm,
            users=n,
            exposures=int(sum(exposures)),
            exposures_sum_squares=float(sum(x * x for x in exposures)),
            clicks=int(sum(clicks)),
            clicks_sum_squares=float(sum(y * y for y in clicks)),
            clicks_exposures_sum_products=float(sum(x * y for x, y in zip(exposures, clicks))),
            clickers=sum(1 for y in clicks if y > 0),
            click_rate_sum=float(sum(ctr)),
            click_rate_sum_squares=float(sum(c * c for c in ctr)),
            purchasers=sum(1 for r in rev if r > 0),
            revenue_sum=float(sum(rev)),
            revenue_sum_squares=float(sum(r * r for r in rev)),
            pre_active_users=sum(1 for a in active if a),
            pre_purchasers=sum(1 for p in pre if p > 0),
            pre_and_post_purchasers=sum(1 for p, r in zip(pre, rev) if p > 0 and r > 0),
            pre_revenue_sum=float(sum(pre)),
            pre_revenue_sum_squares=float(sum(p * p for p in pre)),
            revenue_pre_revenue_sum_products=float(sum(p * r for p, r in zip(pre, rev))),
            pre_exposures_sum=float(sum(pre_x)),
            pre_exposures_sum_squares=float(sum(a * a for a in pre_x)),
            pre_clicks_sum=float(sum(pre_y)),
            pre_clicks_sum_squares=float(sum(b * b for b in pre_y)),
            pre_clicks_pre_exposures_sum_products=float(sum(a * b for a, b in zip(pre_x, pre_y))),
            exposures_pre_exposures_sum_products=float(sum(x * a for x, a in zip(exposures, pre_x))),
            exposures_pre_clicks_sum_products=float(sum(x * b for x, b in zip(exposures, pre_y))),
            clicks_pre_exposures_sum_products=float(sum(y * a for y, a in zip(clicks, pre_x))),
            clicks_pre_clicks_sum_products=float(sum(y * b for y, b in zip(clicks, pre_y))),
        )

    @classmethod
    def from_mapping(cls, arm: str, row: dict) -> ArmStats:
        """Build from a mapping with (a subset of) the field names; NULL sums become 0."""
        kwargs = {}
        for f in fields(cls):
            if f.name == "arm" or f.name not in row:
                continue
            v = row[f.name]
            kwargs[f.name] = 0 if v is None else (int(v) if f.type == "int" else float(v))
        return cls(arm=arm, **kwargs)


@dataclass(frozen=True)
class DailyArmStats:
    """The cumulative statistics of one arm as they stood at the end of `day` (UTC)."""

    day: date
    stats: ArmStats


@dataclass(frozen=True)
class ExperimentStats:
    """All arms of one experiment, plus the data-quality counts the report shows."""

    key: str
    arms: tuple[ArmStats, ...]
    multi_arm_users: int = 0  # users exposed to more than one arm: excluded from `arms`
    daily: tuple[DailyArmStats, ...] = field(default=())
    # The per-user revenue cap the arms' capped sums use, and the percentile it is (None: not computed)
    revenue_cap: float | None = None
    revenue_cap_percentile: float | None = None

    def arm(self, name: str) -> ArmStats:
        """The stats of arm `name` (an empty ArmStats when the arm has no users yet)."""
        for a in self.arms:
            if a.arm == name:
                return a
        return ArmStats(arm=name)

    def with_daily(self, daily: tuple[DailyArmStats, ...]) -> ExperimentStats:
        """A copy carrying a per-day series."""
        return replace(self, daily=tuple(daily))
