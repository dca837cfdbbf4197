"""Guardrail evaluation: a one-sided non-inferiority test of the relative lift against a stated margin.

H0: lift <= -margin (the treatment is worse than the margin allows), H1: lift > -margin. The one-sided
(1 - alpha) bounds of the lift are the ends of the test's own two-sided (1 - 2 alpha) Fieller interval (the
same statistic as the report's verdict, fixed-horizon or always-valid), so:

- pass: the lower bound is above -margin (non-inferiority shown at alpha);
- fail: the upper bound is below 0 and non-inferiority is not shown (the treatment is significantly worse,
  one-sided at alpha, and a loss beyond the margin cannot be excluded);
- inconclusive: anything else, including degenerate data and an undefined lift (control value 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.definition import Guardrail
from experiments.result import NOTE_CODES, TestResult

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class GuardrailResult:
    """The verdict on one guardrail for one treatment arm, with the one-sided bounds it rests on."""

    metric: str
    arm: str
    margin: float
    alpha: float
    status: str
    lift: float
    lower_bound: float | None
    upper_bound: float | None
    reason: str

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return dict(self.__dict__)


def evaluate_guardrail(guardrail: Guardrail, arm: str, result: TestResult, alpha: float) -> GuardrailResult:
    """Non-inferiority verdict from a test computed at 2 * alpha (its lift CI ends are the one-sided bounds)."""

    def verdict(status: str, reason: str, bounds: bool = True) -> GuardrailResult:
        lo, hi = result.lift_ci if bounds else (None, None)
        return GuardrailResult(guardrail.metric, arm, guardrail.margin, alpha, status, result.lift, lo, hi, reason)

    if result.error in NOTE_CODES:  # baseline_zero / lift_unbounded: a relative margin has no meaning
        return verdict(INCONCLUSIVE, f"relative lift undefined ({result.error.value})", bounds=False)
    if result.error is not None:
        return verdict(INCONCLUSIVE, f"no verdict on this data ({result.error.value})", bounds=False)
    lo, hi = result.lift_ci
    if lo > -guardrail.margin:
        return verdict(PASS, f"lift >= {lo:+.2%} (one-sided {1 - alpha:.0%}), above -{guardrail.margin:.2%}")
    if hi < 0:
        return verdict(FAIL, f"lift <= {hi:+.2%} (one-sided {1 - alpha:.0%}): worse, and a loss beyond the margin")
    return verdict(INCONCLUSIVE, f"lift in [{lo:+.2%}, {hi:+.2%}]: a loss beyond -{guardrail.margin:.2%} not excluded")
