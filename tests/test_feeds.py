"""Feed runs against a real HTTP server on 127.0.0.1 (CONTRACT §7), on SQLite and PostgreSQL."""

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fixtures.feeds.server import Answer, FeedServer
from sqlalchemy import func, select
from sqlmodel import Session

from tracker import feeds
from tracker.cli import main
from tracker.feeds import feed_health, fetch, next_due, run_feed
from tracker.models import (
    Batch,
    Feed,
    FeedRejection,
    FeedRun,
    Observation,
    ObservationRevision,
    SchedulerLease,
    Work,
)

CSV = (
    b"suburb,as_at,completed\n"
    b"OPAWA,2014-03-31,10\n"
    b"St Albans,2014-03-31,20\n"
    b"riccarton,2014-03-31,30\n"
)
MAPPED = {"place": "suburb", "date": "as_at", "value": "completed"}


# The fixtures are named apart from their functions so that tests/test_feeds_hostile.py
# can import them without its arguments shadowing the imports.
@pytest.fixture(name="server")
def feed_server():
    server = FeedServer()
    yield server
    server.close()


@pytest.fixture(autouse=True, name="quick_retries")
def quick_backoff(monkeypatch):
    """Back-off in hundredths of a second: the retry logic, not the waiting, is tested."""
    monkeypatch.setattr(fetch, "BACKOFF_SECONDS", 0.01)


@pytest.fixture(name="engine")
def loaded_engine(loaded):
    return loaded[0]


@pytest.fixture(name="tree_folder")
def configured_tree_folder(tmp_path, monkeypatch) -> Path:
    """tmp_path as the folder of the configured tree, which `file:` feeds must stay inside."""
    monkeypatch.setenv("TRACKER_TREE", str(tmp_path / "results_tree.yaml"))
    return tmp_path


def add_feed(engine, url: str, **values) -> str:
    """Store a feed as `tracker init` would from the tree; returns its id."""
    feed = {
        "id": "eqc-repairs",
        "agency_id": "eqc",
        "url": url,
        "format": "csv",
        "every": "6h",
        "timeout": 10,  # a loaded CI machine took over 1 s; timeout tests set their own
        "measure_id": "homes-repaired",
        "fields": MAPPED,
        "place_match": "name",
    } | values
    with Session(engine) as session:
        session.add(Feed(**feed))
        session.commit()
    return feed["id"]


def add_works_feed(engine, url: str, **values) -> str:
    """A council feed that provides works (matched by place id), as add_feed stores it."""
    works = {"id": "council-works", "agency_id": "council", "provides": "works"}
    return add_feed(engine, url, **works, measure_id=None, place_match="id", **values)


def stored(engine) -> dict:
    """Everything a run may write, to compare before and after."""
    with Session(engine) as session:
        observations = session.execute(
            select(
                Observation.measure_id,
                Observation.place_id,
                Observation.date,
                Observation.dims_key,
                Observation.value,
                Observation.revisions,
            ).order_by(Observation.id)
        ).all()
        counts = {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (ObservationRevision, Batch, Work, FeedRejection)
        }
    return {"observations": observations, **counts}


def left_running(
    engine, feed_id: str, ago: timedelta, lease: timedelta | None = None, held_for: int = 0
) -> None:
    """A run another host started `ago` and that is still "running", with the run's lease
    expiring `lease` from now (None: no lease); the lease names the run `held_for` after it."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        run = FeedRun(feed_id=feed_id, started_at=now - ago)
        session.add(run)
        session.flush()
        if lease is not None:
            holder = f"{run.id + held_for} other-host:4242"
            name = feeds.run_lease_name(feed_id)
            session.add(SchedulerLease(name=name, holder=holder, expires_at=now + lease))
        session.commit()


def feed_row(engine, feed_id: str = "eqc-repairs") -> Feed:
    with Session(engine) as session:
        return session.get(Feed, feed_id)


def test_a_csv_feed_is_mapped_matched_by_name_and_stored_as_its_agency(engine, server):
    server.add("/repairs.csv", Answer(body=CSV))
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows, run.rejected, run.error) == ("ok", 3, 0, None)
    assert run.http_status == 200 and run.finished_at is not None
    values = {(o[1], o[4]) for o in stored(engine)["observations"]}
    assert values == {("opawa", 10.0), ("st-albans", 20.0), ("riccarton", 30.0)}
    with Session(engine) as session:
        batch = session.scalars(select(Batch)).one()
    assert (batch.agency_id, batch.channel, batch.feed_run_id) == ("eqc", "feed", run.id)


def test_a_304_is_unchanged_and_stores_nothing(engine, server):
    server.add("/repairs.csv", Answer(body=CSV, headers={"ETag": '"v1"'}))
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    assert run_feed(engine, feed_id).status == "ok"
    assert feed_row(engine).etag == '"v1"'
    before = stored(engine)
    again = run_feed(engine, feed_id)
    assert (again.status, again.rows, again.http_status) == ("unchanged", 0, 304)
    assert server.requests[-1][2]["If-None-Match"] == '"v1"'
    assert stored(engine) == before


def test_last_modified_is_sent_back(engine, server):
    stamp = "Wed, 21 Oct 2015 07:28:00 GMT"
    server.add("/repairs.csv", Answer(body=CSV, headers={"Last-Modified": stamp}))
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    run_feed(engine, feed_id)
    run_feed(engine, feed_id)
    assert server.requests[-1][2]["If-Modified-Since"] == stamp


def test_rerunning_a_feed_that_returns_the_same_rows_adds_no_revisions(engine, server):
    server.add("/repairs.csv", Answer(body=CSV))  # no ETag: the body is read again
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    run_feed(engine, feed_id)
    before = stored(engine)
    again = run_feed(engine, feed_id)
    assert (again.status, again.rows) == ("ok", 3)
    after = stored(engine)
    assert after["observations"] == before["observations"]
    assert after["ObservationRevision"] == before["ObservationRevision"] == 0  # none replaced


def test_a_5xx_is_retried_and_then_succeeds(engine, server):
    server.add("/repairs.csv", Answer(503, b"busy"), Answer(500, b"oops"), Answer(body=CSV))
    run = run_feed(engine, add_feed(engine, server.url("/repairs.csv")))
    assert (run.status, run.rows) == ("ok", 3)
    assert server.count("/repairs.csv") == 3


def test_a_5xx_that_persists_fails_after_a_few_tries(engine, server):
    server.add("/repairs.csv", Answer(502, b"bad gateway"))
    run = run_feed(engine, add_feed(engine, server.url("/repairs.csv")))
    assert run.status == "failed"
    assert "HTTP 502" in run.error and f"tried {fetch.ATTEMPTS} times" in run.error
    assert server.count("/repairs.csv") == fetch.ATTEMPTS


def test_a_4xx_fails_at_once(engine, server):
    run = run_feed(engine, add_feed(engine, server.url("/gone.csv")))
    assert (run.status, run.http_status) == ("failed", 404)
    assert "HTTP 404" in run.error
    assert server.count("/gone.csv") == 1


def test_a_connection_refused_is_retried_then_fails(engine):
    run = run_feed(engine, add_feed(engine, "http://127.0.0.1:9/repairs.csv"))
    assert run.status == "failed"
    assert "could not connect" in run.error


def test_a_server_that_hangs_fails_within_the_timeout(engine, server):
    server.add("/slow.csv", Answer(hang=True))
    started = time.monotonic()
    run = run_feed(engine, add_feed(engine, server.url("/slow.csv"), timeout=0.5))
    assert time.monotonic() - started < 2
    assert run.status == "failed"
    assert "within 0.5 s" in run.error


@pytest.mark.parametrize(
    ("answer", "fmt", "message"),
    [
        (Answer(body=CSV[:40], truncate=True), "csv", "broke before the whole answer"),
        (Answer(body=b"<html><body>Service moved</body></html>"), "json", "not valid JSON"),
        (Answer(body=b"\xff\xfe\x00garbage"), "csv", "not UTF-8"),
        (Answer(body=b'{"type": "Feature"}'), "geojson", "FeatureCollection"),
    ],
    ids=["truncated", "html", "binary", "not-a-collection"],
)
def test_an_unreadable_body_fails_the_run(engine, server, answer, fmt, message):
    server.add("/feed", answer)
    run = run_feed(engine, add_feed(engine, server.url("/feed"), format=fmt))
    assert run.status == "failed"
    assert message in run.error
    assert stored(engine)["Batch"] == 0


def test_an_answer_over_the_size_limit_fails(engine, server, monkeypatch):
    monkeypatch.setattr(fetch, "MAX_RESPONSE_BYTES", 50)
    server.add("/repairs.csv", Answer(body=CSV))
    run = run_feed(engine, add_feed(engine, server.url("/repairs.csv")))
    assert run.status == "failed"
    assert "over the" in run.error and "limit" in run.error


def test_missing_columns_fail_the_run_naming_them(engine, server):
    server.add("/repairs.csv", Answer(body=b"suburb,completed\nopawa,3\n"))
    run = run_feed(engine, add_feed(engine, server.url("/repairs.csv")))
    assert run.status == "failed"
    assert "'as_at' (for date)" in run.error
    assert "the source has 2 columns" in run.error
    assert "suburb" not in run.error  # the source's own names are its content, not ours


def test_good_rows_are_stored_and_bad_rows_rejected_with_reasons(engine, server):
    body = (
        b"suburb,as_at,completed,note\n"
        b"opawa,2014-03-31,10,\n"
        b"Nowhere,2014-03-31,5,\n"
        b"st albans,2014-13-01,7,\n"
        b"riccarton,2014-03-31,many,\n"
        b"riccarton,2014-03-31,30,checked\n"
        b"red zone park,2014-03-31,1,\n"
        b"opawa,2014-04-30,12,extra,cell\n"
    )
    server.add("/repairs.csv", Answer(body=body))
    run = run_feed(engine, add_feed(engine, server.url("/repairs.csv")))
    assert (run.status, run.rows, run.rejected) == ("ok", 2, 5)
    with Session(engine) as session:
        reasons = {
            (r.row, r.field): r.message
            for r in session.scalars(select(FeedRejection).where(FeedRejection.run_id == run.id))
        }
        notes = set(session.scalars(select(Observation.note)))
    assert reasons[(3, "place")] == "no neighbourhood is named 'Nowhere'"
    assert "not a real date" in reasons[(4, "date")]
    assert "must be a number" in reasons[(5, "value")]
    assert "is not one of the places" in reasons[(7, "place")]
    assert "fields where the header has" in reasons[(8, None)]
    assert notes == {None, "checked"}
    with Session(engine) as session:
        raw = session.scalars(select(FeedRejection.raw).where(FeedRejection.row == 3)).one()
    assert raw["suburb"] == "Nowhere"


def test_a_failed_run_leaves_earlier_data_exactly_as_it_was(engine, server):
    changed = CSV.replace(b"10", b"11")
    server.add(
        "/repairs.csv",
        Answer(body=CSV, headers={"ETag": '"v1"'}),
        Answer(body=changed.replace(b"completed", b"done"), headers={"ETag": '"v2"'}),
        Answer(body=changed[:60], truncate=True),
    )
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    assert run_feed(engine, feed_id).status == "ok"
    before = stored(engine)
    assert run_feed(engine, feed_id).status == "failed"  # a column renamed
    assert run_feed(engine, feed_id).status == "failed"  # cut short
    assert stored(engine) == before
    assert feed_row(engine).etag == '"v1"'  # validators change only on success


def test_a_run_that_breaks_inside_is_recorded_as_failed_and_stores_nothing(
    engine, server, monkeypatch
):
    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tracker.feeds.run.submit_observations", broken)
    server.add("/repairs.csv", Answer(body=CSV))
    run = run_feed(engine, add_feed(engine, server.url("/repairs.csv")))
    assert run.status == "failed"
    assert "internal error (RuntimeError)" in run.error
    assert stored(engine)["Batch"] == 0


def test_a_measure_column_and_dimension_columns_are_read(engine, server):
    body = json.dumps(
        {
            "data": {
                "items": [
                    {"m": "people-supported", "where": "opawa", "on": "2014-03-31",
                     "n": 4, "age_group": "65+"},
                    {"m": "people-supported", "where": "opawa", "on": "2014-03-31",
                     "n": 9, "age_group": "15-64"},
                    {"m": "homes-repaired", "where": "opawa", "on": "2014-03-31",
                     "n": 1, "age_group": ""},
                ]
            }
        }
    ).encode()  # fmt: skip
    server.add("/people.json", Answer(body=body))
    feed_id = add_feed(
        engine,
        server.url("/people.json"),
        id="council-people",
        agency_id="council",
        format="json",
        measure_id=None,
        place_match="id",
        fields={
            "measure": "m",
            "place": "where",
            "date": "on",
            "value": "n",
            "dim.age": "age_group",
        },
        options={"path": "data.items"},
    )
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows, run.rejected) == ("ok", 2, 1)
    cells = {(o[0], o[3], o[4]) for o in stored(engine)["observations"]}
    assert cells == {("people-supported", "age=65+", 4.0), ("people-supported", "age=15-64", 9.0)}
    with Session(engine) as session:
        reason = session.scalars(select(FeedRejection.message)).one()
    assert "belongs to 'eqc'" in reason


def geojson_works(*features) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


def test_a_geojson_works_feed_upserts_works(engine, server):
    line = {"type": "LineString", "coordinates": [[172.602, -43.535], [172.608, -43.535]]}
    features = [
        {"type": "Feature", "id": "rd-1", "geometry": line,
         "properties": {"name": "Ōpāwa Road resurfacing", "state": "in_progress",
                        "start": "2014-01-10"}},
        {"type": "Feature", "id": "rd-2", "geometry": None,
         "properties": {"name": "Somewhere", "state": "planned"}},
        {"type": "Feature", "id": "rd-3", "geometry": line,
         "properties": {"name": "Done", "state": "finished"}},
    ]  # fmt: skip
    server.add("/works.geojson", Answer(body=geojson_works(*features)))
    feed_id = add_works_feed(
        engine,
        server.url("/works.geojson"),
        format="geojson",
        fields={"title": "name", "status": "state", "actual_start": "start"},
    )
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows, run.rejected) == ("ok", 1, 2)
    with Session(engine) as session:
        work = session.scalars(select(Work)).one()
        fields = {r.row: r.field for r in session.scalars(select(FeedRejection))}
    assert (work.agency_id, work.ref, work.status, work.main_place_id) == (
        "council",
        "rd-1",
        "in_progress",
        "opawa",
    )
    assert fields == {1: "geometry", 2: "status"}


def test_a_csv_works_feed_reads_lon_lat_and_wkt(engine, server):
    body = (
        b"id,title,status,lon,lat,geometry\n"
        b"p-1,Pipe at a point,planned,172.605,-43.535,\n"
        b'p-2,Pipe along a line,planned,,,"LINESTRING (172.602 -43.525, 172.607 -43.525)"\n'
        b"p-3,Nowhere,planned,,,NOT WKT\n"
    )
    server.add("/works.csv", Answer(body=body))
    feed_id = add_works_feed(
        engine,
        server.url("/works.csv"),
        fields={},
    )
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows, run.rejected) == ("ok", 2, 1)
    with Session(engine) as session:
        places = dict(session.execute(select(Work.ref, Work.main_place_id)).all())
    assert places == {"p-1": "opawa", "p-2": "riccarton"}


def esri_page(offset: int, count: int, more: bool) -> bytes:
    """An Esri JSON query answer of points whose dates are epoch milliseconds."""
    # 2014-03-31 00:00 in Christchurch (NZDT) is 2014-03-30 11:00 UTC.
    midnight = int(datetime(2014, 3, 30, 11, tzinfo=UTC).timestamp() * 1000)
    features = [
        {
            "attributes": {"OBJECTID": i + 1, "Title": f"Work {i + 1}", "Status": "complete",
                           "Finished": midnight, "Started": midnight - 86_400_000},
            "geometry": {"x": 172.605, "y": -43.535},
        }
        for i in range(offset, offset + count)
    ]  # fmt: skip
    fields = [
        {"name": "OBJECTID", "type": "esriFieldTypeOID"},
        {"name": "Title", "type": "esriFieldTypeString"},
        {"name": "Status", "type": "esriFieldTypeString"},
        {"name": "Finished", "type": "esriFieldTypeDate"},
        {"name": "Started", "type": "esriFieldTypeDate"},
    ]
    answer = {"geometryType": "esriGeometryPoint", "fields": fields, "features": features}
    if more:
        answer["exceededTransferLimit"] = True
    return json.dumps(answer).encode()


def test_an_arcgis_feed_pages_until_the_transfer_limit_is_not_exceeded(engine, server):
    total = 7

    def page(query: dict) -> Answer:
        offset, size = int(query["resultOffset"]), int(query["resultRecordCount"])
        size = min(size, 2)  # the server's maxRecordCount is below what was asked
        return Answer(body=esri_page(offset, min(size, total - offset), offset + size < total))

    server.pages("/arcgis/rest/services/Works/FeatureServer/0/query", page)
    feed_id = add_works_feed(
        engine,
        server.url("/arcgis/rest/services/Works/FeatureServer/0"),
        format="arcgis",
        fields={"id": "OBJECTID", "title": "Title", "status": "Status",
                "actual_end": "Finished", "actual_start": "Started"},
        options={"page_size": 3},
    )  # fmt: skip
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows, run.rejected) == ("ok", 7, 0)
    queries = [q for _, q, _ in server.requests]
    assert [q["resultOffset"] for q in queries] == ["0", "2", "4", "6"]
    assert queries[0] | {"resultOffset": "0"} == {
        "where": "1=1",
        "outFields": "*",
        "returnGeometry": "true",
        "outSR": "4326",
        "f": "json",
        "resultOffset": "0",
        "resultRecordCount": "3",
    }
    with Session(engine) as session:
        ends = set(session.scalars(select(Work.actual_end)))
        refs = set(session.scalars(select(Work.ref)))
    assert ends == {datetime(2014, 3, 31).date()}  # the city's calendar day
    assert refs == {str(i) for i in range(1, 8)}
    assert feed_row(engine, feed_id).etag is None  # several answers: no single validator


def test_an_arcgis_error_answered_with_http_200_fails_the_run(engine, server):
    body = b'{"error": {"code": 400, "message": "Invalid query", "details": ["where"]}}'
    server.add("/layer/query", Answer(body=body))
    feed_id = add_feed(engine, server.url("/layer"), format="arcgis", place_match="id", fields={})
    run = run_feed(engine, feed_id)
    assert run.status == "failed"
    assert run.error == "ArcGIS error 400 (its message is in the operator's log)"


def ckan_page(records: list[dict], total: int) -> bytes:
    fields = [{"id": "_id", "type": "int"}, {"id": "area", "type": "text"},
              {"id": "as_at", "type": "timestamp"}, {"id": "count", "type": "numeric"}]  # fmt: skip
    return json.dumps(
        {"success": True, "result": {"records": records, "fields": fields, "total": total}}
    ).encode()


def test_a_ckan_feed_pages_until_every_row_is_read(engine, server):
    places = ["opawa", "st-albans", "riccarton"]
    records = [
        {"_id": i + 1, "area": places[i % 3], "as_at": f"2014-0{1 + i // 3}-28T00:00:00",
         "count": str(10 + i)}
        for i in range(8)
    ]  # fmt: skip

    def page(query: dict) -> Answer:
        offset, limit = int(query["offset"]), int(query["limit"])
        return Answer(body=ckan_page(records[offset : offset + limit], len(records)))

    server.pages("/api/3/action/datastore_search", page)
    feed_id = add_feed(
        engine,
        server.url("/api/3/action/datastore_search"),
        format="ckan",
        place_match="id",
        fields={"place": "area", "date": "as_at", "value": "count"},
        options={"resource_id": "abc-123", "page_size": 3},
    )
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows, run.rejected) == ("ok", 8, 0)
    queries = [q for _, q, _ in server.requests]
    assert [(q["offset"], q["limit"], q["resource_id"]) for q in queries] == [
        ("0", "3", "abc-123"),
        ("3", "3", "abc-123"),
        ("6", "3", "abc-123"),
    ]
    assert len(stored(engine)["observations"]) == 8


def test_a_local_file_feed_is_unchanged_until_the_file_changes(engine, tree_folder):
    path = tree_folder / "repairs.csv"
    path.write_bytes(CSV)
    feed_id = add_feed(engine, f"file:{path}")
    assert run_feed(engine, feed_id).status == "ok"
    assert run_feed(engine, feed_id).status == "unchanged"
    path.write_bytes(CSV.replace(b"10", b"15"))
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows) == ("ok", 3)
    path.unlink()
    missing = run_feed(engine, feed_id)
    assert missing.status == "failed" and "cannot read" in missing.error


def test_a_run_left_running_by_a_dead_process_is_closed(engine, tree_folder):
    path = tree_folder / "repairs.csv"
    path.write_bytes(CSV)
    feed_id = add_feed(engine, f"file:{path}")
    left_running(engine, feed_id, timedelta(hours=2))
    run_feed(engine, feed_id)
    with Session(engine) as session:
        statuses = session.scalars(select(FeedRun.status).order_by(FeedRun.id)).all()
        error = session.scalars(select(FeedRun.error).order_by(FeedRun.id)).first()
    assert statuses == ["failed", "ok"]
    assert "interrupted" in error


def test_the_feeds_api_reports_each_feed_as_the_contract_says(app, client, engine, server):
    server.add("/repairs.csv", Answer(body=CSV))
    add_feed(engine, server.url("/repairs.csv"))
    add_feed(engine, server.url("/gone.csv"), id="eqc-gone", cron="0 3 * * 1", every=None)
    add_feed(engine, server.url("/repairs.csv"), id="eqc-never")
    run_feed(engine, "eqc-repairs")
    run_feed(engine, "eqc-gone")
    answer = client.get("/api/v1/feeds")
    assert answer.status_code == 200
    by_id = {feed["id"]: feed for feed in answer.get_json()}
    assert list(by_id) == ["eqc-gone", "eqc-never", "eqc-repairs"]
    ok, gone, never = by_id["eqc-repairs"], by_id["eqc-gone"], by_id["eqc-never"]
    assert set(ok) == {"id", "agency", "status", "last_run", "rows", "rejected", "error",
                       "next_run"}  # fmt: skip
    assert (ok["agency"], ok["status"], ok["rows"], ok["rejected"], ok["error"]) == (
        "eqc",
        "ok",
        3,
        0,
        None,
    )
    last = datetime.fromisoformat(ok["last_run"])
    assert ok["last_run"].endswith("Z") and ok["next_run"].endswith("Z")
    assert datetime.fromisoformat(ok["next_run"]) - last == timedelta(hours=6)
    assert (gone["status"], gone["rows"]) == ("failed", 0)
    assert "HTTP 404" in gone["error"]
    # A Monday 03:00 in Christchurch, whatever weekday it is in UTC.
    monday = datetime.fromisoformat(gone["next_run"]).astimezone(ZoneInfo("Pacific/Auckland"))
    assert (monday.strftime("%a"), monday.hour) == ("Mon", 3)
    assert (never["status"], never["last_run"], never["rows"]) == ("never_run", None, None)


def test_the_feeds_page_shows_runs_and_rejections_escaped(app, client, engine, server):
    body = CSV + b"<script>alert(1)</script>,2014-03-31,1\n"
    server.add("/repairs.csv", Answer(body=body))
    add_feed(engine, server.url("/repairs.csv"))
    run_feed(engine, "eqc-repairs")
    page = client.get("/feeds")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "eqc-repairs" in html and "Earthquake Commission" in html
    assert "1 row rejected" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html
    assert "No scheduler is running" in html
    assert "Homes with repairs completed" in html  # the agency's timeliness


def test_feed_health_says_late_when_scheduled_runs_were_missed(engine, tree_folder):
    path = tree_folder / "repairs.csv"
    path.write_bytes(CSV)
    feed_id = add_feed(engine, f"file:{path}", every="1h")
    started = datetime.now(UTC) - timedelta(hours=3)
    run_feed(engine, feed_id, now=started)
    with Session(engine) as session:
        [health] = feed_health(session)
        [later] = feed_health(session, now=started + timedelta(minutes=90))
    assert health.late is True and health.status == "ok"
    assert later.late is False


def test_import_command_runs_feeds_and_exits_non_zero_on_a_failure(engine, server, runner):
    server.add("/repairs.csv", Answer(body=CSV))
    add_feed(engine, server.url("/repairs.csv"))
    ok = runner.invoke(main, ["import", "eqc-repairs"])
    assert ok.exit_code == 0, ok.output
    assert "eqc-repairs: ok, 3 rows stored, 0 rejected" in ok.output
    add_feed(engine, server.url("/gone.csv"), id="eqc-gone")
    every = runner.invoke(main, ["import"])
    assert every.exit_code == 1
    assert "eqc-gone: failed" in every.output and "eqc-repairs: ok" in every.output
    unknown = runner.invoke(main, ["import", "nope"])
    assert unknown.exit_code == 1
    assert "no feed 'nope'" in unknown.output


def test_next_due_follows_cron_weekdays_as_cron_numbers_them():
    feed = Feed(id="f", agency_id="a", url="file:/x", format="csv", cron="30 6 * * 1-5")
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)  # Sunday 01:00 in Christchurch
    due = next_due(feed, saturday, "Pacific/Auckland").astimezone(ZoneInfo("Pacific/Auckland"))
    assert (due.strftime("%a"), due.hour, due.minute) == ("Mon", 6, 30)
    sunday = Feed(id="f", agency_id="a", url="file:/x", format="csv", cron="0 0 * * 7")
    assert next_due(sunday, saturday, "UTC").strftime("%a") == "Sun"


@pytest.mark.slow
def test_the_demo_feeds_run_against_the_christchurch_tree(settings, monkeypatch):
    from tracker.cli import initialise
    from tracker.feeds import run_feeds

    root = Path(__file__).parent.parent
    monkeypatch.setenv("TRACKER_TREE", str(root / "results_tree.yaml"))
    engine, tree = initialise(settings.model_copy(update={"tree": root / "results_tree.yaml"}))
    try:
        assert {feed.format for feed in tree.feeds()} == {
            "csv",
            "json",
            "geojson",
            "arcgis",
            "ckan",
        }
        runs = {run.feed_id: run for run in run_feeds(engine)}
        assert {run.status for run in runs.values()} == {"ok"}
        # Only the two rows wrong on purpose are refused.
        assert {f: run.rejected for f, run in runs.items() if run.rejected} == {
            "nzta-road-condition": 2
        }
        with Session(engine) as session:
            latest = session.scalar(select(func.max(Observation.date)))
        assert latest <= datetime.now(UTC).date()
        again = {run.feed_id: run.status for run in run_feeds(engine)}
        # Local files unchanged since the last run; paged folders are read again.
        assert again == {
            "ccc-facilities": "unchanged",
            "ccc-footpaths": "unchanged",
            "msd-benefit-rate": "ok",
            "nzta-road-condition": "unchanged",
            "nzta-safety-works": "ok",
        }
    finally:
        engine.dispose()


def test_a_changed_mapping_forgets_the_validators_so_the_source_is_read_again(engine, tmp_path):
    """Re-loading the tree keeps the ETag unless what a run reads changed."""
    import shutil

    from tracker.tree import load_tree, store_tree

    source = Path(__file__).parent / "fixtures" / "tiny_city"
    shutil.copytree(source, tmp_path / "city")
    text = (source / "tree.yaml").read_text(encoding="utf-8")
    feed = (
        "    feeds:\n"
        "      - id: eqc-repairs\n"
        "        url: https://example.org/repairs.csv\n"
        "        format: csv\n"
        "        every: {every}\n"
        "        measure: homes-repaired\n"
        "        place_match: name\n"
        "        fields: {{place: {place}, date: as_at, value: completed}}\n"
    )
    agency = "    name: Earthquake Commission\n"
    assert agency in text

    def store(every="6h", place="suburb"):
        path = tmp_path / "city" / "tree.yaml"
        path.write_text(text.replace(agency, agency + feed.format(every=every, place=place)))
        with Session(engine) as session:
            store_tree(session, load_tree(path))
            session.commit()

    def remember(etag):
        with Session(engine) as session:
            session.get(Feed, "eqc-repairs").etag = etag
            session.commit()

    store()
    remember('"v1"')
    store()
    assert feed_row(engine).etag == '"v1"'
    store(every="1h")  # when it runs, not what it reads
    assert feed_row(engine).etag == '"v1"'
    store(every="1h", place="area_unit")
    assert feed_row(engine).etag is None


def test_a_rejected_row_under_a_very_long_source_column_name_is_kept(engine, server):
    long_name = "age_" + "x" * 150
    body = (
        f"suburb,as_at,completed,{long_name}\nopawa,2014-03-31,10,65+\nst albans,2014-03-31,20,\n"
    ).encode()
    server.add("/repairs.csv", Answer(body=body))
    feed_id = add_feed(
        engine, server.url("/repairs.csv"), fields=MAPPED | {f"dim.{long_name}": long_name}
    )
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows, run.rejected) == ("ok", 1, 1)  # not failed as a whole
    with Session(engine) as session:
        fields = session.scalars(select(FeedRejection.field)).all()
    assert fields and all(len(f) <= 100 for f in fields)


def test_public_errors_never_show_credentials_or_query_keys(engine, server):
    server.add("/repairs.csv", Answer(404, b"gone"))
    secret = server.url("/repairs.csv").replace("http://", "http://agent:hunter2@")
    feed_id = add_feed(engine, secret + "?apikey=s3cr3t")
    run = run_feed(engine, feed_id)
    assert run.status == "failed" and "HTTP 404" in run.error
    assert "/repairs.csv" in run.error
    assert not any(word in run.error for word in ("hunter2", "agent", "s3cr3t", "apikey"))


@pytest.mark.parametrize(
    ("limit", "value", "message"),
    [("MAX_RUN_BYTES", 5_000, "bytes in 3 answers"), ("MAX_RUN_SECONDS", 0, "took over")],
)
def test_a_source_that_never_stops_paging_is_cut_off_and_stores_nothing(
    engine, server, monkeypatch, limit, value, message
):
    def page(query: dict) -> Answer:  # always "more", forever
        return Answer(body=esri_page(int(query["resultOffset"]), 10, True))

    server.pages("/layer/query", page)
    monkeypatch.setattr(fetch, limit, value)
    feed_id = add_works_feed(
        engine,
        server.url("/layer"),
        format="arcgis",
        fields={"id": "OBJECTID", "title": "Title", "status": "Status"},
        options={"page_size": 10},
    )
    before = stored(engine)
    run = run_feed(engine, feed_id)
    assert run.status == "failed" and message in run.error, run.error
    assert len(server.requests) <= 3
    assert stored(engine) == before


def test_a_feed_already_running_elsewhere_is_not_read_twice(engine, server):
    server.add("/repairs.csv", Answer(body=CSV))
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    # Its process is alive: it renews the run's lease.
    left_running(engine, feed_id, timedelta(minutes=5), lease=timedelta(seconds=30))
    before = stored(engine)
    run = run_feed(engine, feed_id)
    assert run.status == "failed" and "another run of this feed" in run.error
    assert server.requests == [] and stored(engine) == before
