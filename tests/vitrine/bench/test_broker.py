"""`vitrine bench broker` on a broker of its own (a few batches, not a measurement)."""

from __future__ import annotations

import pytest

from vitrine.bench.broker import run_broker_bench

pytestmark = pytest.mark.integration


def test_bench_broker_reads_back_every_batch_it_produced(tmp_path):
    r = run_broker_bench(tmp_path, storage="memory", steps=[20, 30])
    assert [s["batches"] for s in r["steps"]] == [20, 50]
    assert [s["worker_records"] for s in r["steps"]] == [20, 30]  # the group reads each step's new records
    assert all(s["produce_ms"] > 0 and s["fetch_last_ms"] is not None for s in r["steps"])
    assert r["storage"] == "memory" and r["retention"] is False and r["fetch_max_wait_ms"] == 100
    assert not (tmp_path / "bench-broker-memory").exists()  # its broker's state is removed


def test_bench_broker_with_retention_keeps_the_partition_at_about_one_step(tmp_path):
    r = run_broker_bench(tmp_path, storage="durable", steps=[10, 10])
    assert r["retention"] is True
    assert [(s["stored_when_read"], s["worker_records"]) for s in r["steps"]] == [(10, 10), (11, 10)]
    assert [(s["retention_deleted"], s["stored_after"]) for s in r["steps"]] == [(9, 1), (10, 1)]
    assert all(s["fetch_last_ms"] is not None for s in r["steps"])
    assert all(0 < s["retention_rested_s"] < s["retention_s"] for s in r["steps"])  # the pass is paced
