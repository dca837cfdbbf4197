"""Deterministic, versioned assignment of users to arms.

Hash version 1: the first 8 bytes of SHA-256 over the UTF-8 string
"{seed}:{user_id}", read as a big-endian unsigned integer and divided by 2^64, give a
bucket in [0, 1). SHA-256 is in every language's standard library, so any service
(or a SQL query) can reproduce an assignment; the golden cases in
tests/experiments/assignment_golden.json freeze it. A new hash gets a new version
number; existing experiments keep theirs (stored in `experiments.hash_version`).

Arms get ranges as in GrowthBook's `getBucketRanges`: arm i covers
[c_i, c_i + traffic_fraction * w_i) where c_i is the sum of the earlier weights. Raising
the traffic fraction only extends ranges, so users already in an arm stay there;
buckets outside every range get the default arm with in_experiment=False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from experiments.definition import ExperimentDefinition

CURRENT_HASH_VERSION = 1


def _hash_v1(seed: str, user_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


HASHES: dict[int, Callable[[str, str], float]] = {1: _hash_v1}


@dataclass(frozen=True)
class Assignment:
    """The arm one user gets; in_experiment=False means not counted in the analysis."""

    experiment: str
    user_id: str
    arm: str
    in_experiment: bool
    bucket: float
    hash_version: int


def hash_bucket(seed: str, user_id: str, version: int = CURRENT_HASH_VERSION) -> float:
    """The user's bucket in [0, 1) for this seed under hash `version`."""
    try:
        fn = HASHES[version]
    except KeyError:
        raise ValueError(f"unknown hash version {version!r}; known: {sorted(HASHES)}") from None
    return fn(seed, str(user_id))


def bucket_ranges(weights: tuple[float, ...], traffic_fraction: float) -> tuple[tuple[float, float], ...]:
    """[start, end) of each arm in [0, 1): cumulative weights, each scaled by the traffic fraction."""
    ranges, start = [], 0.0
    for w in weights:
        ranges.append((start, start + traffic_fraction * w))
        start += w
    return tuple(ranges)


def choose_arm(bucket: float, ranges: tuple[tuple[float, float], ...]) -> int | None:
    """The index of the range holding `bucket`, or None when it falls outside the traffic."""
    for i, (lo, hi) in enumerate(ranges):
        if lo <= bucket < hi:
            return i
    return None


def assign(definition: ExperimentDefinition, user_id: str, default_arm: str) -> Assignment:
    """Assign `user_id`: an arm of the experiment, or `default_arm` (not counted) outside the traffic."""
    bucket = hash_bucket(definition.seed, user_id, definition.hash_version)
    idx = choose_arm(bucket, bucket_ranges(definition.weights, definition.traffic_fraction))
    if idx is None:
        return Assignment(definition.key, str(user_id), default_arm, False, bucket, definition.hash_version)
    return Assignment(definition.key, str(user_id), definition.arms[idx].name, True, bucket, definition.hash_version)


def assign_sticky(
    definition: ExperimentDefinition, user_id: str, default_arm: str, stored_arm: str | None
) -> Assignment:
    """Assignment that honours a stored first assignment (sticky across weight changes).

    The caller stores the first in-experiment assignment (db `assignments` table) and
    passes it back; it wins as long as that arm still exists in the experiment.
    """
    if stored_arm is not None and stored_arm in definition.arm_names:
        bucket = hash_bucket(definition.seed, user_id, definition.hash_version)
        return Assignment(definition.key, str(user_id), stored_arm, True, bucket, definition.hash_version)
    return assign(definition, user_id, default_arm)
