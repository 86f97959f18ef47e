"""Works along a street: the streets each work lies on, kept in WorkStreet.

The tiny city (fixtures/tiny_city) has Ōpāwa Road along 43.535 S (172.601–172.615 E),
Riccarton Avenue along 43.525 S and two School Roads, one in riccarton and one in
st-albans. A work within NEAR_STREET_M (25 m) of a street, or filed under it, is on it.
"""

import json
import random
import shutil
from pathlib import Path

import pytest
import shapely
from pyproj import Transformer
from shapely.affinity import translate
from shapely.geometry import mapping, shape
from sqlalchemy import select, text
from sqlmodel import Session

from tracker.auth import issue_token
from tracker.cli import main
from tracker.errors import NotFound
from tracker.models import Street, Work, WorkStreet
from tracker.places import NEAR_STREET_M, nztm_distances_m
from tracker.settings import Settings
from tracker.submissions import submit_works
from tracker.works import works_on_street

TINY = Path(__file__).parent / "fixtures" / "tiny_city"
_TO_NZTM = Transformer.from_crs("EPSG:4326", "EPSG:2193", always_xy=True)
_FROM_NZTM = Transformer.from_crs("EPSG:2193", "EPSG:4326", always_xy=True)


def north_of(lon: float, lat: float, metres: float) -> list[float]:
    """The point `metres` north (NZTM grid north) of (lon, lat), as [lon, lat]."""
    x, y = _TO_NZTM.transform(lon, lat)
    return list(_FROM_NZTM.transform(x, y + metres))


def point(lon: float, lat: float, metres: float = 0.0) -> dict:
    return {"type": "Point", "coordinates": north_of(lon, lat, metres)}


def row(ref: str, geometry: dict | None = None, street: str | None = None) -> dict:
    work = {"id": ref, "title": f"Work {ref}", "status": "planned"}
    if street is not None:
        work["street"] = street
    else:
        work["geometry"] = geometry
    return work


def send(session: Session, *rows: dict, agency: str = "council") -> None:
    outcome = submit_works(session, agency_id=agency, rows=list(rows), channel="api")
    assert outcome.accepted == len(rows), outcome.rejected
    session.commit()


def on_street(session: Session, street_id: str, limit: int = 500) -> list[str]:
    """Every work on the street, as AGENCY/REF, following the cursor page by page."""
    found, after = [], None
    while True:
        page = works_on_street(session, street_id, after=after, limit=limit)
        found += [f"{w.agency_id}/{w.ref}" for w in page.works]
        if page.after is None:
            return found
        after = page.after


@pytest.fixture
def city(loaded):
    engine, _ = loaded
    with Session(engine, expire_on_commit=False) as session:
        yield session


def test_a_work_20_m_from_a_street_is_on_it_and_30_m_is_not(city):
    send(
        city,
        row("near", point(172.605, -43.535, 20)),
        row("far", point(172.606, -43.535, 30)),
        row("south", point(172.607, -43.535, -20)),
    )
    assert on_street(city, "opawa-road") == ["council/near", "council/south"]
    near = city.scalar(select(Work.id).where(Work.ref == "near"))
    distance = city.scalar(select(WorkStreet.distance_m).where(WorkStreet.work_id == near))
    assert distance == pytest.approx(20, abs=0.5)


def test_a_work_filed_under_a_street_is_on_it_and_not_on_others(city):
    send(city, row("filed", street="Riccarton Avenue"))
    assert on_street(city, "riccarton-avenue") == ["council/filed"]
    assert on_street(city, "opawa-road") == []
    assert city.scalar(select(Work.street_id)) == "riccarton-avenue"


def test_updating_a_works_geometry_moves_it_between_streets(city):
    send(city, row("w1", point(172.605, -43.535, 10)))
    assert on_street(city, "opawa-road") == ["council/w1"]
    send(city, row("w1", point(172.603, -43.525, -15)))
    assert on_street(city, "opawa-road") == []
    assert on_street(city, "riccarton-avenue") == ["council/w1"]
    assert len(city.scalars(select(WorkStreet)).all()) == 1
    # Filed under a street from now on: on it, and off the one it was near.
    send(city, row("w1", street="opawa-road"))
    assert on_street(city, "riccarton-avenue") == []
    assert on_street(city, "opawa-road") == ["council/w1"]


def test_paging_along_a_street_returns_every_work_once_in_agency_and_id_order(city):
    refs = [f"w{i:02d}" for i in range(23)]
    random.Random(4).shuffle(refs)
    near = [row(ref, point(172.602 + i * 0.0005, -43.535, i % 20)) for i, ref in enumerate(refs)]
    send(city, *near[:12], agency="council")
    send(city, *near[12:], agency="eqc")
    send(city, row("x-far", point(172.605, -43.535, 60)))
    expected = sorted(
        [f"council/{w['id']}" for w in near[:12]] + [f"eqc/{w['id']}" for w in near[12:]]
    )
    for limit in (1, 4, 5, 23, 500):
        assert on_street(city, "opawa-road", limit) == expected
    first = works_on_street(city, "opawa-road", limit=5)
    assert (first.total, first.after, len(first.works)) == (23, expected[4], 5)
    second = works_on_street(city, "opawa-road", after=first.after, limit=5)
    assert second.total == 23
    assert [f"{w.agency_id}/{w.ref}" for w in second.works] == expected[5:10]
    last = works_on_street(city, "opawa-road", after=expected[-4], limit=5)
    assert (len(last.works), last.after) == (3, None)
    with pytest.raises(NotFound):
        works_on_street(city, "no-such-road")


def test_the_api_pages_along_a_street_with_next_links(client, loaded):
    engine, _ = loaded
    with Session(engine) as session:
        token = issue_token(session, "council")
        session.commit()
    rows = [row(f"w{i}", point(172.603 + i * 0.0003, -43.535, 5)) for i in range(7)]
    answer = client.post(
        "/api/v1/works", json={"works": rows}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 201, answer.get_json()
    url, seen = "/api/v1/works?street=opawa-road&limit=3", []
    while url:
        page = client.get(url).get_json()
        assert page["total"] == 7
        seen += [feature["id"] for feature in page["features"]]
        url = page["next"]
    assert seen == sorted(f"council/w{i}" for i in range(7))


def _before(session: Session, street_id: str) -> list[str]:
    """What works_on_street answered before WorkStreet: every work in the street's box,
    measured in Python."""
    street = session.get(Street, street_id)
    line = shapely.from_geojson(street.geometry)
    pad = 0.001
    works = [
        w
        for w in session.scalars(select(Work))
        if w.street_id == street_id
        or (
            w.min_lon <= street.max_lon + pad
            and w.max_lon >= street.min_lon - pad
            and w.min_lat <= street.max_lat + pad
            and w.max_lat >= street.min_lat - pad
        )
    ]
    distances = nztm_distances_m(line, [shapely.from_geojson(w.geometry) for w in works])
    return sorted(
        f"{w.agency_id}/{w.ref}"
        for w, d in zip(works, distances, strict=True)
        if w.street_id == street_id or d <= NEAR_STREET_M
    )


def test_every_street_answers_what_measuring_in_python_answered(city):
    rng = random.Random(10)
    rows = []
    for i in range(150):
        lon, lat = rng.uniform(172.6, 172.62), rng.choice((-43.535, -43.525, -43.522, -43.538))
        start = north_of(lon, lat, rng.uniform(-40, 40))
        if i % 3:
            rows.append(row(f"p{i:03d}", {"type": "Point", "coordinates": start}))
        else:
            end = north_of(*start, rng.uniform(-60, 60))
            end[0] += rng.uniform(-0.001, 0.001)
            rows.append(row(f"l{i:03d}", {"type": "LineString", "coordinates": [start, end]}))
    rows += [row("filed-1", street="school-road-riccarton"), row("filed-2", street="Ōpāwa Road")]
    send(city, *rows)
    streets = city.scalars(select(Street.id).order_by(Street.id)).all()
    assert len(streets) == 4
    total = 0
    for street_id in streets:
        assert on_street(city, street_id, limit=7) == _before(city, street_id), street_id
        total += len(_before(city, street_id))
    assert 25 < total < 100  # the sample has works on and off the streets


# --- the gazetteer changes -------------------------------------------------------------


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """The tiny city in a folder of its own, whose streets file tests edit."""
    folder = tmp_path / "city"
    shutil.copytree(TINY, folder)
    return Settings(
        database_url=database_url,
        tree=folder / "tree.yaml",
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        _env_file=None,
    )


def edit_streets(settings: Settings, edit) -> None:
    path = settings.tree.parent / "streets.geojson"
    gazetteer = json.loads(path.read_text(encoding="utf-8"))
    gazetteer["features"] = [f for f in map(edit, gazetteer["features"]) if f is not None]
    path.write_text(json.dumps(gazetteer), encoding="utf-8")


def shifted(feature: dict, degrees: float) -> dict:
    """The feature moved `degrees` north."""
    moved = translate(shape(feature["geometry"]), yoff=degrees)
    return {**feature, "geometry": mapping(moved)}


def test_tracker_init_with_a_changed_gazetteer_measures_the_works_again(
    city, runner, settings, loaded
):
    send(
        city,
        row("on-opawa", point(172.605, -43.535, 20)),
        row("south-of-opawa", point(172.606, -43.536, 10)),
        row("filed", street="riccarton-avenue"),
        row("on-school-north", point(172.603, -43.522, -20)),
        row("on-school-south", point(172.615, -43.538, 15)),
    )
    assert on_street(city, "opawa-road") == ["council/on-opawa"]
    assert on_street(city, "school-road-riccarton") == ["council/on-school-north"]

    def edit(feature):
        fid = feature["properties"]["t50_fid"]
        if fid in (1, 2):
            return shifted(feature, -0.001)  # Ōpāwa Road 111 m south
        if fid == 3:
            return shifted(feature, -0.003)  # Riccarton Avenue 333 m south
        return None if fid == 4 else feature  # the School Road in riccarton goes

    edit_streets(settings, edit)
    answer = runner.invoke(main, ["init"])
    assert answer.exit_code == 0, answer.output
    city.expire_all()
    assert on_street(city, "opawa-road") == ["council/south-of-opawa"]
    # Filed under it: still on it, however far it moved.
    assert on_street(city, "riccarton-avenue") == ["council/filed"]
    filed = city.scalar(select(WorkStreet.distance_m).where(WorkStreet.street_id.like("ricc%")))
    assert filed > 300
    # The School Road left is the only one: it takes the plain id, and its work along.
    with pytest.raises(NotFound):
        works_on_street(city, "school-road-riccarton")
    with pytest.raises(NotFound):
        works_on_street(city, "school-road-st-albans")
    assert on_street(city, "school-road") == ["council/on-school-south"]
    streets = set(city.scalars(select(WorkStreet.street_id)))
    assert streets == {"opawa-road", "riccarton-avenue", "school-road"}

    # The same files again change nothing.
    rows = sorted(tuple(r) for r in city.execute(select(WorkStreet.__table__)))
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert sorted(tuple(r) for r in city.execute(select(WorkStreet.__table__))) == rows


def test_a_large_batch_has_postgresql_read_the_works_statistics_again(city, loaded):
    """Without statistics the planner takes 1,000 new works for a handful (and pages by
    place or street got several times slower); a batch that size runs ANALYZE."""
    engine, _ = loaded
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's planner statistics are seeded by migrate")
    rows = [row(f"w{i:04d}", point(172.602 + (i % 50) * 0.0001, -43.535)) for i in range(1000)]
    send(city, row("first", point(172.603, -43.535)))
    counted = "SELECT reltuples FROM pg_class WHERE relname = :table"
    before = {t: city.scalar(text(counted), {"table": t}) for t in ("work", "workstreet")}
    send(city, *rows)
    after = {t: city.scalar(text(counted), {"table": t}) for t in ("work", "workstreet")}
    assert before != after
    assert after == {"work": 1001, "workstreet": 1001}
