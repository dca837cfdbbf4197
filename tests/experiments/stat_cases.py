"""The properties every two-arm test of experiments/ shares, written once.

A test module subclasses `TwoArmTestCases` with its own `Test...` class: `make` builds the test under
test from a control and a treatment, the class attributes are that module's inputs. Reference values
(statsmodels runs, textbook examples) stay in the module, next to the test they pin.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import pytest

from experiments.result import ErrorCode, TestResult

Arms = tuple[Any, Any]  # (control, treatment): the sufficient statistics `make` takes


class TwoArmTestCases:
    """`p_value`, `confidence_interval` and `compute_result` of one test class, on the subclass's inputs.

    Not collected itself (no `Test` prefix); every subclass is, with these tests and its own.
    """

    ALPHA: ClassVar[float] = 0.05
    METHOD: ClassVar[str]  # compute_result().method, spelled out
    SIGNIFICANT: ClassVar[Arms]  # a clear effect: p < ALPHA
    NOT_SIGNIFICANT: ClassVar[Arms]  # p >= ALPHA
    ZERO_BASELINE: ClassVar[Arms]  # control value 0 and a clear difference: lift undefined, p still valid
    DEGENERATE: ClassVar[tuple[tuple[Any, Any, ErrorCode], ...]]  # (control, treatment, expected error)
    CERTAIN_DIFFERENCE: ClassVar[Arms | None] = None  # both arms constant, different values (zero variance)

    def make(self, control: Any, treatment: Any) -> Any:
        """The test under test on these arms, at level ALPHA."""
        raise NotImplementedError

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        # pytest calls this hook on the collected subclass, so each module's own inputs parametrize the tests.
        if "significant" in metafunc.fixturenames:
            metafunc.parametrize(
                "arms, significant",
                [(self.SIGNIFICANT, True), (self.NOT_SIGNIFICANT, False)],
                ids=["significant", "not-significant"],
            )
        elif "arms" in metafunc.fixturenames:
            metafunc.parametrize(
                "arms", [self.SIGNIFICANT, self.NOT_SIGNIFICANT], ids=["significant", "not-significant"]
            )
        if "degenerate" in metafunc.fixturenames:
            metafunc.parametrize("degenerate", self.DEGENERATE, ids=[code.value for *_, code in self.DEGENERATE])

    def test_p_value_agrees_with_the_ci(self, arms: Arms, significant: bool):
        # The difference CI and the lift CI at 1 - ALPHA exclude 0 exactly when p < ALPHA (one method).
        r = self.make(*arms).compute_result()
        lo, hi = r.effect_ci
        assert r.decisive, r.error
        assert (r.p_value < self.ALPHA) is significant, r.p_value
        assert (not lo <= 0.0 <= hi) is significant, r.effect_ci
        assert (not r.lift_ci[0] <= 0.0 <= r.lift_ci[1]) is significant, r.lift_ci

    def test_cis_contain_their_estimates(self, arms: Arms):
        r = self.make(*arms).compute_result()
        assert r.effect_ci[0] < r.effect < r.effect_ci[1], (r.effect, r.effect_ci)
        assert r.lift_ci[0] < r.lift < r.lift_ci[1], (r.lift, r.lift_ci)

    def test_compute_result_shape(self):
        test = self.make(*self.SIGNIFICANT)
        r = test.compute_result()
        assert isinstance(r, TestResult) and r.ok and r.error is None
        assert r.method == self.METHOD
        assert (test.p_value, test.confidence_interval) == (r.p_value, r.effect_ci)
        assert r.effect == r.treatment_value - r.control_value
        assert r.lift == pytest.approx(r.treatment_value / r.control_value - 1.0, rel=1e-12)
        assert math.copysign(1.0, r.statistic) == math.copysign(1.0, r.effect)
        json.dumps(r.to_dict(), allow_nan=False)  # what reports and snapshots store

    def test_degenerate_input_gives_a_neutral_result(self, degenerate: tuple[Any, Any, ErrorCode]):
        control, treatment, code = degenerate
        r = self.make(control, treatment).compute_result()
        assert r.error == code and not r.ok
        assert (r.p_value, r.statistic, r.effect, r.effect_ci, r.lift, r.lift_ci) == (
            1.0,
            0.0,
            0.0,
            (0.0, 0.0),
            0.0,
            (0.0, 0.0),
        )
        assert math.isfinite(r.control_value) and math.isfinite(r.treatment_value)
        fresh = self.make(control, treatment)  # the properties alone, before any compute_result
        assert (fresh.p_value, fresh.confidence_interval) == (1.0, (0.0, 0.0))

    def test_zero_baseline_keeps_the_difference_but_not_the_lift(self):
        # Defect 5 of issue #17: a zero control read "not significant" at p = 2e-10. The lift is undefined
        # (an explicit code that is only a note), the difference and p still decide.
        r = self.make(*self.ZERO_BASELINE).compute_result()
        assert r.error == ErrorCode.BASELINE_ZERO and not r.ok and r.decisive and r.control_value == 0.0
        assert r.effect == r.treatment_value > 0 and r.p_value < self.ALPHA
        assert r.effect_ci[0] < r.effect < r.effect_ci[1] and r.effect_ci[0] > 0
        assert (r.lift, r.lift_ci) == (0.0, (0.0, 0.0))

    def test_zero_variance_keeps_a_real_difference(self):
        # Defect 5 of issue #17: constant arms with different values reported effect 0 and p = 1.
        if self.CERTAIN_DIFFERENCE is None:
            pytest.skip("no constant-arm case for this test")
        r = self.make(*self.CERTAIN_DIFFERENCE).compute_result()
        assert r.error == ErrorCode.ZERO_VARIANCE and not r.decisive
        assert r.effect == r.treatment_value - r.control_value != 0.0
        assert r.p_value == 0.0 and r.effect_ci == (r.effect, r.effect)
        assert r.lift == pytest.approx(r.treatment_value / r.control_value - 1.0) and r.lift_ci == (r.lift, r.lift)
