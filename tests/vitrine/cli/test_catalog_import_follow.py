"""`vitrine catalog import` after the produce: receipts ("events in"), following the indexing, --json, exit codes."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from db.tenants import create_tenant
from tests.helpers import settings_env
from tests.recommender.helpers import put_product
from vitrine.cli import app

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def feed(settings, sessions, monkeypatch, tmp_path):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    with sessions.begin() as session:
        create_tenant(session, "Acme", "acme")
    path = tmp_path / "feed.jsonl"
    lines = [{"id": f"p{i}", "version": 1, "title": f"P{i}", "image_urls": []} for i in range(3)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def import_json(feed, *options):
    result = runner.invoke(app, ["catalog", "import", str(feed), "--tenant", "acme", "--json", *options])
    return result, json.loads(result.stdout)


def test_an_import_counts_as_events_in_and_reports_json(feed, sessions):
    result, summary = import_json(feed, "--no-wait")
    assert result.exit_code == 0, result.output
    assert summary["good"] == 3 and summary["bad"] == 0 and summary["indexed"] is None and not summary["stalled"]
    # The pipeline page's "events in" (dashboards/data.py events_in) counted 0 after an import: it counts receipts.
    with sessions() as s:
        acked = s.scalar(text("SELECT count(*) FROM event_receipts WHERE tenant_id = 'acme' AND acked_at IS NOT NULL"))
    assert acked == 3
    again, _ = import_json(feed, "--no-wait")  # the same events again: still 3, not 6
    with sessions() as s:
        assert s.scalar(text("SELECT count(*) FROM event_receipts WHERE tenant_id = 'acme'")) == 3
    assert again.exit_code == 0


def test_an_import_follows_the_indexing_to_the_end(feed, sessions):
    def worker():  # stands in for `vitrine worker`: stores the products as its indexing step does
        time.sleep(1.5)
        with sessions.begin() as s:
            for i in range(3):
                put_product(s, "acme", f"p{i}", None)

    thread = threading.Thread(target=worker)
    thread.start()
    result, summary = import_json(feed, "--stall-timeout", "30")
    thread.join()
    assert result.exit_code == 0, result.output
    assert summary["indexed"] == 3 and 1.0 < summary["index_elapsed_s"] < 30
    assert "indexing" in result.stderr  # the progress bar


def test_an_import_nobody_indexes_stalls_with_exit_1(feed):
    result, summary = import_json(feed, "--stall-timeout", "1")
    assert result.exit_code == 1
    assert summary["stalled"] and summary["indexed"] == 0
    assert "indexing stalled" in result.stderr


def test_usage_errors_exit_2_and_help_shows_no_bool_metavar():
    assert runner.invoke(app, ["catalog", "import"]).exit_code == 2  # missing argument
    assert runner.invoke(app, ["catalog", "import", "x.jsonl", "--tenant", "a", "--bogus"]).exit_code == 2
    help_text = runner.invoke(app, ["catalog", "import", "--help"], env={"COLUMNS": "160"}).stdout
    assert "--no-wait" in help_text and "--dry-run" in help_text and "<bool>" not in help_text
