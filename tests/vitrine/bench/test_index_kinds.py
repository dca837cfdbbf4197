"""Parts of `vitrine bench serve --index`: goals, table, labelled vectors, the head's arrays, bad options, the wait for
a worker's index build."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import vitrine.cli.bench  # noqa: F401  registers the bench commands
from vision.trained import write_artefact
from vitrine.bench.index_kinds import _wait_for_concurrent_build, head_arrays, index_figures
from vitrine.bench.serve import clustered_vectors
from vitrine.cli.app import app
from vitrine.cli.bench import print_index_table


def level(users: int, p99: float | None, qps: float) -> dict:
    return {
        "users": users,
        "requests": 100,
        "errors": 0,
        "qps": qps,
        "p50_ms": 1.0,
        "p95_ms": 2.0,
        "p99_ms": p99,
        "max_ms": 9.0,
    }


def kind_result(recall_all: float, recall_cat: float, p99_top: float | None, scans: int) -> dict:
    recall = {
        "all": {"requests": 10, "recall_at_10": recall_all, "min": 0.5, "short_answers": 0},
        "same_category": {"requests": 10, "recall_at_10": recall_cat, "min": 0.5, "short_answers": 0},
    }
    return {
        "raw_query": {
            "requests": 5,
            "qps": 100.0,
            "p50_ms": 1,
            "p95_ms": 2,
            "p99_ms": 3,
            "max_ms": 4,
            "strategies": {},
        },
        "recall_index": {name: {**x, "exact_redos": 0} for name, x in recall.items()},
        "recall": recall,
        "levels": {
            "think": [
                level(1, 5.0, 1.0),
                {**level(100, p99_top, 99.0), "tail": {"over_50ms": 7, "seconds_over_50ms": 3}},
            ],
            "max_throughput": [level(1, 4.0, 250.0), level(100, 300.0, 310.5)],
        },
        "api_index_scans": scans,
    }


def figures() -> dict:
    settings = {
        "products": 1000,
        "kinds": ["halfvec", "binary"],
        "model": "bench-triplet@abc",
        "dim": 128,
        "bits": 64,
        "backbone": "efficientnet-lite0@x",
        "backbone_dim": 1280,
        "centres": 1000,
        "categories": 16,
        "seed": 0,
        "levels": [1, 100],
        "think_s": 1.0,
        "duration_s": 12.0,
        "limit": 10,
        "exact_s_per_query": 0.05,
        "server": {"shared_buffers": "2GB", "uvicorn": "uvloop+httptools", "hnsw_ef_search": 64},
        "ivf": {"probes": 10, "rerank_factor_filtered": {"binary": 25, "codes": 25}},
    }
    head = {"recipe": {"sample": 10000, "epochs": 3}, "train_s": 61.2, "losses": [0.2, 0.1], "reused": False}
    builds = {
        "halfvec": {"index": "ix_a", "build_s": 10.0, "size_mb": 80.0},
        "binary": {
            "index": "ix_b",
            "build_s": 5.0,
            "size_mb": 40.0,
            "entries": 1000,
            "method": "ivfflat",
            "lists": 31,
            "probes": 2,
            "rerank_factor": 12,
            "tuning": {
                "probes": 2,
                "factor": 12,
                "recall": 0.97,
                "target": 0.97,
                "sample": 200,
                "entries": 1000,
                "lists": 31,
                "met": True,
                "seconds": 4.5,
            },
        },
    }
    return index_figures(
        {"cpu": "test"},
        [1.0, 1.0, 1.0],
        [2.0, 1.0, 1.0],
        {"halfvec": kind_result(0.99, 0.97, 30.0, 20), "binary": kind_result(0.99, 0.94, None, 0)},
        builds,
        {"reused": True, "rows": 1000},
        head,
        settings=settings,
    )


def test_goals_are_judged_per_kind():
    g = figures()["goals"]
    assert g["per_kind"]["halfvec"] == {
        "recall_all": 0.99,
        "recall_same_category": 0.97,
        "recall_met": True,
        "p99_ms_at_top_users": 30.0,
        "p99_met": True,
        "served_by_its_index": True,
    }
    # 0.94 with a category misses 0.95; no successful request at 100 users is a miss, not a pass.
    binary = g["per_kind"]["binary"]
    assert (binary["recall_met"], binary["p99_met"], binary["served_by_its_index"]) == (False, False, False)
    # 80 MB / 40 MB: 2x, short of the 8x goal.
    assert (g["halfvec_over_binary_size"], g["binary_8x_smaller"]) == (2.0, False)


def test_the_most_requests_per_second_is_the_best_max_throughput_level():
    assert figures()["kinds"]["halfvec"]["max_qps"] == 310.5


def test_the_table_names_each_kind_its_sizes_and_the_missed_goals(capsys):
    print_index_table(figures())
    out = capsys.readouterr().out
    assert "binary         5.0      40.0  IVFFlat, 31 lists, 1000 entries" in out
    assert (
        "IVFFlat binary: without a category 2 probes x 12 Hamming candidates (x 40), tuned on 200 products in 4.5 s, "
        "recall@10 0.97 (target 0.97); with one 10 probes x 25" in out
    )
    assert "goal binary: recall@10 >= 0.95 with and without category: 0.99 / 0.94 -> MISSED" in out
    assert "goal binary index >= 8x smaller than halfvec: 2.0x -> MISSED" in out
    # The 100-shopper level says how its slow requests spread over its seconds; a level recorded without it, "-".
    assert "binary   think 1 s          100    100    99.0      1.0      2.0" in out
    lines = [x for x in out.splitlines() if x.startswith("binary   think 1 s")]
    assert [x.split()[-2:] for x in lines] == [["0", "-"], ["7", "(3)"]]


def test_labelled_vectors_are_the_catalogs_own():
    plain = np.concatenate([x for _, x, _ in clustered_vectors(6000, 32, seed=1)])
    chunks = list(clustered_vectors(6000, 32, seed=1, clusters=True))
    labelled = np.concatenate([x for _, x, _, _ in chunks])
    clusters = np.concatenate([c for *_, c in chunks])
    assert np.array_equal(plain, labelled) and clusters.shape == (6000,)
    # Same cluster, far more similar than across clusters.
    same = clusters[:, None] == clusters[None, :]
    sims = labelled @ labelled.T
    assert sims[same & ~np.eye(6000, dtype=bool)].mean() > 0.5 > sims[~same].mean()


def test_head_arrays_come_from_the_artefact_without_its_backbone(tmp_path):
    head = {
        k: np.full(shape, i, dtype=np.float32)
        for i, (k, shape) in enumerate(
            [("w1", (4, 3)), ("b1", (3,)), ("w2", (3, 2)), ("b2", (2,)), ("w3", (2, 8)), ("b3", (8,))]
        )
    }
    card = {
        "name": "t",
        "method": "triplet",
        "dim": 2,
        "input": {"size": 224, "preprocessing": "imagenet"},
        "backbone": {"name": "efficientnet-lite0", "model_key": "absent@0"},  # never loaded here
    }
    got = head_arrays(write_artefact(tmp_path, card, head=head))
    assert sorted(got) == sorted(head) and all(np.array_equal(got[k], head[k]) for k in head)


def test_bad_index_options_are_refused_before_any_work():
    runner = CliRunner()
    for args, message in (
        (["--index", "halfvec,pq"], "--index takes halfvec, binary, codes"),
        (["--index", ","], "--index takes"),
        (["--index", "binary", "--bits", "16"], "--bits must be 32, 48 or 64"),
    ):
        result = runner.invoke(app, ["bench", "serve", *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)


def test_the_server_line_names_the_broker_and_the_exposure_linger_when_recorded(capsys):
    """Exposures go through the broker on the same cores: its storage is part of what the figures measured."""
    result = figures()
    print_index_table(result)
    assert "broker" not in capsys.readouterr().out.split("note:")[0]  # older JSON: nothing invented
    result["settings"]["server"].update(broker_storage="durable", exposure_linger_s=1.0)
    print_index_table(result)
    assert "broker durable, exposures linger 1 s" in capsys.readouterr().out


@pytest.mark.integration
def test_a_build_under_way_is_waited_for(sessions, db_engine):
    # The bench's first system's worker may be building the index of its own kind when the bench builds each kind:
    # an INVALID index (a CREATE INDEX CONCURRENTLY under way) is waited for, a valid or missing one is not.
    with sessions.begin() as s:
        s.execute(text("CREATE TABLE side (v int)"))
        s.execute(text("CREATE INDEX ix_side ON side (v)"))
        s.execute(text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_side'::regclass"))
    system = SimpleNamespace(engine=db_engine)
    flipped = threading.Timer(
        1.0,
        lambda: _exec(db_engine, "UPDATE pg_index SET indisvalid = true WHERE indexrelid = 'ix_side'::regclass"),
    )
    t0 = time.monotonic()
    flipped.start()
    _wait_for_concurrent_build(system, "ix_side")
    assert time.monotonic() - t0 >= 1.0
    _wait_for_concurrent_build(system, "ix_missing")  # returns at once
    _exec(db_engine, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_side'::regclass")
    with pytest.raises(RuntimeError, match="still INVALID"):
        _wait_for_concurrent_build(system, "ix_side", timeout_s=0.5)


def _exec(engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))
