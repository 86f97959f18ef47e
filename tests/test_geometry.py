"""tracker.geometry: one reader for GeoJSON, WKT and lon/lat, with one wording."""

import json

import pytest

from tracker.geometry import NOT_A_GEOMETRY, lon_lat, parse_geometry

POINT = {"type": "Point", "coordinates": [172.63, -43.53]}


@pytest.mark.parametrize(
    "value",
    [POINT, json.dumps(POINT), f"  {json.dumps(POINT)} ", "POINT (172.63 -43.53)"],
    ids=["geojson", "geojson-text", "geojson-text-padded", "wkt"],
)
def test_geojson_and_wkt_give_the_same_shape(value):
    shape, problem = parse_geometry(value)
    assert problem is None
    assert (shape.geom_type, shape.x, shape.y) == ("Point", 172.63, -43.53)


@pytest.mark.parametrize(
    "value",
    ["", "nowhere", "{not json", "[1, 2]", 5, ["POINT (1 2)"], {"type": "Nowhere"},
     {"type": "Point", "coordinates": "x"}],
)  # fmt: skip
def test_anything_else_is_refused_in_one_wording(value):
    assert parse_geometry(value) == (None, NOT_A_GEOMETRY)


def test_lon_lat_reads_numbers_and_their_text():
    point, problem = lon_lat("172.63", -43.53)
    assert problem is None
    assert (point.x, point.y) == (172.63, -43.53)


@pytest.mark.parametrize(("lon", "lat"), [("east", "-43.5"), ("172.6", ""), (None, 1)])
def test_lon_lat_refuses_what_is_not_a_number(lon, lat):
    assert lon_lat(lon, lat) == (None, f"lon and lat must be numbers: {lon!r}, {lat!r}")


def test_a_works_mark_on_the_city_map_lies_on_its_line_and_is_kept_by_its_text():
    from shapely.geometry import LineString, Point

    from tracker.maps import _point_of_text, point_of

    line = {"type": "LineString", "coordinates": [[172.60, -43.53], [172.62, -43.53]]}
    text = json.dumps(line)
    mark = point_of(text)
    assert mark["type"] == "Point"
    assert LineString(line["coordinates"]).distance(Point(mark["coordinates"])) < 1e-9
    before = _point_of_text.cache_info().hits
    mark["coordinates"][0] = 0.0  # the caller's copy: the kept point is not changed
    assert point_of(text) != mark and _point_of_text.cache_info().hits == before + 1
