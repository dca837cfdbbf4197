"""The results table's HTML on hand-made reports: green / red classes, result codes shown as what they mean,
one format for numbers (no 'None', 'nan'; 'p < 0.0001'; one precision for percentages; currency on money)."""

from __future__ import annotations

import re

from dashboards.results_table import arms_html, guardrails_html, outcome, results_html, served_text
from dashboards.ui import CODE_MEANINGS, money, p_text, p_value, pct, verdict


def _row(arm: str, **kw) -> dict:
    base = {
        "arm": arm,
        "is_control": False,
        "n": 1000,
        "value": 0.12,
        "ci": [0.10, 0.14],
        "effect": 0.02,
        "lift": 0.2,
        "lift_ci": [0.05, 0.35],
        "p_value": 0.004,
        "p_value_adjusted": 0.004,
        "significant": True,
        "error": None,
        "decisive": True,
        "bayesian": {"relative": True, "expected": 0.2, "ci": [0.05, 0.35], "chance_to_win": 0.998,
                     "expected_loss": 0.0001, "control_loss": 0.2, "error": None},
        "power": {"error": None, "n_control": 1000, "required_n_control": 500, "target_relative_mde": 0.05,
                  "too_early": False},
    }  # fmt: skip
    return base | kw


CONTROL = {"arm": "baseline", "is_control": True, "n": 1000, "value": 0.10, "ci": [0.08, 0.12]}


def _report(rows: list[dict], name: str = "ctr") -> dict:
    return {
        "alpha": 0.05,
        "control": "baseline",
        "arms": [{"name": "baseline", "weight": 0.5, "users": 1000}, {"name": "visual", "weight": 0.5, "users": 1000}],
        "srm": {"status": "ok", "mismatch": False, "p_value": 0.5},
        "correction": {"method": "holm"},
        "guardrails": [],
        "metrics": [{"name": name, "primary": True, "role": "primary", "cuped": False, "capping": None,
                     "rows": [CONTROL, *rows]}],
    }  # fmt: skip


def _classes(html: str) -> list[str]:
    return re.findall(r'<tr class="(vt-[a-z]+)" data-metric', html)


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html, flags=re.S))


def test_significant_win_is_green_loss_is_red_flat_is_neither():
    loss = _row("worse", effect=-0.02, lift=-0.2, lift_ci=[-0.35, -0.05])
    flat = _row("same", significant=False, p_value_adjusted=0.4, lift_ci=[-0.1, 0.5])
    html = results_html(_report([_row("visual"), loss, flat]))
    assert _classes(html) == ["vt-control", "vt-win", "vt-loss", "vt-flat"]
    assert ">win<" in html and ">loss<" in html and ">not significant<" in html
    assert "99.8 %" in _text(html)  # chance to win, one decimal like every percentage


def test_result_codes_are_shown_as_what_they_mean():
    rows = [
        _row("a", error="too_small", decisive=False, significant=False),
        _row("b", error="zero_variance", decisive=False, significant=False, lift_ci=[0.2, 0.2]),
        _row("c", error="baseline_zero", lift=0.0, lift_ci=[0.0, 0.0]),  # a note: the difference decides
        _row("d", error="invalid_input", decisive=False, significant=False, lift=0.0, lift_ci=[0.0, 0.0]),
        _row("e", significant=False, power={"error": None, "too_early": True, "n_control": 10,
                                             "required_n_control": 9000, "target_relative_mde": 0.05}),
    ]  # fmt: skip
    html = results_html(_report(rows))
    text = _text(html)
    for code in ("too_small", "zero_variance", "baseline_zero", "invalid_input", "too_early"):
        assert CODE_MEANINGS[code].split(":")[0] in text, code
        assert code not in text  # the meaning, never the raw code
    assert "no result yet" not in text
    assert _classes(html) == ["vt-control", "vt-noverdict", "vt-noverdict", "vt-win", "vt-noverdict", "vt-flat"]
    # an undefined lift is a dash, not a '+0.0 %' that reads like "no change"
    c_row = re.search(r'data-arm="c">(.*?)</tr>', html).group(1)
    assert "+0.0 %" not in c_row


def test_verdict_words_codes_as_meanings():
    report = _report([_row("visual", error="too_small", decisive=False, significant=False)])
    text = verdict(report)
    assert "no result yet" not in text and "too_small" not in text
    assert CODE_MEANINGS["too_small"] in text


def test_numbers_have_one_format():
    assert pct(0.12345) == "+12.3 %" and pct(0.5, signed=False) == "50.0 %" and pct(None) == "–"
    assert p_value(0.00001) == "< 0.0001" and p_text(0.00001) == "p < 0.0001" and p_text(0.01234) == "p = 0.0123"
    assert money(12.5, "EUR") == "€12.50" and money(1234.5, "SEK") == "1,234.50 SEK" and money(None) == "–"
    html = results_html(_report([_row("visual", value=2.5, ci=[2.0, 3.0])], name="revenue_per_user"), "EUR")
    assert "€2.50" in _text(html) and "[€2.00, €3.00]" in _text(html)


def test_nothing_shows_none_or_nan():
    # every optional field missing or None at once: dashes, never 'None'
    empty = _row("visual", lift=None, lift_ci=[None, None], p_value_adjusted=None, bayesian=None, power=None)
    report = _report([empty]) | {
        "guardrails": [{"metric": "conversion", "arm": "visual", "margin": 0.02, "status": "inconclusive",
                        "lift": None, "lower_bound": None, "upper_bound": None, "reason": "no verdict"}]
    }  # fmt: skip
    html = results_html(report) + guardrails_html(report) + arms_html(report["arms"], {}, {})
    assert not re.search(r"\b(None|nan|NaN)\b", _text(html))


def test_guardrail_rows_and_served_models():
    report = _report([_row("visual")]) | {
        "guardrails": [{"metric": "conversion", "arm": "visual", "margin": 0.02, "status": "fail", "lift": -0.1,
                        "lower_bound": -0.15, "upper_bound": -0.05, "reason": "worse"}]
    }  # fmt: skip
    html = guardrails_html(report)
    assert 'class="vt-fail"' in html and "−2.0 %" in html and "[-15.0 %, -5.0 %]" in html
    assert served_text({"effnet": 97, None: 3}) == "effnet (97.0 %), no model (baseline or fallback) (3.0 %)"
    assert served_text({}) == "–"
    # tenant-supplied names are escaped
    assert "&lt;script&gt;" in arms_html([{"name": "<script>", "weight": 1.0}], {}, {})


def test_outcome_of_a_control_row():
    assert outcome(CONTROL) == "vt-control"
