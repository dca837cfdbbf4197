"""Retrieval metrics on cases small enough to rank by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from vision.eval import raw_pixel_vectors, retrieval_scores


def _at_angles(degrees) -> np.ndarray:
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_hand_ranked_case():
    # Angles 0 (A), 50 (A), 30 (B), 90 (B). Ranked by angular distance, leaving each query out:
    #   q0 -> [B30, A50, B90]: first hit at 2 -> AP = (1/2)/1   q1 -> [B30, B90, A0]: AP = 1/3
    #   q2 -> [A50, A0, B90]: AP = 1/3                          q3 -> [A50, B30, A0]: AP = 1/2
    scores = retrieval_scores(_at_angles([0, 50, 30, 90]), ["A", "A", "B", "B"])
    overall = scores["overall"]
    assert overall["mAP@5"] == pytest.approx((0.5 + 1 / 3 + 1 / 3 + 0.5) / 4)
    assert overall["mAP@10"] == pytest.approx(overall["mAP@5"])  # only 3 candidates exist
    assert overall["R@1"] == 0.0 and overall["R@5"] == 1.0 and overall["queries"] == 4
    assert scores["per_class"]["A"]["mAP@5"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert scores["per_class"]["B"]["R@1"] == 0.0


def test_ap_normalises_by_the_reachable_number_of_relevant_items():
    # Three A's close together, three B's close together: every query finds its 2 partners first.
    vecs = _at_angles([0, 2, 4, 90, 92, 94])
    scores = retrieval_scores(vecs, list("AAABBB"))
    assert scores["overall"]["mAP@5"] == pytest.approx(1.0)
    assert scores["overall"]["R@1"] == 1.0
    # Swap two labels: q0 (A at 0) now ranks [2 (B), 4 (A), ...] -> AP@5 = (1/2)/2 + ... < 1.
    worse = retrieval_scores(vecs, list("ABABBB"))
    assert worse["overall"]["mAP@5"] < 1.0


def test_queries_without_a_partner_are_skipped():
    scores = retrieval_scores(_at_angles([0, 5, 90]), ["A", "A", "lonely"])
    assert scores["overall"]["queries"] == 2
    assert math.isnan(scores["per_class"]["lonely"]["R@1"])
    assert scores["per_class"]["lonely"]["queries"] == 0


def test_scale_does_not_matter():
    vecs = _at_angles([0, 50, 30, 90])
    a = retrieval_scores(vecs, list("AABB"))
    b = retrieval_scores(vecs * np.array([[3.0], [0.5], [10.0], [1.0]]), list("AABB"))
    assert a == b


def test_euclidean_hand_case():
    # 1-D points 0 (A), 1 (B), 3 (A), 10 (B): q0 -> [1 B, 3 A, 10 B]: AP = 1/2; q1 -> [0 A, 3 A, 10 B]:
    # AP = 1/3; q2 -> [1 B, 0 A, 10 B]: AP = 1/2; q3 -> [3 A, 1 B, 0 A]: AP = 1/2.
    scores = retrieval_scores(np.array([[0.0], [1.0], [3.0], [10.0]]), list("ABAB"), metric="euclidean")
    assert scores["overall"]["mAP@5"] == pytest.approx((0.5 + 1 / 3 + 0.5 + 0.5) / 4)
    assert scores["overall"]["R@1"] == 0.0


def test_blocked_top_k_matches_the_plain_computation():
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(300, 8))
    labels = rng.integers(0, 5, size=300)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    expected_r1 = float((labels[sims.argmax(axis=1)] == labels).mean())
    assert retrieval_scores(vecs, labels)["overall"]["R@1"] == pytest.approx(expected_r1)
    dist = ((vecs[:, None, :] - vecs[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    expected_r1 = float((labels[dist.argmin(axis=1)] == labels).mean())
    assert retrieval_scores(vecs, labels, metric="euclidean")["overall"]["R@1"] == pytest.approx(expected_r1)


def test_input_validation():
    with pytest.raises(ValueError):
        retrieval_scores(np.zeros((3, 2)), ["A", "B"])
    with pytest.raises(ValueError):
        retrieval_scores(np.zeros((1, 2)), ["A"])


def test_raw_pixel_vectors():
    out = raw_pixel_vectors([Image.new("RGB", (100, 50), (255, 255, 255)), Image.new("L", (28, 28), 0)])
    assert out.shape == (2, 32 * 32 * 3)
    assert out[0].min() == 1.0 and out[1].max() == 0.0


def test_euclidean_sees_brightness_where_cosine_cannot():
    # Flat grey images of three brightnesses: parallel vectors, so cosine ties; distances do not.
    vecs = np.array([[0.1, 0.1], [0.12, 0.12], [0.5, 0.5], [0.52, 0.52]])
    labels = ["dark", "dark", "light", "light"]
    assert retrieval_scores(vecs, labels, metric="euclidean")["overall"]["R@1"] == 1.0
    with pytest.raises(ValueError):
        retrieval_scores(vecs, labels, metric="manhattan")
