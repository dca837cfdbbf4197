"""Sample-ratio mismatch: are users split across arms as the configured weights say?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import chisquare

from experiments.result import ErrorCode

SRM_THRESHOLD = 0.001  # as GrowthBook and Kohavi et al.: a real SRM gives tiny p-values


@dataclass(frozen=True)
class SrmResult:
    """Chi-square goodness of fit of observed users per arm vs the weights."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float = SRM_THRESHOLD
    error: ErrorCode | None = None

    @property
    def mismatch(self) -> bool:
        """True when p < threshold: the split is broken and results should not be trusted."""
        return self.error is None and self.p_value < self.threshold

    @property
    def status(self) -> str:
        """'ok', 'mismatch' or the error code."""
        if self.error is not None:
            return self.error.value
        return "mismatch" if self.mismatch else "ok"

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return {
            "status": self.status,
            "mismatch": self.mismatch,
            "p_value": self.p_value,
            "chi2": self.chi2,
            "threshold": self.threshold,
            "observed": list(self.observed),
            "expected": list(self.expected),
        }


def check_srm(users: Sequence[int], weights: Sequence[float], threshold: float = SRM_THRESHOLD) -> SrmResult:
    """Chi-square test (scipy `chisquare`, df = arms - 1) of users per arm against weights.

    Arms with weight 0 are left out of the test unless users landed in them, which is an
    SRM by definition (p = 0).
    """
    obs = tuple(int(u) for u in users)
    if len(obs) != len(weights) or len(obs) < 2 or any(u < 0 for u in obs) or any(w < 0 for w in weights):
        return SrmResult(obs, (), 0.0, 1.0, threshold, ErrorCode.INVALID_INPUT)
    total, wsum = sum(obs), float(sum(weights))
    if total == 0:
        return SrmResult(obs, tuple(0.0 for _ in obs), 0.0, 1.0, threshold, ErrorCode.ZERO_USERS)
    if wsum <= 0:
        return SrmResult(obs, (), 0.0, 1.0, threshold, ErrorCode.INVALID_INPUT)
    expected = tuple(total * w / wsum for w in weights)
    if any(e == 0 and o > 0 for o, e in zip(obs, expected)):
        return SrmResult(obs, expected, 0.0, 0.0, threshold)  # users in a 0-weight arm
    pairs = [(o, e) for o, e in zip(obs, expected) if e > 0]
    if len(pairs) < 2:
        return SrmResult(obs, expected, 0.0, 1.0, threshold)
    chi2, p = chisquare([o for o, _ in pairs], [e for _, e in pairs])
    return SrmResult(obs, expected, float(chi2), float(p), threshold)
