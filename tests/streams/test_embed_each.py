"""A tower over a chunk of crops: all at once, else each alone, so one crop it cannot take costs only its vector."""

from __future__ import annotations

import pytest

from streams.tower_images import embed_each


def tower(bad: set[str], calls: list[int]):
    def embed(crops):
        calls.append(len(crops))
        if bad & set(crops):
            raise ValueError(f"cannot take {sorted(bad & set(crops))}")
        return [f"v-{c}" for c in crops]

    return embed


def test_all_at_once_when_the_tower_takes_every_crop():
    calls = []
    assert embed_each(tower(set(), calls), ["a", "b", "c"]) == (["v-a", "v-b", "v-c"], [])
    assert calls == [3]


def test_a_crop_it_cannot_take_costs_only_its_own_vector():
    calls = []
    vectors, errors = embed_each(tower({"b"}, calls), ["a", "b", "c"])
    assert vectors == ["v-a", None, "v-c"] and calls == [3, 1, 1, 1]
    assert [str(e) for e in errors] == ["cannot take ['b']"]


@pytest.mark.parametrize(
    "embed, crops",
    [
        (lambda crops: [], ["a", "b"]),  # too few vectors, every time
        (lambda crops: 1 / 0, ["a"]),  # one crop: its failure is the chunk's
    ],
)
def test_a_tower_that_fails_on_every_crop_gives_no_vector(embed, crops):
    vectors, errors = embed_each(embed, crops)
    assert vectors == [None] * len(crops) and len(errors) == len(crops)
