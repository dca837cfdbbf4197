"""`vitrine model make-dataset same-product` end to end through Typer, on a synthetic source of cut-outs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import vitrine.cli.model_data  # noqa: F401  registers `model make-dataset`
from tests.training.helpers import HUES, write_cutout_tree
from vitrine.cli.app import app

runner = CliRunner()
COMMAND = ["model", "make-dataset", "same-product"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_cutout_tree(tmp_path_factory.mktemp("cutouts"), per_category=3)


def _make(source, out, *extra):
    args = [*COMMAND, "--source", str(source), "--out", str(out), "--size", "64", "--min-per-category", "2"]
    return runner.invoke(app, [*args, *extra])


def test_json_reports_what_it_wrote(source, tmp_path):
    result = _make(source, tmp_path / "set", "--products", "6", "--photos", "2", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["products"], report["photos"], report["seed"]) == (6, 2, 1)
    assert report["categories"] == dict.fromkeys(HUES, 2)
    assert report["usable"] == 9 and report["seconds"] >= 0 and report["machine"]["cores"] >= 1
    products = json.loads((tmp_path / "set" / "products.json").read_text())
    assert len(products) == 6 and all(len(list((tmp_path / "set" / p).glob("*.jpg"))) == 2 for p in products)


def test_table_lists_the_categories_and_refuses_to_overwrite_unasked(source, tmp_path):
    result = _make(source, tmp_path / "set", "--products", "3")
    assert result.exit_code == 0, result.output
    assert "3 products x 3 photos (9 JPEGs, 64 px)" in result.stdout
    assert "9 usable cut-outs" in result.stdout and "3 categories" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("category"))) + 1].split() == ["food/fruit", "1"]
    again = _make(source, tmp_path / "set", "--products", "3")
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert _make(source, tmp_path / "set", "--products", "3", "--overwrite").exit_code == 0


def test_errors_are_one_line_and_name_the_problem(source, tmp_path):
    missing = runner.invoke(app, [*COMMAND, "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "apt-get install openclipart-png" in missing.output
    assert "Traceback" not in missing.output
    too_many = _make(source, tmp_path / "o", "--products", "40")
    assert too_many.exit_code == 1 and "need 40 products" in too_many.output
    assert _make(source, tmp_path / "o", "--photos", "1").exit_code == 2  # a street shot is the point
    assert not (tmp_path / "o").exists()
