"""The benchmarks still fit the schema: each loads a few rows the way it loads millions.

They are run by hand (docs/performance.md), so without these a schema change would
leave them broken until someone next measures.
"""

import importlib.util
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from sqlmodel import Session

from tracker.cli import initialise
from tracker.rollup import RollupCache, rollup
from tracker.settings import Settings

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench(name: str):
    """bench/NAME.py as a module, without putting bench/ on the import path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ingest = _bench("ingest")
rollup_bench = _bench("rollup")


def test_the_ingest_baselines_load_into_tables_shaped_like_the_observation_table(
    database_url, tmp_path
):
    today = date.today()
    tree = ingest.write_city(tmp_path, today - timedelta(days=400), today + timedelta(days=30))
    rows = [(ingest.measure(m), ingest.place(n), today, 1.0) for m in range(2) for n in range(3)]
    for kind in ingest.RAW_KINDS:
        _settings, engine, _token = ingest.prepare(database_url, tree, tmp_path)
        try:
            # Checks the table against the model, then that every row went in.
            assert ingest.raw_ingest(engine, [rows[:3], rows[3:]], kind) > 0
            with engine.begin() as connection:
                connection.exec_driver_sql("DROP TABLE raw_observation")
                connection.exec_driver_sql("DELETE FROM batch")
        finally:
            engine.dispose()


def test_the_rollup_bench_loads_observations_the_roll_up_reads(database_url, tmp_path):
    today = date.today()
    start = today - timedelta(days=7 * 5)
    tree = rollup_bench.write_city(tmp_path, 4, 3, start, today)
    settings = Settings(
        database_url=database_url, tree=tree, instance_path=tmp_path, secret_key="t", _env_file=None
    )
    engine, _ = initialise(settings)
    try:
        with Session(engine) as session:
            batches = rollup_bench.make_batches(session)
            rows = rollup_bench.observation_rows(batches, start, 4, 4, 3)
            assert rollup_bench.bulk_load(session, rows) == 4 * 4 * 3
            session.commit()
            answer = rollup(session, place_id=None, on=today, cache=RollupCache())
        measures = [node for result in answer.results for node in _measures(result)]
        assert measures and all(m.measure.value is not None for m in measures)
    finally:
        engine.dispose()


def _measures(node):
    if node.kind == "measure":
        yield node
    for child in node.children:
        yield from _measures(child)


def test_the_works_bench_stores_and_pages_back_a_batch(database_url):
    figures = _bench("works").run(database_url, 12)
    assert figures["works"] == 12 and figures["city pages"].startswith("1 in ")
    assert figures["street pages"].startswith("1 in ") and "init, street moved s" in figures


def test_the_load_test_runs_briefly_on_the_tiny_city_and_finds_every_batch(tmp_path):
    """bench/load.py end to end for a few seconds on SQLite: a real gunicorn, real
    batches, a feed over a local server, and the report's table and row check."""
    tiny = Path(__file__).resolve().parent / "fixtures" / "tiny_city"
    for name in ("neighbourhoods.geojson", "streets.geojson"):
        (tmp_path / name).write_bytes((tiny / name).read_bytes())
    feed = (
        "    feeds:\n      - id: load-feed\n        url: http://127.0.0.1:9/feed.csv\n"
        "        format: csv\n        every: 1d\n        measure: homes-repaired\n"
        "        fields: {place: place, date: day, value: value}\n"
    )
    tree = (
        (tiny / "tree.yaml")
        .read_text()
        .replace("    name: Earthquake Commission\n", "    name: Earthquake Commission\n" + feed, 1)
    )
    (tmp_path / "tree.yaml").write_text(tree)
    load = _bench("load")
    args = load.parse(
        ["--backend", "sqlite", "--seconds", "4", "--tree", str(tmp_path / "tree.yaml"),
         "--feed", "load-feed", "--feed-every", "1", "--feed-rows", "30", "--residents", "2",
         "--agencies", "1", "--batch-min", "2", "--batch-max", "5", "--warmup", "1",
         "--rate", "10", "--batch-every", "0.2"]
    )  # fmt: skip
    args.tree = args.tree.resolve()
    report = load.run_backend("sqlite", args)
    kinds = {row["kind"]: row for row in report["kinds"]}
    # Which pages the two residents drew in 4 s is chance; that they read some is not.
    assert {"post observations", "feed run"} <= set(kinds) and set(kinds) & set(load.RESIDENT_MIX)
    for row in kinds.values():
        assert row["count"] > 0 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["errors"] == 0, row["error_samples"]
    rows = report["rows"]
    # The row check covers the warm-up too; the table only the measured seconds.
    posted = [
        row["count"] for row in report["kinds"] + report["warmup_kinds"]
        if row["kind"] == "post observations"
    ]  # fmt: skip
    assert rows["ok"] and rows["accepted batches"] == sum(posted)
    assert rows["feed batches"] >= 1 and rows["rows appeared"] == (
        rows["agency rows"] + rows["feed rows"]
    )
    assert "| post observations |" in load.markdown("sqlite", report)


def test_the_load_tests_row_check_finds_a_batch_that_is_not_there(tmp_path):
    tree = Path(__file__).resolve().parent / "fixtures" / "tiny_city" / "tree.yaml"
    url = f"sqlite:///{tmp_path / 'check.sqlite3'}"
    settings = Settings(database_url=url, tree=tree, instance_path=tmp_path, _env_file=None)
    engine, _ = initialise(settings)
    try:
        load = _bench("load")
        agency = load.Agency("eqc", "token", [])
        agency.accepted["load-x-eqc-1"] = (999, 5)  # answered 201, never stored
        check = load.check_rows(engine, load.row_counts(engine), [agency])
    finally:
        engine.dispose()
    assert not check["ok"] and check["lost batches"] == ["load-x-eqc-1"]
    assert check["batches with wrong row count"] == [("load-x-eqc-1", 5, 0)]


def test_the_page_build_bench_times_street_pages_and_counts_their_questions(
    settings, loaded, tmp_path
):
    env = {**os.environ, "TRACKER_INSTANCE_PATH": str(tmp_path / "instance")}
    env.pop("TRACKER_PAGE_STALE_SECONDS", None)
    command = [sys.executable, str(BENCH / "page_builds.py"), "--database",
               settings.database_url, "--count", "3"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = re.search(
        r"^3 street pages on (\w+): median [\d.]+ ms, .*a page: median (\d+), max (\d+)$",
        done.stdout,
        re.M,
    )
    assert found, done.stdout
    assert found[1] == loaded[0].dialect.name
    # Each page reads its street, its works and its places at least; the facts every
    # page needs come once per data stamp, not once a page (page_cache.per_stamp).
    assert 3 <= int(found[2]) <= int(found[3]) <= 10
