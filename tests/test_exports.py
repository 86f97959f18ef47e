"""Open-data exports under /exports/: contents, the data package (validated with
frictionless), RFC 7946 GeoJSON, the roll-up equal to the API, streaming in flat memory,
formula neutralisation, headers and refusals."""

import csv
import io
import json
import re
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta

import frictionless
import pytest
from page_helpers import store
from shapely.geometry import LinearRing, shape
from sqlalchemy import event, func, insert, select, update
from sqlmodel import Session

from tracker import exports
from tracker.models import Batch, Node, Observation, Place, Work

FILES = ("observations.csv", "revisions.csv", "rollup.csv", "places.geojson", "works.geojson")


def observation(measure, place, day, value, **extra):
    return {"measure": measure, "place": place, "date": day, "value": value, **extra}


def point_work(ref, title="A work", **extra):
    return {
        "id": ref,
        "title": title,
        "status": "planned",
        "geometry": {"type": "Point", "coordinates": [172.6051234567, -43.535]},
        **extra,
    }


def square_work(ref, clockwise=True):
    ring = [[172.601, -43.541], [172.601, -43.539], [172.603, -43.539], [172.603, -43.541]]
    if not clockwise:
        ring.reverse()
    ring.append(ring[0])
    return {
        "id": ref,
        "title": "Resurfacing",
        "status": "complete",
        "actual_start": "2014-01-01",
        "actual_end": "2014-02-01",
        "measure": "pipes-relaid",
        "quantity": 2.5,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


@pytest.fixture
def filled(app):
    """Values (one revised twice, one retracted, some by age), and works."""
    store(
        app,
        "eqc",
        observations=[
            observation("homes-repaired", "opawa", "2014-03-31", 40),
            observation("homes-repaired", "st-albans", "2014-03-31", 90),
            observation("homes-repaired", "riccarton", "2014-06-30", 100),
        ],
    )
    store(app, "eqc", observations=[observation("homes-repaired", "opawa", "2014-03-31", 45)])
    store(app, "eqc", observations=[observation("homes-repaired", "opawa", "2014-03-31", 50)])
    store(app, "eqc", observations=[observation("homes-repaired", "st-albans", "2014-03-31", None)])
    store(
        app,
        "council",
        observations=[
            observation("people-supported", "opawa", "2014-03-31", 12, dims={"age": "65+"}),
            observation("people-supported", "opawa", "2014-03-31", 30, dims={"age": "15-64"}),
            observation("wellbeing-score", "opawa", "2014-06-30", 61.5),
            observation("wellbeing-score", "riccarton", "2015-06-30", 66.25),
        ],
        works=[point_work("p1"), square_work("sq1"), square_work("sq2", clockwise=False)],
    )
    return app


def rows_of(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def number(text: str) -> float | None:
    return None if text == "" else float(text)


# --- contents ---------------------------------------------------------------------------


def test_observations_csv_holds_every_current_value_with_its_provenance(filled, client):
    rows = rows_of(client.get("/exports/observations.csv"))
    with Session(filled.extensions["engine"]) as session:
        assert len(rows) == session.scalar(select(func.count()).select_from(Observation))
    assert list(rows[0]) == [
        "measure", "place", "date", "dim.age", "value", "unit", "revisions", "agency",
        "channel", "received_at", "first_received_at",
    ]  # fmt: skip
    opawa = next(r for r in rows if r["measure"] == "homes-repaired" and r["place"] == "opawa")
    assert opawa | {"received_at": "", "first_received_at": ""} == {
        "measure": "homes-repaired", "place": "opawa", "date": "2014-03-31", "dim.age": "",
        "value": "50", "unit": "homes", "revisions": "3", "agency": "eqc", "channel": "api",
        "received_at": "", "first_received_at": "",
    }  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", opawa["received_at"])
    assert opawa["first_received_at"] <= opawa["received_at"]
    retracted = next(r for r in rows if r["place"] == "st-albans")
    assert (retracted["value"], retracted["revisions"]) == ("", "2")
    by_age = {r["dim.age"]: r["value"] for r in rows if r["measure"] == "people-supported"}
    assert by_age == {"65+": "12", "15-64": "30"}
    assert (
        next(r for r in rows if r["place"] == "riccarton" and r["unit"] == "points")["value"]
        == "66.25"
    )


def test_revisions_csv_shows_each_change_old_to_new(filled, client):
    rows = rows_of(client.get("/exports/revisions.csv"))
    opawa = [
        (r["revision"], r["change"], r["old_value"], r["new_value"], r["agency"])
        for r in rows
        if r["measure"] == "homes-repaired" and r["place"] == "opawa"
    ]
    assert opawa == [
        ("1", "created", "", "40", "eqc"),
        ("2", "revised", "40", "45", "eqc"),
        ("3", "revised", "45", "50", "eqc"),
    ]
    (retraction,) = [r for r in rows if r["change"] == "retracted"]
    assert (retraction["place"], retraction["old_value"], retraction["new_value"]) == (
        "st-albans",
        "90",
        "",
    )
    times = [r["received_at"] for r in rows]
    assert times == sorted(times), "oldest first"
    assert len(rows) == 7 + 3  # every value ever sent: 7 cells, 3 new values among them
    assert len({r["batch"] for r in rows}) == 5


def api_nodes(client, place: str, day: str | None) -> dict[str, dict]:
    """Every node of /api/v1/rollup at a place, by id, with its parent."""
    query = f"/api/v1/rollup?place={place}" + (f"&date={day}" if day else "")
    answer = client.get(query).get_json()
    found, stack = {}, [(node, None) for node in answer["results"]]
    while stack:
        node, parent = stack.pop()
        found[node["id"]] = node | {"parent": parent}
        stack.extend((child, node["id"]) for child in node["children"])
    return found


@pytest.mark.parametrize("day", ["2014-03-31", "2014-07-01", "2016-01-01", None])
def test_rollup_csv_equals_the_api_at_every_place(filled, client, day):
    url = "/exports/rollup.csv" + (f"?date={day}" if day else "")
    rows = rows_of(client.get(url))
    places = {r["place"] for r in rows}
    assert {"tiny", "opawa", "riccarton", "st-albans", "heathcote", "central"} <= places
    for place in places:
        nodes = api_nodes(client, place, day)
        mine = [r for r in rows if r["place"] == place]
        assert sorted(r["node"] for r in mine) == sorted(nodes)
        for row in mine:
            node = nodes[row["node"]]
            assert row["date"] == (day or row["date"])
            assert (row["kind"], row["title"], row["status"]) == (
                node["kind"], node["title"], node["status"],
            )  # fmt: skip
            assert (row["parent"] or None) == node["parent"]
            for name in ("progress", "expected", "coverage", "value", "target", "baseline"):
                assert number(row[name]) == node.get(name), (place, row["node"], name)
            for name in ("unit", "as_of", "forecast"):
                assert (row[name] or None) == node.get(name), (place, row["node"], name)
            stale = {"": None, "true": True, "false": False}[row["stale"]]
            assert stale == node.get("stale")
    measured = [r for r in rows if r["node"] == "homes-repaired" and r["place"] == "opawa"]
    if day and day >= "2014-03-31":
        assert measured[0]["value"] == "50"


def test_rollup_csv_defaults_to_today_in_christchurch(filled, client):
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo("Pacific/Auckland")).date().isoformat()
    response = client.get("/exports/rollup.csv")
    assert {r["date"] for r in rows_of(response)} == {today}
    assert f'filename="rollup-{today}.csv"' in response.headers["Content-Disposition"]


@pytest.mark.parametrize("bad", ["2014-13-01", "yesterday", "2014-3-1", "99999-01-01"])
def test_a_bad_date_is_refused_with_400(filled, client, bad):
    response = client.get(f"/exports/rollup.csv?date={bad}")
    assert response.status_code == 400
    # A program asked for a file: the refusal is JSON, as the API's are.
    assert response.is_json and "parameter 'date'" in response.get_json()["error"]


def test_an_unknown_export_is_a_json_404_and_the_index_stays_a_page(client):
    missing = client.get("/exports/nothing.csv")
    assert missing.status_code == 404 and missing.is_json
    assert client.get("/exports/").mimetype == "text/html"


# --- the data package --------------------------------------------------------------------


def download_all(client, tmp_path, day="2014-07-01"):
    """Every file into a folder of its own (tmp_path also holds the test's database)."""
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in FILES:
        url = f"/exports/{name}" + ("?date=" + day if name == "rollup.csv" else "")
        response = client.get(url)
        assert response.status_code == 200, name
        (folder / name).write_bytes(response.get_data())
    (folder / "datapackage.json").write_bytes(client.get("/exports/datapackage.json").get_data())
    return folder


def test_every_export_is_valid_against_the_data_package(filled, client, tmp_path):
    folder = download_all(client, tmp_path)
    report = frictionless.validate(folder / "datapackage.json")
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])
    assert report.stats["tasks"] == 5
    package = json.loads((folder / "datapackage.json").read_text())
    assert [r["name"] for r in package["resources"]] == [
        "observations", "revisions", "rollup", "places", "works",
    ]  # fmt: skip
    assert package["licenses"][0]["name"] == "CC-BY-4.0"
    assert {"title": "Earthquake Commission", "path": "http://localhost/agencies/eqc"} in (
        package["sources"]
    )
    assert "City Council" in {s["title"] for s in package["sources"]}
    assert any("Statistics New Zealand" in s.get("description", "") for s in package["sources"])
    for resource in package["resources"]:
        if resource["format"] == "csv":
            header = next(csv.reader(io.StringIO((folder / resource["path"]).read_text())))
            assert [f["name"] for f in resource["schema"]["fields"]] == header
            assert all(f["description"] for f in resource["schema"]["fields"])
        else:
            assert resource["mediatype"] == "application/geo+json"


def test_a_wrong_type_in_a_file_fails_the_validation(filled, client, tmp_path):
    # The check can fail: a value that is not a number is caught.
    folder = download_all(client, tmp_path)
    path = folder / "observations.csv"
    path.write_text(path.read_text().replace(",50,homes,", ",fifty,homes,"))
    report = frictionless.validate(folder / "datapackage.json")
    assert not report.valid
    assert "type-error" in {error.type for task in report.tasks for error in task.errors}


def test_a_value_outside_its_constraints_fails_the_validation(filled, client, tmp_path):
    folder = download_all(client, tmp_path)
    path = folder / "rollup.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")  # one (place, node) twice
    path = folder / "revisions.csv"
    path.write_text(path.read_text().replace(",api,", ",fax,", 1))
    report = frictionless.validate(folder / "datapackage.json")
    found = {(task.name, error.type) for task in report.tasks for error in task.errors}
    assert found == {("rollup", "primary-key"), ("revisions", "constraint-error")}


def test_nothing_private_is_exported(filled, client, tmp_path):
    from tracker.auth import create_user, issue_token

    with Session(filled.extensions["engine"]) as session:
        create_user(session, "staff@eqc.example", "a long password!", "agency", "eqc")
        token = issue_token(session, "eqc")
        session.commit()
    for path in download_all(client, tmp_path).iterdir():
        text = path.read_text(encoding="utf-8")
        assert "@" not in text.replace("@context", ""), path.name
        assert token not in text


# --- GeoJSON (RFC 7946) ------------------------------------------------------------------


def coordinates_text(text: str) -> list[str]:
    """Every number in the file's coordinates, as written."""
    numbers = []

    def walk(value):
        if isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            numbers.append(value)

    for feature in json.loads(text, parse_float=str, parse_int=str)["features"]:
        walk(feature["geometry"]["coordinates"])
    return numbers


def rings(geometry: dict):
    polygons = {"Polygon": [geometry["coordinates"]], "MultiPolygon": geometry["coordinates"]}
    for polygon in polygons.get(geometry["type"], []):
        yield True, polygon[0]
        for hole in polygon[1:]:
            yield False, hole


@pytest.mark.parametrize("name", ["places.geojson", "works.geojson"])
def test_geojson_follows_rfc_7946(filled, client, name):
    response = client.get(f"/exports/{name}")
    assert response.status_code == 200
    assert response.mimetype == "application/geo+json"
    collection = json.loads(response.get_data())
    assert collection["type"] == "FeatureCollection"
    assert "crs" not in collection
    assert collection["features"]
    numbers = coordinates_text(response.get_data(as_text=True))
    assert all(len(n.partition(".")[2]) <= 6 for n in numbers)
    pairs = [float(n) for n in numbers]
    assert all(
        -180 <= x <= 180 and -90 <= y <= 90 for x, y in zip(pairs[::2], pairs[1::2], strict=True)
    )
    polygons = 0
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and shape(feature["geometry"]).is_valid
        for exterior, ring in rings(feature["geometry"]):
            polygons += 1
            assert LinearRing(ring).is_ccw == exterior, feature["id"]
    assert polygons >= 2


def test_places_geojson_lists_every_live_place(filled, client):
    collection = client.get("/exports/places.geojson").get_json(force=True)
    ids = [f["id"] for f in collection["features"]]
    assert ids[0] == "tiny"
    assert {"opawa", "st-albans", "riccarton", "red-zone-park", "heathcote"} <= set(ids)
    opawa = next(f for f in collection["features"] if f["id"] == "opawa")
    assert opawa["properties"] == {
        "id": "opawa", "name": "Ōpāwa", "level": "neighbourhood", "parent": "heathcote",
    }  # fmt: skip


def test_works_geojson_has_the_api_properties_and_rounded_points(filled, client):
    collection = client.get("/exports/works.geojson").get_json(force=True)
    works = {f["id"]: f for f in collection["features"]}
    assert sorted(works) == ["council/p1", "council/sq1", "council/sq2"]
    assert works["council/p1"]["geometry"] == {
        "type": "Point",
        "coordinates": [172.605123, -43.535],
    }
    api = client.get("/api/v1/works?place=tiny").get_json()
    for feature in api["features"]:
        assert works[feature["id"]]["properties"] == feature["properties"]


def test_an_exterior_ring_given_clockwise_is_turned(filled):
    ring = [(0, 0), (0, 1), (1, 1), (1, 0), (0, 0)]  # clockwise
    hole = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8), (0.2, 0.2)]  # counter-clockwise
    from shapely.geometry import Polygon

    geometry = exports.rfc7946(Polygon(ring, [hole]))
    exterior, inner = geometry["coordinates"]
    assert LinearRing(exterior).is_ccw and not LinearRing(inner).is_ccw


# --- formulas --------------------------------------------------------------------------

HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "+SUM(A1:A9)",
    "-2+3",
    "@cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_that_a_spreadsheet_would_run_is_neutralised(text):
    assert exports.csv_cell(text) == "'" + text


@pytest.mark.parametrize(
    ("value", "cell"),
    [(-5.0, "-5"), (-0.25, "-0.25"), (412.0, "412"), (3, "3"), (1e20, "1e+20"), (None, ""),
     (True, "true"), ("Ōpāwa Road", "Ōpāwa Road"), ("a=b", "a=b"), (date(2014, 3, 1), "2014-03-01"),
     (datetime(2014, 3, 1, 1, 2, 3, tzinfo=UTC), "2014-03-01T01:02:03Z")],
)  # fmt: skip
def test_numbers_dates_and_plain_text_are_written_as_they_are(value, cell):
    assert exports.csv_cell(value) == cell


def test_hostile_names_and_titles_reach_the_csv_neutralised(app, client):
    with Session(app.extensions["engine"]) as session:
        session.execute(update(Place).where(Place.id == "opawa").values(name=HOSTILE[0]))
        session.execute(update(Node).where(Node.id == "homes-repaired").values(title=HOSTILE[3]))
        session.execute(update(Node).where(Node.id == "homes-repaired").values(unit=HOSTILE[1]))
        session.commit()
    store(app, "eqc", observations=[observation("homes-repaired", "opawa", "2014-03-31", -1)])
    rows = rows_of(client.get("/exports/rollup.csv?date=2014-04-01"))
    opawa = next(r for r in rows if r["place"] == "opawa" and r["node"] == "homes-repaired")
    assert opawa["place_name"] == "'" + HOSTILE[0]
    assert opawa["title"] == "'" + HOSTILE[3]
    assert opawa["unit"] == "'" + HOSTILE[1]
    assert opawa["value"] == "-1"  # a number, not neutralised
    (value,) = rows_of(client.get("/exports/observations.csv"))
    assert (value["value"], value["unit"]) == ("-1", "'" + HOSTILE[1])


# --- headers and caching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("observations.csv", "text/csv; charset=utf-8"),
        ("revisions.csv", "text/csv; charset=utf-8"),
        ("rollup.csv", "text/csv; charset=utf-8"),
        ("places.geojson", "application/geo+json"),
        ("works.geojson", "application/geo+json"),
        ("datapackage.json", "application/json"),
    ],
)
def test_each_file_has_its_type_a_filename_open_cors_and_an_etag(
    filled, client, name, content_type
):
    response = client.get(f"/exports/{name}")
    assert response.status_code == 200 and response.get_data()
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "public" in response.headers["Cache-Control"]
    assert response.headers["Last-Modified"]
    etag = response.headers["ETag"]
    again = client.get(f"/exports/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    store(filled, "eqc", observations=[observation("homes-repaired", "opawa", "2014-04-30", 1)])
    changed = client.get(f"/exports/{name}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.get_data()


def test_a_compressed_file_streams_and_its_etag_still_revalidates(filled, client):
    import brotli

    plain = client.get("/exports/observations.csv").get_data()
    response = client.get("/exports/observations.csv", headers={"Accept-Encoding": "br"})
    assert response.headers["Content-Encoding"] == "br"
    assert response.is_streamed
    assert brotli.decompress(response.get_data()) == plain
    etag = response.headers["ETag"]
    assert etag.endswith(':br"')
    again = client.get(
        "/exports/observations.csv", headers={"Accept-Encoding": "br", "If-None-Match": etag}
    )
    assert again.status_code == 304


@pytest.mark.parametrize("name", ["rollup.csv", "places.geojson"])
def test_a_file_bounded_by_the_tree_is_served_as_it_was_within_the_allowance(filled, client, name):
    """As pages are (tracker/web/page_cache.py): the file and its ETag as built, until
    the data moved on more than the allowance ago; then built again."""
    filled.config["SETTINGS"].page_stale_seconds = 30
    first = client.get(f"/exports/{name}")
    etag, body = first.headers["ETag"], first.get_data()
    store(filled, "eqc", observations=[observation("homes-repaired", "opawa", "2014-04-30", 7)])
    kept = client.get(f"/exports/{name}")
    assert (kept.headers["ETag"], kept.get_data()) == (etag, body)
    assert not kept.is_streamed  # from memory
    assert client.get(f"/exports/{name}", headers={"If-None-Match": etag}).status_code == 304
    filled.config["SETTINGS"].page_stale_seconds = 0.2
    time.sleep(0.3)
    rebuilt = client.get(f"/exports/{name}", headers={"If-None-Match": etag})
    assert rebuilt.status_code == 200 and rebuilt.headers["ETag"] != etag
    if name == "rollup.csv":  # the new value is in it
        opawa = [r for r in rows_of(rebuilt) if r["place"] == "opawa"]
        assert any(r["node"] == "homes-repaired" and r["as_of"] == "2014-04-30" for r in opawa)


def test_a_file_not_streamed_to_its_end_is_not_kept_and_others_never_are(filled, client):
    filled.config["SETTINGS"].page_stale_seconds = 30
    kept = filled.extensions["kept_exports"]
    response = client.get("/exports/places.geojson", buffered=False)
    next(iter(response.response))  # the first chunk only: the client went away
    response.close()
    assert len(kept._entries) == 0
    for name in ("observations.csv", "revisions.csv", "works.geojson"):
        assert client.get(f"/exports/{name}").status_code == 200
    assert len(kept._entries) == 0
    client.get("/exports/places.geojson").get_data()
    assert len(kept._entries) == 1


def test_every_file_answers_before_any_value_arrives(app, client, tmp_path):
    folder = download_all(client, tmp_path)
    assert frictionless.validate(folder / "datapackage.json").valid
    assert (folder / "observations.csv").read_text().count("\n") == 1  # the header alone
    response = client.get("/exports/observations.csv")
    assert "Last-Modified" not in response.headers and response.get_data()


def test_the_index_page_describes_each_file_and_the_footer_links_it(filled, client):
    page = client.get("/exports/").get_data(as_text=True)
    for name in (*FILES, "datapackage.json"):
        assert f"/exports/{name}" in page
    assert "CC BY 4.0" in page and "How to cite" in page and "Statistics New Zealand" in page
    assert 'href="/exports/"' in client.get("/").get_data(as_text=True)


def test_the_benchmark_still_reads_every_file(filled):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "exports.py"
    spec = importlib.util.spec_from_file_location("bench_exports", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in bench.FILES:
        figures = bench.read(filled, name)
        assert figures["bytes"] > 0 and figures["gzip"] > 0 and figures["seconds"] >= 0


# --- streaming -------------------------------------------------------------------------


def add_observations(session: Session, count: int, start: int = 0) -> None:
    """`count` observations straight into the table (not the write path: this is about size)."""
    batch = Batch(agency_id="eqc", channel="api")
    session.add(batch)
    session.flush()
    places = ["opawa", "st-albans", "riccarton"]
    now = datetime.now(UTC)
    rows = [
        {
            "measure_id": "homes-repaired",
            "place_id": places[i % 3],
            "date": date(1900, 1, 1) + timedelta(days=i // 3),
            "dims_key": "",
            "value": float(i),
            "revisions": 1,
            "batch_id": batch.id,
            "received_at": now,
            "first_received_at": now,
        }
        for i in range(start, start + count)
    ]
    session.execute(insert(Observation), rows)
    session.commit()


def peak_bytes(produce) -> tuple[int, int]:
    """(peak traced memory, characters) while consuming one export."""
    tracemalloc.start()
    try:
        size = sum(len(chunk) for chunk in produce())
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


def test_exports_stream_in_memory_that_does_not_grow_with_the_table(app):
    engine = app.extensions["engine"]
    with Session(engine) as session:
        add_observations(session, 2_000)

        def produce():
            with Session(engine) as own:
                yield from exports.observations_csv(own)

        peak_bytes(produce)  # warm up: imports, compiled statements
        small, small_size = peak_bytes(produce)
        add_observations(session, 38_000, start=2_000)
        large, large_size = peak_bytes(produce)
    assert large_size > 15 * small_size
    # Everything held at once would be about 20 times as much.
    assert large < 3 * small, (small, large)


def test_a_works_export_reads_places_per_chunk_not_per_work(app):
    engine = app.extensions["engine"]
    statements = []

    def count(*_args):
        statements.append(1)

    def run() -> int:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            with Session(engine) as session:
                list(exports.works_geojson(session))
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    store(app, "council", works=[point_work("a")])
    few = run()
    store(app, "council", works=[point_work(f"w{i}") for i in range(30)])
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Work)) == 31
    assert run() == few
