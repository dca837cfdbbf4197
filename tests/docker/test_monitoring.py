"""docker/prometheus.yml and the Grafana dashboard: valid files whose queries name only metrics the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import recommender.metrics  # noqa: F401  (registers the API's metrics)
import streams.buffered_sender  # noqa: F401
import streams.metrics  # noqa: F401  (the worker's)
import streams.producer  # noqa: F401

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    """Every sample name the processes can expose (a labelled family has no samples until used: derive them)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("vitrine_"):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_the_scrape_config_targets_both_processes_at_their_metrics_paths():
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["vitrine-api"]["metrics_path"] == "/metrics"  # served in place, no redirect
    assert jobs["vitrine-worker"]["metrics_path"] == "/metrics/"
    assert all(job["static_configs"][0]["targets"] for job in jobs.values())


def test_every_metric_the_dashboard_queries_is_exported():
    dashboard = json.loads((DOCKER / "grafana" / "vitrine.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bvitrine_[a-z0-9_]+", expr)}
    assert len(exprs) == len(dashboard["panels"]) >= 10
    assert used - exported() == set()
    # The operator's questions of issue #18 each have a panel: error rate, lag, arms, models, fallbacks, the circuit.
    for needed in (
        'status=~"5.."',
        "vitrine_worker_consumer_lag",
        "vitrine_api_fallbacks_total",
        "by (model)",
        "vitrine_kafka_circuit_open",
    ):
        assert any(needed in e for e in exprs), needed


def test_a_metric_name_the_code_does_not_export_is_caught():
    assert "vitrine_api_request_seconds_count" in exported()
    assert "vitrine_api_requests_total" not in exported()  # a plausible typo the check must refuse
