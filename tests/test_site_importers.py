"""A feed format of the site's own, defined outside the importers package and named in
TRACKER_IMPORTERS, works end to end: `tracker check`, `tracker init`, a feed run, the
roll-up."""

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from importers import REGISTRY
from tracker.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
FEED = """\
  - id: eqc
    name: Earthquake Commission
    feeds:
      - id: eqc-pipes
        url: file:repairs.txt
        format: pipes
        every: 6h
        measure: homes-repaired
        fields: {place: suburb, date: as_at, value: done}
"""


@pytest.fixture
def city(tmp_path, database_url, monkeypatch):
    """The tiny city with a feed in the site's own format, and the environment for it."""
    for name in ("neighbourhoods.geojson", "streets.geojson"):
        shutil.copy(FIXTURES / "tiny_city" / name, tmp_path / name)
    tree = (FIXTURES / "tiny_city" / "tree.yaml").read_text(encoding="utf-8")
    old = "  - id: eqc\n    name: Earthquake Commission\n"
    assert old in tree
    (tmp_path / "results_tree.yaml").write_text(tree.replace(old, FEED), encoding="utf-8")
    (tmp_path / "repairs.txt").write_text(
        "suburb|as_at|done\nopawa|2014-03-31|40\n\nriccarton|2014-03-31|12\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(FIXTURES / "site_formats"))
    monkeypatch.setenv("TRACKER_DATABASE_URL", database_url)
    monkeypatch.setenv("TRACKER_TREE", str(tmp_path / "results_tree.yaml"))
    monkeypatch.setenv("TRACKER_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("TRACKER_SECRET_KEY", "test-secret")
    yield tmp_path
    REGISTRY.pop("pipes", None)  # other tests see only the built-in formats
    sys.modules.pop("pipe_delimited", None)


def test_a_tree_naming_an_unregistered_format_is_refused_with_its_line(city):
    result = CliRunner().invoke(main, ["check", str(city / "results_tree.yaml")])
    assert result.exit_code == 1
    assert "format should be 'arcgis', 'ckan', 'csv', 'geojson' or 'json', got 'pipes'" in (
        result.output
    )


def test_a_site_format_named_in_the_settings_is_checked_loaded_and_run(city, monkeypatch):
    monkeypatch.setenv("TRACKER_IMPORTERS", "pipe_delimited")
    runner = CliRunner()
    checked = runner.invoke(main, ["check", str(city / "results_tree.yaml")])
    assert checked.exit_code == 0, checked.output
    assert runner.invoke(main, ["init"]).exit_code == 0
    ran = runner.invoke(main, ["import", "eqc-pipes"])
    assert ran.exit_code == 0, ran.output
    from tracker import create_app
    from tracker.settings import Settings

    app = create_app(Settings())
    answer = app.test_client().get("/api/v1/rollup?place=opawa&date=2014-04-30").get_json()
    [housing] = [r for r in answer["results"] if r["id"] == "housing"]
    [measure] = housing["children"][0]["children"]
    assert (measure["id"], measure["value"]) == ("homes-repaired", 40)
    feeds = app.test_client().get("/api/v1/feeds").get_json()
    assert [(f["id"], f["status"], f["rows"]) for f in feeds] == [("eqc-pipes", "ok", 2)]
    app.extensions["engine"].dispose()


def test_a_site_module_that_cannot_be_imported_is_named(city, monkeypatch):
    monkeypatch.setenv("TRACKER_IMPORTERS", "pipe_delimited, no_such_module")
    result = CliRunner().invoke(main, ["check", str(city / "results_tree.yaml")])
    assert result.exit_code == 1
    assert "TRACKER_IMPORTERS names 'no_such_module', which cannot be imported" in result.output
