"""Locating: the live neighbourhood holding a point, and a geometry's shares by place.

Also a street by id or name, the streets near a geometry, the city's extent, and
distances in metres (NZTM2000).
"""

import math
from functools import lru_cache

import numpy as np
import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from tracker.models import Place, Street
from tracker.places.streets import _nztm_projector
from tracker.text import search_key

NEAR_STREET_M = 25.0  # a work this close to a street is "on" it, whatever it was filed under
# Streets whose box comes this close (degrees, about 80-110 m here) to a geometry's box are
# measured exactly; it is wider than NEAR_STREET_M anywhere south of 77°.
_NEAR_PAD = 0.001
_IN_CHUNK = 5000  # ids in one IN (…), as the write path chunks them

# Retired places keep their rows for history; nothing reads them as places any more.
_live = Place.retired_at.is_(None)


def locate_point(session: Session, lon: float, lat: float) -> str | None:
    """The id of the live neighbourhood holding the point (lon, lat), or None."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return None
    candidates = session.exec(
        select(Place.id, Place.geometry)
        .where(Place.level == "neighbourhood", _live)
        .where(Place.min_lon <= lon, Place.max_lon >= lon)
        .where(Place.min_lat <= lat, Place.max_lat >= lat)
        .order_by(Place.id)
    )
    point = Point(lon, lat)
    # a point on a shared border belongs to the first neighbourhood by id
    return next((pid for pid, text in candidates if _parsed(text).covers(point)), None)


@lru_cache(maxsize=512)
def _parsed(geojson: str) -> BaseGeometry:
    """A prepared geometry from stored GeoJSON; cached, as boundaries rarely change."""
    geometry = shapely.from_geojson(geojson)
    shapely.prepare(geometry)
    return geometry


def city_extent(session: Session) -> BaseGeometry | None:
    """The city's boundary (the union of its neighbourhoods), or None before places load."""
    text = session.scalar(sa_select(Place.geometry).where(Place.level == "city", _live))
    return _parsed(text) if text else None


def resolve_street(session: Session, text: str) -> tuple[str | None, BaseGeometry | None, str]:
    """(id, geometry, "") of the street named by id or by name; (None, None, why) if none.

    A name that several streets share is ambiguous: the message lists their ids.
    """
    row = session.exec(select(Street.id, Street.geometry).where(Street.id == text)).first()
    if row is None:
        rows = session.exec(
            select(Street.id, Street.geometry).where(Street.search_key == search_key(text))
        ).all()
        if len(rows) > 1:
            ids = ", ".join(sorted(r.id for r in rows))
            return None, None, f"{text!r} names several streets; use one of their ids: {ids}"
        row = rows[0] if rows else None
    if row is None:
        return None, None, f"no street {text!r} in the gazetteer"
    return row.id, shapely.from_geojson(row.geometry), ""


def nztm_distances_m(a: BaseGeometry, others: list[BaseGeometry]) -> np.ndarray:
    """Distances in metres from `a` to each of `others` (WGS84), in one projection."""
    projected = _nztm_projector()(np.array([a, *others], dtype=object))
    return shapely.distance(projected[0], projected[1:])


def shares_near_street(street: BaseGeometry, lines: list[BaseGeometry]) -> list[float]:
    """For each line (WGS84), the share of its length within NEAR_STREET_M of `street`:
    about 1 for a work along the street, small for one that crosses or meets it."""
    if not lines:
        return []
    projected = _nztm_projector()(np.array([street, *lines], dtype=object))
    band = shapely.buffer(projected[0], NEAR_STREET_M)
    lengths = shapely.length(projected[1:])
    inside = shapely.length(shapely.intersection(projected[1:], band))
    return [float(i / n) if n > 0 else 1.0 for i, n in zip(inside, lengths, strict=True)]


def streets_near(
    connection, geometries: list[BaseGeometry], filed: list[str | None]
) -> list[dict[str, float]]:
    """For each geometry (WGS84), {street id: distance in metres} of the streets within
    NEAR_STREET_M, and of the street it was filed under (`filed`) however far.

    `connection` is a session or a connection. The street boxes are read once into an
    STRtree and only the streets near some geometry are parsed, so a batch of one work
    does not read the whole gazetteer.
    """
    if not geometries:
        return []
    boxes = connection.execute(
        sa_select(Street.id, Street.min_lon, Street.min_lat, Street.max_lon, Street.max_lat)
    ).all()
    ids = [row[0] for row in boxes]
    tree = shapely.STRtree(
        shapely.box(*np.array([row[1:] for row in boxes], dtype=float).T) if boxes else []
    )
    bounds = shapely.bounds(np.array(geometries, dtype=object))
    padded = shapely.box(
        bounds[:, 0] - _NEAR_PAD,
        bounds[:, 1] - _NEAR_PAD,
        bounds[:, 2] + _NEAR_PAD,
        bounds[:, 3] + _NEAR_PAD,
    )
    work_index, street_index = tree.query(padded)
    pairs = {(int(w), ids[s]) for w, s in zip(work_index, street_index, strict=True)}
    pairs |= {(w, street) for w, street in enumerate(filed) if street is not None}
    pairs = sorted(pairs)
    wanted = sorted({street for _, street in pairs})
    names, lines = [], []
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        for street, text in connection.execute(
            sa_select(Street.id, Street.geometry).where(Street.id.in_(chunk))
        ):
            names.append(street)
            lines.append(text)
    near: list[dict[str, float]] = [{} for _ in geometries]
    if not names:
        return near
    # Each geometry and street projected once; then one distance per pair.
    project = _nztm_projector()
    works = project(np.array(geometries, dtype=object))
    projected = project(shapely.from_geojson(lines))
    streets = {street: projected[i] for i, street in enumerate(names)}
    pairs = [(w, street) for w, street in pairs if street in streets]
    # street to work, the order works_on_street measured them in before this table
    distances = shapely.distance(
        np.array([streets[s] for _, s in pairs], dtype=object),
        np.array([works[w] for w, _ in pairs], dtype=object),
    )
    for (w, street), distance in zip(pairs, distances, strict=True):
        if distance <= NEAR_STREET_M or filed[w] == street:
            near[w][street] = float(distance)
    return near


def share_by_place(session: Session, geometry: BaseGeometry) -> dict[str, float]:
    """Share (0-1) of `geometry` in each live neighbourhood it touches (CONTRACT §6).

    Points belong to the neighbourhood they lie in; lines are split by length and
    polygons by area, both measured in NZTM2000 rather than in degrees.
    """
    if geometry.geom_type in ("Point", "MultiPoint"):
        point = geometry.representative_point()
        place = locate_point(session, point.x, point.y)
        return {place: 1.0} if place else {}
    minx, miny, maxx, maxy = geometry.bounds
    candidates = session.exec(
        select(Place.id, Place.geometry)
        .where(Place.level == "neighbourhood", _live)
        .where(Place.min_lon <= maxx, Place.max_lon >= minx)
        .where(Place.min_lat <= maxy, Place.max_lat >= miny)
    ).all()
    return _split(geometry, candidates)


def shares_by_place(session: Session, geometries: list[BaseGeometry]) -> list[dict[str, float]]:
    """`share_by_place` of each geometry, reading the neighbourhoods once: a batch of
    40,000 works made 40,000 queries (most of its time on PostgreSQL)."""
    if not geometries:
        return []
    rows = session.exec(
        select(Place.id, Place.geometry, Place.min_lon, Place.min_lat, Place.max_lon, Place.max_lat)
        .where(Place.level == "neighbourhood", _live)
        .order_by(Place.id)
    ).all()
    boxes = shapely.box(*np.array([row[2:] for row in rows], dtype=float).T) if rows else []
    index = shapely.STRtree(boxes)
    shares = []
    for geometry in geometries:
        # Neighbourhoods whose box meets the geometry's, in id order, as the queries read them.
        near = [rows[i][:2] for i in sorted(index.query(shapely.envelope(geometry)))]
        if geometry.geom_type in ("Point", "MultiPoint"):
            point = geometry.representative_point()
            # a point on a shared border belongs to the first neighbourhood by id
            place = next((pid for pid, text in near if _parsed(text).covers(point)), None)
            shares.append({place: 1.0} if place else {})
        else:
            shares.append(_split(geometry, near))
    return shares


def _split(geometry: BaseGeometry, candidates) -> dict[str, float]:
    """A line's or polygon's shares of length or area among the candidate neighbourhoods."""
    measure = shapely.area if geometry.geom_type.endswith("Polygon") else shapely.length
    project = _nztm_projector()
    amounts = {}
    for place_id, text in sorted(candidates):  # one order, so one float sum, however read
        piece = shapely.intersection(geometry, _parsed(text))
        if not piece.is_empty:
            amounts[place_id] = float(measure(project(np.array([piece]))[0]))
    total = sum(amounts.values())
    return {p: a / total for p, a in amounts.items() if a > 0} if total > 0 else {}
