"""SRM (chi-square vs weights) and multiple-testing adjustments: values by hand."""

from __future__ import annotations

import pytest

from experiments.multiple import adjust_p_values
from experiments.result import ErrorCode
from experiments.srm import check_srm


def test_srm_by_hand():
    # expected 1050/1050; chi2 = 2 * 50^2 / 1050 = 4.7619; p = P(chi2_1 > 4.7619) = 0.029096
    r = check_srm([1000, 1100], [0.5, 0.5])
    assert r.chi2 == pytest.approx(4.7619048, abs=1e-7) and r.p_value == pytest.approx(0.0290963, abs=1e-7)
    assert r.status == "ok" and not r.mismatch


def test_srm_flags_below_0_001():
    # chi2 = 2 * 200^2 / 5200 = 15.3846, p = 8.77e-5 < 0.001
    r = check_srm([5000, 5400], [0.5, 0.5])
    assert r.p_value == pytest.approx(8.77e-5, rel=1e-3) and r.mismatch and r.status == "mismatch"


def test_srm_weights_need_not_be_normalised_and_zero_weight_arms():
    assert check_srm([100, 300], [1, 3]).p_value == pytest.approx(1.0)
    assert check_srm([100, 100, 5], [0.5, 0.5, 0.0]).mismatch  # users in a 0-weight arm
    assert check_srm([100, 100, 0], [0.5, 0.5, 0.0]).p_value == pytest.approx(1.0)


def test_srm_degenerate():
    assert check_srm([0, 0], [0.5, 0.5]).error == ErrorCode.ZERO_USERS
    assert check_srm([1, 2], [1.0]).error == ErrorCode.INVALID_INPUT
    assert not check_srm([0, 0], [0.5, 0.5]).mismatch


def test_holm_and_bh_by_hand():
    # Holm: sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06.
    holm = adjust_p_values([0.01, 0.04, 0.03], "holm")
    assert holm.adjusted == pytest.approx((0.03, 0.06, 0.06)) and holm.reject == (True, False, False)
    # BH: 0.01*3/1 = 0.03, min(0.03*3/2, 0.04) = 0.04, 0.04*3/3 = 0.04.
    bh = adjust_p_values([0.01, 0.04, 0.03], "fdr_bh")
    assert bh.adjusted == pytest.approx((0.03, 0.04, 0.04)) and bh.reject == (True, True, True)
    assert "family-wise" in holm.label and "false discovery" in bh.label


def test_adjust_rejects_bad_input_loudly():
    with pytest.raises(ValueError, match="unknown correction 'bonferonni'"):
        adjust_p_values([0.1], "bonferonni")
    with pytest.raises(ValueError, match="finite and in"):
        adjust_p_values([float("nan")])
    assert adjust_p_values([]).adjusted == ()


def test_holm_agrees_with_statsmodels_on_random_families():
    """The hand-written Holm (statsmodels' runs gc.collect() per call) gives statsmodels' answers exactly."""
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(7)
    for _ in range(200):  # statsmodels' side collects garbage on every call: slow in a loaded test process
        n = int(rng.integers(1, 12))
        ps = rng.uniform(0, 0.2, n) ** rng.uniform(0.5, 3)
        ps[rng.random(n) < 0.2] = ps[0]  # ties
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        ours = adjust_p_values(ps.tolist(), "holm", alpha)
        reject, adjusted, _, _ = multipletests(ps, alpha=alpha, method="holm")
        assert list(ours.reject) == reject.tolist()
        assert np.array_equal(np.asarray(ours.adjusted), adjusted)
