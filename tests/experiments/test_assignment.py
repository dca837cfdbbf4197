"""Assignment: frozen golden cases, split vs weights over 100k users, loud validation."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from experiments.assignment import assign, assign_sticky, bucket_ranges, choose_arm, hash_bucket
from experiments.definition import Arm, ExperimentDefinition
from experiments.srm import check_srm

GOLDEN = json.loads((Path(__file__).parent / "assignment_golden.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", GOLDEN["buckets"], ids=lambda c: f"{c['seed']}|{c['user_id'][:12]}")
def test_golden_buckets(case):
    assert hash_bucket(case["seed"], case["user_id"], case["hash_version"]) == case["bucket"]


@pytest.mark.parametrize("case", GOLDEN["assignments"], ids=lambda c: f"{c['key']}|{c['user_id']}")
def test_golden_assignments(case):
    definition = ExperimentDefinition.from_row(
        case["key"],
        case["arms"],
        salt=case["salt"],
        traffic_fraction=case["traffic_fraction"],
        hash_version=case["hash_version"],
    )
    a = assign(definition, case["user_id"], case["default_arm"])
    assert (a.arm, a.in_experiment, a.bucket) == (
        case["expected"]["arm"],
        case["expected"]["in_experiment"],
        case["expected"]["bucket"],
    )


def test_hash_v1_is_plain_sha256():
    # The documented recipe, spelled out independently: first 8 bytes of sha256("seed:user").
    digest = hashlib.sha256(b"exp-1:user-1").hexdigest()[:16]
    assert hash_bucket("exp-1", "user-1") == int(digest, 16) / 2**64  # = 0.5797495389174229


def test_split_over_100k_users_matches_weights():
    definition = ExperimentDefinition(
        "split", (Arm("baseline", 0.2), Arm("visual", 0.3), Arm("hybrid", 0.5)), salt="chi2"
    )
    counts = Counter(assign(definition, f"u{i}", "baseline").arm for i in range(100_000))
    srm = check_srm([counts["baseline"], counts["visual"], counts["hybrid"]], [0.2, 0.3, 0.5])
    assert srm.p_value > 0.01, srm  # a correct hash fails this 1 % of the time; the seed is fixed


def test_traffic_fraction_excludes_the_rest_and_keeps_proportions():
    definition = ExperimentDefinition("tf", (Arm("baseline", 0.5), Arm("visual", 0.5)), salt="tf", traffic_fraction=0.2)
    results = [assign(definition, f"u{i}", "default") for i in range(50_000)]
    inside = [r for r in results if r.in_experiment]
    assert all(r.arm == "default" for r in results if not r.in_experiment)
    assert abs(len(inside) / len(results) - 0.2) < 0.01  # binomial sd = 0.0018
    c = Counter(r.arm for r in inside)
    assert check_srm([c["baseline"], c["visual"]], [0.5, 0.5]).p_value > 0.01


def test_raising_traffic_keeps_users_in_their_arm():
    arms = (Arm("baseline", 0.5), Arm("visual", 0.5))
    low = ExperimentDefinition("grow", arms, salt="g", traffic_fraction=0.3)
    high = ExperimentDefinition("grow", arms, salt="g", traffic_fraction=0.9)
    for i in range(5000):
        a = assign(low, f"u{i}", "default")
        if a.in_experiment:
            assert assign(high, f"u{i}", "default").arm == a.arm


def test_bucket_ranges_like_growthbook():
    assert bucket_ranges((0.5, 0.5), 0.4) == ((0.0, 0.2), (0.5, 0.7))
    assert choose_arm(0.25, ((0.0, 0.2), (0.5, 0.7))) is None
    assert choose_arm(0.5, ((0.0, 0.2), (0.5, 0.7))) == 1


def test_sticky_assignment_wins_while_the_arm_exists():
    definition = ExperimentDefinition("st", (Arm("baseline", 0.5), Arm("visual", 0.5)), salt="st")
    fresh = assign(definition, "u1", "baseline")
    other = "visual" if fresh.arm == "baseline" else "baseline"
    assert assign_sticky(definition, "u1", "baseline", other).arm == other
    assert assign_sticky(definition, "u1", "baseline", "removed-arm").arm == fresh.arm
    assert assign_sticky(definition, "u1", "baseline", None) == fresh


@pytest.mark.parametrize(
    "arms, tf, message",
    [
        ((Arm("a", 0.5), Arm("b", 0.6)), 1.0, "arm weights must sum to 1 (within 1e-06), got 1.1"),
        ((Arm("a", 1.0),), 1.0, "an experiment needs at least 2 arms, got 1"),
        ((Arm("a", -0.5), Arm("b", 1.5)), 1.0, "arm 'a': weight must be >= 0, got -0.5"),
        ((Arm("a", 0.5), Arm("a", 0.5)), 1.0, "arm names must be unique; duplicated: a"),
        ((Arm("a", float("nan")), Arm("b", 0.5)), 1.0, "arm 'a': weight must be a finite number, got nan"),
        ((Arm("a", "0.5"), Arm("b", 0.5)), 1.0, "arm 'a': weight must be a finite number, got '0.5'"),
        ((Arm("", 0.5), Arm("b", 0.5)), 1.0, "arm names must be non-empty strings"),
        ((Arm("a", 0.5), Arm("b", 0.5)), 0.0, "traffic_fraction must be in (0, 1], got 0.0"),
        ((Arm("a", 0.5), Arm("b", 0.5)), 1.5, "traffic_fraction must be in (0, 1], got 1.5"),
    ],
)
def test_invalid_definitions_are_rejected_loudly(arms, tf, message):
    with pytest.raises(ValueError) as exc:
        ExperimentDefinition("bad", arms, traffic_fraction=tf)
    assert message in str(exc.value)


def test_weights_summing_to_one_in_floating_point_are_accepted():
    ExperimentDefinition("ok", (Arm("a", 0.1), Arm("b", 0.2), Arm("c", 0.7)))  # 1.0000000000000002


def test_from_row_rejects_malformed_arms_and_unknown_hash_version():
    with pytest.raises(ValueError, match="arm #1 must be an object with 'name' and 'weight'"):
        ExperimentDefinition.from_row("bad", [{"name": "a", "weight": 0.5}, {"name": "b"}])
    with pytest.raises(ValueError, match="unknown hash version 9"):
        hash_bucket("s", "u", 9)
    with pytest.raises(ValueError, match="unknown hash_version 2"):
        ExperimentDefinition("v", (Arm("a", 0.5), Arm("b", 0.5)), hash_version=2)
