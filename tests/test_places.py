"""Boundaries, streets, the place tree in the database, locating and name search."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import shapely
from shapely.geometry import LineString, MultiLineString
from sqlalchemy import func
from sqlmodel import select

from tracker.models import Agency, Batch, Place, Street, StreetPlace, Work
from tracker.places import (
    Boundary,
    PlacesError,
    StreetRecord,
    area_ids,
    list_places,
    locate_point,
    place_rows,
    read_boundaries,
    read_streets,
    search_places,
    search_streets,
    share_by_place,
    store_places,
)

TINY = Path(__file__).parent / "fixtures" / "tiny_city"
CHRISTCHURCH = Path(__file__).parent.parent / "data" / "christchurch"
LAT = -43.535  # a parallel through opawa and st-albans
METRE = 1 / 80_800  # degrees of longitude per metre at LAT, near enough for test geometry


def tiny_boundaries() -> list[Boundary]:
    return read_boundaries(
        TINY / "neighbourhoods.geojson",
        id_property="id",
        name_property="name",
        area_property="ward",
    )


def tiny_streets() -> list[StreetRecord]:
    return read_streets(TINY / "streets.geojson", tiny_boundaries())


def feature(geometry: dict | None, **properties) -> dict:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def line(*coordinates) -> dict:
    return {"type": "LineString", "coordinates": [list(c) for c in coordinates]}


def square(lon: float, lat: float, size: float = 0.01) -> dict:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def write(tmp_path: Path, content: object, name: str = "file.geojson") -> Path:
    path = tmp_path / name
    text = content if isinstance(content, str) else json.dumps(content)
    path.write_text(text, encoding="utf-8")
    return path


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def streets_from(tmp_path: Path, *features: dict) -> list[StreetRecord]:
    return read_streets(write(tmp_path, collection(*features)), tiny_boundaries())


# --- boundaries ---------------------------------------------------------------------------


def test_read_boundaries_tiny_city():
    boundaries = tiny_boundaries()
    assert [b.id for b in boundaries] == ["opawa", "st-albans", "riccarton", "red-zone-park"]
    assert boundaries[0].name == "Ōpāwa"
    assert boundaries[0].area == "Heathcote"
    assert boundaries[0].label is None


def test_read_boundaries_takes_label_point(tmp_path):
    path = write(
        tmp_path,
        collection(
            feature(square(172.6, -43.54), id="a", name="A", label_lon=172.605, label_lat=-43.535)
        ),
    )
    [boundary] = read_boundaries(path, id_property="id", name_property="name")
    assert boundary.label == (172.605, -43.535)


def test_read_boundaries_collapses_whitespace_in_names(tmp_path):
    # A line break in a gazetteer's name would reach headings, map labels and mail subjects.
    hostile = feature(
        square(172.6, -43.54), id="a", name=" Upper\r\n  Riccarton\t", ward="Ward\nOne"
    )
    path = write(tmp_path, collection(hostile))
    [boundary] = read_boundaries(path, id_property="id", name_property="name", area_property="ward")
    assert (boundary.name, boundary.area) == ("Upper Riccarton", "Ward One")


BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json {", "file.geojson: not readable GeoJSON"),
        (
            {"type": "Feature", "geometry": None},
            "file.geojson: expected a GeoJSON FeatureCollection",
        ),
        (collection(), "file.geojson: the FeatureCollection has no features"),
        (
            collection(
                feature(square(0, 0), id="a", name="A"),
                feature({"type": "Point", "coordinates": [0, 0]}, id="b", name="B"),
            ),
            "feature 1 (b): geometry must be a Polygon or MultiPolygon, got 'Point'",
        ),
        (
            collection(feature(square(0, 0), id="a", name="A"), feature(BOWTIE, id="b", name="B")),
            "feature 1 (b): invalid geometry (Self-intersection",
        ),
        (
            collection(feature(square(0, 0), id="a", name="A"), feature(square(1, 0), name="B")),
            "feature 1: property 'id' must be a lower-case slug",
        ),
        (
            collection(
                feature(square(0, 0), id="a", name="A"),
                feature(square(1, 0), id="a", name="A again"),
            ),
            "feature 1 (a): duplicate id 'a'",
        ),
        (collection(feature(square(0, 0), id="a")), "feature 0 (a): property 'name' is missing"),
        (collection(feature(square(200, 0), id="a", name="A")), "feature 0 (a): coordinates are"),
        (
            collection(feature(square(0, 0), id="a", name="A", label_lon="east", label_lat=0)),
            "feature 0 (a): label_lon/label_lat must be",
        ),
        (collection(["not", "a", "feature"]), "feature 0: not a GeoJSON Feature"),
    ],
)
def test_read_boundaries_refuses(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(PlacesError) as refused:
        read_boundaries(path, id_property="id", name_property="name")
    assert refused.value.message.startswith(f"{path}: ")
    assert message in refused.value.message


def test_read_boundaries_refuses_missing_area(tmp_path):
    path = write(tmp_path, collection(feature(square(0, 0), id="a", name="A")))
    with pytest.raises(PlacesError, match=r"feature 0 \(a\): property 'ward' is missing"):
        read_boundaries(path, id_property="id", name_property="name", area_property="ward")


# --- streets: reading -------------------------------------------------------------------


def test_read_streets_tiny_city():
    streets = {s.id: s for s in tiny_streets()}
    # the unnamed segment is not a street
    assert sorted(streets) == [
        "opawa-road",
        "riccarton-avenue",
        "school-road-riccarton",
        "school-road-st-albans",
    ]
    opawa = streets["opawa-road"]
    assert opawa.name == "Ōpāwa Road"
    assert len(opawa.geometry.geoms) == 2  # two segments 20 m apart, one street
    assert opawa.place_ids == ("opawa", "st-albans")
    assert opawa.main_place_id == "opawa"  # 710 m of it in opawa, 400 m in st-albans
    assert opawa.length_m == pytest.approx(1111, abs=5)
    assert isinstance(opawa.geometry, MultiLineString)
    assert streets["riccarton-avenue"].place_ids == ("riccarton",)
    assert streets["school-road-st-albans"].name == "School Road"


@pytest.mark.parametrize(
    ("gap_m", "streets"),
    [(0, 1), (20, 1), (45, 1), (55, 2), (5000, 2)],
)
def test_segments_join_when_ends_are_within_50_m(tmp_path, gap_m, streets):
    start = 172.605 + gap_m * METRE
    found = streets_from(
        tmp_path,
        feature(line((172.601, LAT), (172.605, LAT)), name="GAP ROAD"),
        feature(line((start, LAT), (start + 0.001, LAT)), name="GAP ROAD"),
    )
    assert len(found) == streets
    assert len({s.id for s in found}) == streets


def test_branch_meeting_the_middle_of_a_same_named_segment_joins(tmp_path):
    # LINZ does not always split a road where a same-named branch leaves it
    found = streets_from(
        tmp_path,
        feature(line((172.601, LAT), (172.609, LAT)), name="TEE ROAD"),
        feature(line((172.605, LAT), (172.605, LAT + 0.003)), name="TEE ROAD"),
    )
    assert [s.id for s in found] == ["tee-road"]


def test_far_apart_pieces_get_their_neighbourhood_then_a_number(tmp_path):
    found = streets_from(
        tmp_path,
        feature(line((172.601, -43.531), (172.602, -43.531)), name="BEACH ROAD"),
        feature(line((172.601, -43.539), (172.603, -43.539)), name="BEACH ROAD"),
        feature(line((172.611, -43.535), (172.612, -43.535)), name="BEACH ROAD"),
        feature(line((172.701, -43.535), (172.702, -43.535)), name="BEACH ROAD"),
    )
    # the longer of the two opawa pieces keeps the plain suffix; the one outside every
    # neighbourhood has no suffix to take
    assert {s.id: s.geometry.length for s in found} == {
        "beach-road": pytest.approx(0.001),
        "beach-road-opawa": pytest.approx(0.002),
        "beach-road-opawa-2": pytest.approx(0.001),
        "beach-road-st-albans": pytest.approx(0.001),
    }


def test_names_compare_folded_and_keep_the_first_spelling(tmp_path):
    found = streets_from(
        tmp_path,
        feature(line((172.601, LAT), (172.605, LAT)), name="ŌPĀWA ROAD"),
        feature(line((172.605, LAT), (172.609, LAT)), name="Opawa  road"),
    )
    assert [(s.id, s.name) for s in found] == [("opawa-road", "Ōpāwa Road")]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("ŌPĀWA ROAD", "Ōpāwa Road"),
        ("MCLEANS ISLAND ROAD", "McLeans Island Road"),
        ("O'BRIENS ROAD", "O'Briens Road"),
        ("STATE HIGHWAY 73A", "State Highway 73A"),
        ("QUEEN ELIZABETH II DRIVE", "Queen Elizabeth II Drive"),
        ("Hagley Avenue", "Hagley Avenue"),
        ("deans avenue", "deans avenue"),
    ],
)
def test_street_names_in_capitals_get_title_case(tmp_path, source, name):
    [street] = streets_from(tmp_path, feature(line((172.601, LAT), (172.605, LAT)), name=source))
    assert street.name == name


def test_street_outside_every_neighbourhood_is_kept(tmp_path):
    [street] = streets_from(tmp_path, feature(line((172.7, LAT), (172.71, LAT)), name="FAR ROAD"))
    assert (street.id, street.main_place_id, street.place_ids) == ("far-road", None, ())
    assert street.length_m == pytest.approx(806, abs=5)  # metres in NZTM, not degrees


def test_a_few_metres_over_a_border_is_not_lying_in_that_neighbourhood(tmp_path):
    # ends 2 m into st-albans, as side streets do at a boundary road
    [street] = streets_from(
        tmp_path, feature(line((172.605, LAT), (172.61 + 2 * METRE, LAT)), name="SIDE STREET")
    )
    assert street.place_ids == ("opawa",)


def test_unnamed_segments_are_skipped(tmp_path):
    assert (
        streets_from(
            tmp_path,
            feature(line((172.601, LAT), (172.605, LAT)), name=""),
            feature(line((172.601, LAT), (172.605, LAT))),
            feature(line((172.601, LAT), (172.605, LAT)), name=" - "),
        )
        == []
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2", "file.geojson: not readable GeoJSON"),
        ({"type": "FeatureCollection"}, "file.geojson: the FeatureCollection has no features"),
        (
            collection(
                feature(line((172.6, LAT), (172.61, LAT)), name="A ROAD"),
                feature({"type": "Point", "coordinates": [172.6, LAT]}, name="B ROAD"),
            ),
            "feature 1 (B ROAD): geometry must be a LineString or MultiLineString, got 'Point'",
        ),
        (
            collection(feature(square(172.6, LAT), name="C ROAD")),
            "feature 0 (C ROAD): geometry must be a LineString or MultiLineString, got 'Polygon'",
        ),
        (
            collection(feature(None, name="D ROAD")),
            "feature 0 (D ROAD): geometry must be a LineString or MultiLineString, got None",
        ),
        (
            collection(feature(line((172.6, LAT), (1172.6, LAT)), name="E ROAD")),
            "feature 0 (E ROAD): coordinates are not WGS84 longitude/latitude",
        ),
        (
            collection(feature(line((172.6, LAT), (float("nan"), LAT)), name="F ROAD")),
            "feature 0 (F ROAD): coordinates are not WGS84 longitude/latitude",
        ),
        (
            collection(feature(line((172.6, LAT)), name="G ROAD")),
            "feature 0 (G ROAD): unreadable geometry",
        ),
        (
            collection(feature(line(("east", "south"), (172.6, LAT)), name="H ROAD")),
            "feature 0 (H ROAD): unreadable geometry",
        ),
        (
            collection(feature(line((172.6, LAT), (172.61, LAT)), name=7)),
            "feature 0: property 'name' must be text, got 7",
        ),
        (
            collection(feature(line((172.6, LAT), (172.61, LAT)), name="LONG " * 30)),
            "name longer than 100 characters",
        ),
    ],
)
def test_read_streets_refuses(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(PlacesError) as refused:
        read_streets(path, tiny_boundaries())
    assert refused.value.message.startswith(f"{path}: ")
    assert message in refused.value.message


# --- the place tree ------------------------------------------------------------------------


def test_place_rows_build_city_areas_and_neighbourhoods():
    rows = {r["id"]: r for r in place_rows("tiny", "Tiny City", tiny_boundaries())}
    assert {(i, r["level"], r["parent_id"]) for i, r in rows.items()} == {
        ("tiny", "city", None),
        ("heathcote", "area", "tiny"),
        ("central", "area", "tiny"),
        ("opawa", "neighbourhood", "heathcote"),
        ("st-albans", "neighbourhood", "heathcote"),
        ("riccarton", "neighbourhood", "central"),
        ("red-zone-park", "neighbourhood", "central"),
    }
    city = rows["tiny"]
    assert shapely.from_geojson(city["geometry"]).area == pytest.approx(0.0004)
    assert (city["min_lon"], city["min_lat"], city["max_lon"], city["max_lat"]) == pytest.approx(
        (172.60, -43.54, 172.62, -43.52)
    )
    assert shapely.from_geojson(rows["heathcote"]["geometry"]).area == pytest.approx(0.0002)
    opawa = rows["opawa"]
    assert (opawa["name"], opawa["search_key"]) == ("Ōpāwa", "opawa")
    label = shapely.Point(opawa["label_lon"], opawa["label_lat"])
    assert shapely.from_geojson(opawa["geometry"]).contains(label)
    # coordinates rounded for display: no 172.60999999999999 from the file
    assert "172.61," in opawa["display_geometry"]


def test_display_geometry_is_simplified_and_valid():
    ring = [(172.6 + i * 1e-5, -43.54 + 1e-6 * (i % 2)) for i in range(1000)]
    ring += [(172.61, -43.53), (172.6, -43.53), ring[0]]
    wiggly = Boundary("w", "Wiggly", None, shapely.Polygon(ring))
    row = place_rows("c", "C", [wiggly])[-1]
    display = shapely.from_geojson(row["display_geometry"])
    assert display.is_valid
    assert len(display.exterior.coords) < 10 < len(ring)
    assert shapely.from_geojson(row["geometry"]).equals(wiggly.geometry)


def test_area_named_like_a_neighbourhood_gets_a_suffix():
    square_ = shapely.box(0, 0, 1, 1)
    boundaries = [
        Boundary("riccarton", "Riccarton", "Riccarton", square_),
        Boundary("fendalton", "Fendalton", "Fendalton", square_),
        Boundary("tiny", "Tiny", "Tiny", square_),
    ]
    assert area_ids("city", boundaries) == {
        "Fendalton": "fendalton-area",
        "Riccarton": "riccarton-area",
        "Tiny": "tiny-area",
    }


def test_place_rows_need_a_boundary():
    with pytest.raises(PlacesError, match="no neighbourhoods"):
        place_rows("city", "City", [])


# --- the database --------------------------------------------------------------------------


def store_tiny(session, streets=None) -> None:
    store_places(
        session,
        city_id="tiny",
        city_name="Tiny City",
        boundaries=tiny_boundaries(),
        streets=tiny_streets() if streets is None else streets,
    )
    session.commit()


def snapshot(session) -> dict:
    """Every row of the place and street tables."""
    return {
        model.__name__: sorted(
            (tuple(r.model_dump().items()) for r in session.exec(select(model))), key=repr
        )
        for model in (Place, Street, StreetPlace)
    }


def street(name: str, street_id: str | None = None, places=("opawa",)) -> StreetRecord:
    """A street record made directly, for search tests."""
    geometry = MultiLineString([[(172.601, LAT), (172.602, LAT)]])
    return StreetRecord(
        street_id or name.lower().replace(" ", "-"),
        name,
        geometry,
        80.0,
        places[0] if places else None,
        tuple(places),
    )


def test_store_places_twice_changes_nothing(session):
    store_tiny(session)
    first = snapshot(session)
    assert len(first["Place"]) == 7
    assert len(first["Street"]) == 4
    assert len(first["StreetPlace"]) == 5
    store_tiny(session)
    assert snapshot(session) == first


def without_red_zone_park() -> list[Boundary]:
    return [b for b in tiny_boundaries() if b.id != "red-zone-park"]


def test_store_places_retires_missing_places_and_replaces_streets(session):
    store_tiny(session)
    changes = store_places(
        session,
        city_id="tiny",
        city_name="Tiny City",
        boundaries=without_red_zone_park(),
        streets=[street("New Lane", places=("opawa", "st-albans"))],
    )
    session.commit()
    assert (changes.retired, changes.changed) == (("red-zone-park",), True)
    assert session.get(Place, "red-zone-park").retired_at is not None  # kept, for history
    assert session.exec(select(Street.id)).all() == ["new-lane"]
    pairs = session.exec(select(StreetPlace.street_id, StreetPlace.place_id)).all()
    assert sorted(pairs) == [("new-lane", "opawa"), ("new-lane", "st-albans")]


def test_a_retired_place_comes_back_with_the_boundaries_that_have_it(session):
    store_tiny(session)
    store_places(session, city_id="tiny", city_name="Tiny", boundaries=without_red_zone_park())
    back = store_places(session, city_id="tiny", city_name="Tiny", boundaries=tiny_boundaries())
    session.commit()
    assert (back.retired, back.changed) == ((), True)
    assert session.get(Place, "red-zone-park").retired_at is None
    again = store_places(session, city_id="tiny", city_name="Tiny", boundaries=tiny_boundaries())
    assert (again.retired, again.changed, again.redrawn) == ((), False, ())


def test_a_retired_place_is_not_listed_searched_or_given_works(session):
    store_tiny(session, streets=[street("Park Lane", places=("red-zone-park", "riccarton"))])
    # A new boundaries file without its gazetteer: the street keeps its old links.
    store_places(session, city_id="tiny", city_name="Tiny City", boundaries=without_red_zone_park())
    session.commit()
    assert "red-zone-park" not in [p["id"] for p in list_places(session)]
    assert search_places(session, "red zone") == []
    assert search_streets(session, "park lane")[0]["places"] == ["riccarton"]
    assert locate_point(session, 172.615, -43.525) is None
    across = LineString([(172.605, -43.525), (172.615, -43.525)])  # riccarton, then the park
    assert share_by_place(session, across) == {"riccarton": 1.0}


def test_store_places_says_where_boundaries_moved(session):
    store_tiny(session)
    moved = [
        replace(b, geometry=shapely.box(172.6, -43.53, 172.62, -43.52))
        if b.id == "riccarton"
        else b
        for b in without_red_zone_park()
    ]
    changes = store_places(session, city_id="tiny", city_name="Tiny City", boundaries=moved)
    boxes = {tuple(round(v, 6) for v in box) for box in changes.redrawn}
    assert boxes == {
        (172.6, -43.53, 172.62, -43.52),  # riccarton now
        (172.6, -43.53, 172.61, -43.52),  # riccarton before
        (172.61, -43.53, 172.62, -43.52),  # red-zone-park, gone
    }


def test_store_places_without_streets_leaves_streets_alone(session):
    store_tiny(session)
    store_places(session, city_id="tiny", city_name="Tiny City", boundaries=tiny_boundaries())
    session.commit()
    assert session.exec(select(func.count()).select_from(Street)).one() == 4


def test_store_places_keeps_a_street_that_a_work_refers_to(session):
    store_tiny(session)
    session.add(Agency(id="scirt", name="SCIRT"))
    session.flush()
    batch = Batch(agency_id="scirt", channel="api")
    session.add(batch)
    session.flush()
    session.add(
        Work(
            agency_id="scirt",
            ref="w1",
            title="Relay",
            status="planned",
            geometry="{}",
            street_id="riccarton-avenue",
            batch_id=batch.id,
            min_lon=0,
            min_lat=0,
            max_lon=0,
            max_lat=0,
        )
    )
    session.commit()
    store_tiny(session, streets=[])
    assert session.exec(select(Street.id)).all() == ["riccarton-avenue"]
    assert session.exec(select(StreetPlace.street_id)).all() == ["riccarton-avenue"]


def test_store_places_updates_a_changed_street(session):
    store_tiny(session)
    store_tiny(session, streets=[street("Ōpāwa Road", "opawa-road", places=("st-albans",))])
    assert session.get(Street, "opawa-road").main_place_id == "st-albans"
    assert session.exec(select(StreetPlace.place_id)).all() == ["st-albans"]


def test_list_places(session):
    store_tiny(session)
    places = list_places(session)
    assert [p["id"] for p in places] == [
        "tiny",
        "central",
        "heathcote",
        "opawa",
        "red-zone-park",
        "riccarton",
        "st-albans",
    ]
    assert places[3]["parent_id"] == "heathcote"
    assert places[3]["geometry"]["type"] == "Polygon"
    assert "geometry" not in list_places(session, with_geometry=False)[0]


@pytest.mark.parametrize(
    ("lon", "lat", "place"),
    [
        (172.605, -43.535, "opawa"),
        (172.615, -43.525, "red-zone-park"),
        (172.605, -43.53, "opawa"),  # on the opawa / riccarton border: first by id
        (172.7, -43.535, None),
        (float("nan"), -43.535, None),
    ],
)
def test_locate_point(session, lon, lat, place):
    store_tiny(session)
    assert locate_point(session, lon, lat) == place


# --- search -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("opawa", ["opawa-road"]),
        ("Ōpāwa", ["opawa-road"]),
        ("ŌPĀWA ro", ["opawa-road"]),
        ("riccarton av", ["riccarton-avenue"]),
        ("RICC", ["riccarton-avenue"]),
        ("ave ricc", ["riccarton-avenue"]),
        ("avenue", ["riccarton-avenue"]),
        ("venue", []),  # inside a word, not at its start
        ("road", ["opawa-road", "school-road-riccarton", "school-road-st-albans"]),
        ("school road", ["school-road-riccarton", "school-road-st-albans"]),
        ("", []),
        ("   ", []),
        ("%", []),
        ("_", []),
        ("-- !", []),
        ("r%d", []),  # a LIKE wildcard would match "road"
        ("sc_ool", []),
    ],
)
def test_search_streets(session, q, found):
    store_tiny(session)
    assert [s["id"] for s in search_streets(session, q)] == found


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("opawa rd", ["opawa-road"]),  # the report form's own example
        ("OPAWA RD", ["opawa-road"]),
        ("school rd", ["school-road-riccarton", "school-road-st-albans"]),
        ("rd", ["opawa-road", "school-road-riccarton", "school-road-st-albans"]),
        ("ro", ["opawa-road", "school-road-riccarton", "school-road-st-albans"]),
        ("riccarton rd", []),  # there is only an avenue
        ("opawa tce", []),
    ],
)
def test_residents_pages_take_street_type_abbreviations(session, q, found):
    store_tiny(session)
    assert [s["id"] for s in search_streets(session, q, abbreviations=True)] == found


def test_without_abbreviations_every_word_must_start_a_word_as_the_contract_says(session):
    store_tiny(session)
    assert search_streets(session, "opawa rd") == []
    assert [s["id"] for s in search_streets(session, "opawa ro")] == ["opawa-road"]


def test_an_abbreviated_name_ranks_as_the_exact_name(session):
    store_tiny(session, streets=[street(name) for name in ("Park Road", "Parkside Road", "Park")])
    found = search_streets(session, "park rd", abbreviations=True)
    assert [s["name"] for s in found] == ["Park Road", "Parkside Road"]


def test_search_streets_answer_shape(session):
    store_tiny(session)
    assert search_streets(session, "opawa road") == [
        {"id": "opawa-road", "name": "Ōpāwa Road", "places": ["opawa", "st-albans"]}
    ]


def test_search_streets_lists_the_main_place_first(session):
    store_tiny(session, streets=[street("Rose Street", places=("st-albans", "opawa"))])
    assert search_streets(session, "rose")[0]["places"] == ["st-albans", "opawa"]


RANKED = ["Park", "Park Lane", "Park Road", "Park Terrace", "Parkside Avenue", "Deer Park Lane"]


@pytest.mark.parametrize(
    ("q", "limit", "found"),
    [
        ("park", 20, RANKED),
        ("PARK", 3, RANKED[:3]),
        ("park lane", 20, ["Park Lane", "Deer Park Lane"]),
        ("park", 0, []),
        ("deer", 20, ["Deer Park Lane"]),
    ],
)
def test_search_ranks_exact_then_prefix_then_shorter_then_alphabetical(session, q, limit, found):
    store_tiny(session, streets=[street(name) for name in reversed(RANKED)])
    assert [s["name"] for s in search_streets(session, q, limit=limit)] == found


def test_search_limit_is_twenty_by_default(session):
    store_tiny(session, streets=[street(f"Lane {i}") for i in range(25)])
    assert len(search_streets(session, "lane")) == 20


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("opawa", [("opawa", "neighbourhood")]),
        ("heath", [("heathcote", "area")]),
        ("TINY CITY", [("tiny", "city")]),
        ("city", [("tiny", "city")]),
        ("r", [("riccarton", "neighbourhood"), ("red-zone-park", "neighbourhood")]),
        ("%", []),
    ],
)
def test_search_places(session, q, found):
    store_tiny(session)
    assert [(p["id"], p["level"]) for p in search_places(session, q)] == found


# --- the real Christchurch data --------------------------------------------------------------


@pytest.mark.slow
def test_christchurch_data(session):
    boundaries = read_boundaries(
        CHRISTCHURCH / "neighbourhoods.geojson", id_property="id", name_property="name"
    )
    streets = read_streets(CHRISTCHURCH / "streets.geojson", boundaries)
    assert len(boundaries) == 126
    assert 4_000 <= len(streets) <= 5_087  # 4,381 names, some split, 5,087 named segments
    school = [s for s in streets if s.name == "School Road"]
    assert len(school) >= 2
    assert all(s.id.startswith("school-road-") for s in school)
    store_places(
        session,
        city_id="christchurch",
        city_name="Christchurch / Ōtautahi",
        boundaries=boundaries,
        streets=streets,
    )
    session.commit()
    [opawa] = search_streets(session, "Ōpāwa Road")
    assert (opawa["id"], opawa["name"]) == ("opawa-road", "Opawa Road")
    assert "opawa" in opawa["places"]
    assert locate_point(session, 172.6363, -43.5321) == "cathedral-square"


def test_locating_a_batch_agrees_with_locating_each_geometry(session):
    """shares_by_place (one read of the neighbourhoods for a whole batch) gives what
    share_by_place gives each geometry: borders, corners, outside, lines and polygons."""
    from shapely.geometry import Point, Polygon

    from tracker.places import shares_by_place

    store_tiny(session)
    session.commit()
    steps = [172.595 + i * 0.0025 for i in range(12)]
    geometries = [Point(lon, lat) for lon in steps for lat in (-43.545, -43.54, -43.535, -43.53)]
    geometries += [
        LineString([(172.601, -43.535), (172.619, -43.525)]),
        LineString([(172.6, -43.53), (172.62, -43.53)]),  # along a border
        Polygon([(172.605, -43.538), (172.615, -43.538), (172.615, -43.522), (172.605, -43.522)]),
        Point(170.0, -40.0),
    ]
    expected = [share_by_place(session, geometry) for geometry in geometries]
    assert shares_by_place(session, geometries) == expected
    assert sum(1 for shares in expected if shares) > len(geometries) // 2  # most are inside
