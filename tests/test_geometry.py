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
