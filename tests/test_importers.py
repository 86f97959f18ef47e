"""Importers: bytes in, plain rows out (no database); paging through a fake fetch."""

import json
from pathlib import Path
from typing import ClassVar

import pytest

from importers import (
    Importer,
    ParseError,
    SourceRow,
    SourceTable,
    get_importer,
    load_importers,
    register,
)
from importers.arcgis import esri_geometry

DOCS = Path(__file__).parent.parent / "docs" / "feeds.md"


def fetch_from(pages: dict[str, bytes], log: list | None = None):
    """A fetch(url, params) that answers from a dict keyed by URL (and offset, if any)."""

    def fetch(url: str, params: dict | None) -> bytes:
        if log is not None:
            log.append((url, params))
        offset = None if params is None else params.get("resultOffset", params.get("offset"))
        return pages[url if offset is None else f"{url}@{offset}"]

    return fetch


def test_every_built_in_format_is_registered_and_documented():
    formats = load_importers()
    assert {"csv", "json", "geojson", "arcgis", "ckan"} <= set(formats)
    docs = DOCS.read_text(encoding="utf-8")
    for name in formats:
        assert f"### `{name}`" in docs, f"docs/feeds.md has no section for format {name!r}"


def test_a_site_format_registers_itself_like_the_built_in_ones():
    @register
    class PipeImporter(Importer):
        format = "pipes"

        def parse(self, body, options=None):
            lines = body.decode().splitlines()
            names = lines[0].split("|")
            return [SourceRow(n, dict(zip(names, line.split("|"), strict=True))) for n, line in
                    enumerate(lines[1:], 2)]  # fmt: skip

    try:
        table = get_importer("pipes").read(fetch_from({"u": b"a|b\n1|2\n"}), "u", {})
        assert table == SourceTable([SourceRow(2, {"a": "1", "b": "2"})], frozenset({"a", "b"}))
    finally:
        del load_importers()["pipes"]


def test_an_unknown_format_is_refused_naming_the_known_ones():
    with pytest.raises(ParseError, match="unknown format 'xml'; known: arcgis, ckan, csv"):
        get_importer("xml")


def test_csv_columns_come_from_the_header_even_without_rows():
    table = get_importer("csv").read(fetch_from({"u": b"place,date\n"}), "u", {})
    assert table == SourceTable([], frozenset({"place", "date"}))


def test_json_reads_a_list_at_a_dotted_path_and_keeps_non_objects_as_problems():
    body = json.dumps({"result": {"items": [{"a": 1}, 5, {"b": 2}]}}).encode()
    rows = get_importer("json").parse(body, {"path": "result.items"})
    assert [(r.number, r.fields, r.problem) for r in rows] == [
        (0, {"a": 1}, None),
        (1, {}, "a record must be an object, found a number"),
        (2, {"b": 2}, None),
    ]
    table = get_importer("json").read(fetch_from({"u": body}), "u", {"path": "result.items"})
    assert table.columns == {"a", "b"}


@pytest.mark.parametrize(
    ("body", "options", "message"),
    [
        (b'{"a": [1', {}, "not valid JSON: Expecting"),
        (b'{"a": 1}', {}, "expected a list of records, found an object"),
        (b'{"a": {"b": []}}', {"path": "a.c"}, "no 'c' under a (path 'a.c')"),
        (b"[]\xff", {}, "not UTF-8"),
    ],
)
def test_json_refuses_a_body_it_cannot_read(body, options, message):
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_importer("json").parse(body, options)


def test_json_says_nothing_about_columns_when_there_are_no_records():
    assert get_importer("json").read(fetch_from({"u": b"[]"}), "u", {}).columns is None


def test_geojson_takes_properties_and_geometry_and_the_feature_id():
    point = {"type": "Point", "coordinates": [172.6, -43.5]}
    body = json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "id": 7, "properties": {"title": "A"}, "geometry": point},
                {"type": "Feature", "id": 8, "properties": {"id": "x-1"}, "geometry": None},
                {"type": "Feature", "properties": [], "geometry": point},
                "nonsense",
            ],
        }
    ).encode()
    rows = get_importer("geojson").parse(body)
    assert (rows[0].fields, rows[0].geometry) == ({"id": 7, "title": "A"}, point)
    assert rows[1].fields == {"id": "x-1"}  # a property wins over the feature's id
    assert rows[2].problem == "the feature's properties are not an object"
    assert rows[3].problem == "not a GeoJSON Feature"


@pytest.mark.parametrize(
    ("esri", "geojson"),
    [
        ({"x": 172.6, "y": -43.5, "z": 3}, {"type": "Point", "coordinates": [172.6, -43.5]}),
        ({"x": "NaN", "y": "NaN"}, None),
        ({"points": [[1, 2], [3, 4]]}, {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}),
        ({"paths": [[[1, 2], [3, 4]]]}, {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}),
        (
            {"paths": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]},
            {"type": "MultiLineString", "coordinates": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]},
        ),
        ({"paths": []}, None),
        (None, None),
    ],
)
def test_esri_geometries_become_geojson(esri, geojson):
    assert esri_geometry(esri) == geojson


def test_esri_rings_become_polygons_with_their_holes_wound_as_geojson_winds():
    outer = [[0, 0], [0, 10], [10, 10], [10, 0], [0, 0]]  # clockwise: an outer ring
    hole = [[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]]  # anticlockwise: a hole
    other = [[20, 20], [20, 30], [30, 30], [30, 20], [20, 20]]
    assert esri_geometry({"rings": [outer, hole]}) == {
        "type": "Polygon",
        "coordinates": [outer[::-1], hole[::-1]],
    }
    assert esri_geometry({"rings": [outer, hole, other]})["coordinates"] == [
        [outer[::-1], hole[::-1]],
        [other[::-1]],
    ]


def esri_answer(ids: list[int], more: bool, **extra) -> bytes:
    return json.dumps(
        {
            "fields": [{"name": "OID", "type": "esriFieldTypeOID"},
                       {"name": "Done", "type": "esriFieldTypeDate"}],
            "features": [{"attributes": {"OID": i, "Done": 1396180800000}, "geometry": None}
                         for i in ids],
            "exceededTransferLimit": more,
            **extra,
        }
    ).encode()  # fmt: skip


def test_arcgis_pages_from_what_came_and_reads_dates_in_the_given_zone():
    pages = {
        "https://gis.example/L/0/query@0": esri_answer([1, 2], True),
        "https://gis.example/L/0/query@2": esri_answer([3], False),
    }
    log: list = []
    table = get_importer("arcgis").read(
        fetch_from(pages, log), "https://gis.example/L/0/", {"timezone": "Pacific/Auckland"}
    )
    assert [r.number for r in table.rows] == [0, 1, 2]
    assert table.columns == {"OID", "Done"}
    # 1396180800000 ms = 2014-03-30 12:00 UTC = 2014-03-31 01:00 in Christchurch
    assert {r.fields["Done"] for r in table.rows} == {"2014-03-31"}
    assert [p["resultOffset"] for _, p in log] == [0, 2]
    utc = get_importer("arcgis").parse(esri_answer([1], False), {"timezone": "UTC"})
    assert utc[0].fields["Done"] == "2014-03-30"


def test_arcgis_geojson_answers_page_on_the_flag_under_properties():
    def page(ids, more):
        features = [{"type": "Feature", "properties": {"d": 1396180800000, "i": i},
                     "geometry": None} for i in ids]  # fmt: skip
        answer = {"type": "FeatureCollection", "features": features}
        if more:
            answer["properties"] = {"exceededTransferLimit": True}
        return json.dumps(answer).encode()

    pages = {"u/query@0": page([1], True), "u/query@1": page([2], False)}
    table = get_importer("arcgis").read(
        fetch_from(pages), "u", {"f": "geojson", "date_fields": ["d"], "timezone": "UTC"}
    )
    assert [(r.fields["i"], r.fields["d"]) for r in table.rows] == [
        (1, "2014-03-30"),
        (2, "2014-03-30"),
    ]


def test_arcgis_refuses_a_server_that_says_more_but_sends_nothing():
    pages = {"u/query@0": esri_answer([], True)}
    with pytest.raises(ParseError, match="says more records follow but holds none"):
        get_importer("arcgis").read(fetch_from(pages), "u", {})


def test_a_file_url_of_a_paged_format_reads_numbered_page_files(tmp_path):
    (tmp_path / "page-1.json").write_bytes(esri_answer([1], True))
    (tmp_path / "page-2.json").write_bytes(esri_answer([2], False))
    log: list = []

    def fetch(url, params):
        log.append((url, params))
        return Path(url[5:]).read_bytes()

    table = get_importer("arcgis").read(fetch, f"file:{tmp_path}", {})
    assert [r.fields["OID"] for r in table.rows] == [1, 2]
    assert log == [(f"file:{tmp_path}/page-1.json", None), (f"file:{tmp_path}/page-2.json", None)]


def ckan_answer(records, total, **result) -> bytes:
    fields = [{"id": "_id", "type": "int"}, {"id": "when", "type": "timestamp"}]
    return json.dumps(
        {
            "success": True,
            "result": {"records": records, "fields": fields, "total": total, **result},
        }
    ).encode()


def test_ckan_pages_until_the_total_is_read_and_trims_timestamps():
    pages = {
        "u@0": ckan_answer([{"_id": 1, "when": "2014-03-31T00:00:00"}], 2),
        "u@1": ckan_answer([{"_id": 2, "when": "2014-04-30T00:00:00"}], 2),
    }
    log: list = []
    table = get_importer("ckan").read(fetch_from(pages, log), "u", {"resource_id": "r1"})
    assert [r.fields["when"] for r in table.rows] == ["2014-03-31", "2014-04-30"]
    assert table.columns == {"when"}  # the DataStore's own _id is not the publisher's
    assert log[0] == ("u", {"offset": 0, "limit": 1000, "resource_id": "r1"})


def test_ckan_reads_on_to_an_empty_page_when_the_total_is_an_estimate():
    pages = {
        "u@0": ckan_answer([{"_id": 1}], 1, total_was_estimated=True),
        "u@1": ckan_answer([{"_id": 2}], 1, total_was_estimated=True),
        "u@2": ckan_answer([], 1, total_was_estimated=True),
    }
    assert len(get_importer("ckan").read(fetch_from(pages), "u", {}).rows) == 2


def test_ckan_reports_a_refusal_without_repeating_its_message():
    body = b'{"success": false, "error": {"message": "Resource not found", "__type": "x"}}'
    with pytest.raises(ParseError, match="CKAN refused the request") as refused:
        get_importer("ckan").parse(body)
    assert "Resource not found" not in refused.value.message


def test_the_base_importer_reads_one_answer_and_collects_columns():
    class Lines(Importer):
        format: ClassVar[str] = "lines"  # not registered: only the base behaviour is used

        def parse(self, body, options=None):
            return [SourceRow(i, {w: 1}) for i, w in enumerate(body.decode().split())]

    table = Lines().read(fetch_from({"u": b"a b a"}), "u", {})
    assert table.columns == {"a", "b"} and len(table.rows) == 3
