"""Places and streets: reading boundaries and the gazetteer, storing, locating, name search."""

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.errors import GEOSException
from shapely.geometry import LineString, MultiLineString, Point, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity
from sqlalchemy import String, bindparam, case, delete, func, insert, literal_column, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, select

from tracker.errors import TrackerError
from tracker.models import Place, Street, StreetPlace, Work, WorkPlace, utcnow
from tracker.text import search_key, slugify, title_case

PLACE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
JOIN_DISTANCE_M = 50.0  # a segment end this close to a same-named segment joins it
DISPLAY_TOLERANCE = 1e-4  # degrees (about 10 m): simplification for maps and the API
DIGITS = 6  # decimals kept in stored coordinates (about 0.1 m)
MAX_STREET_NAME = 100  # leaves room in Street.id (150) for the neighbourhood suffix
MIN_SHARE_M = 5.0  # a street "lies in" a neighbourhood holding at least this much of it
LEVEL_ORDER = {"city": 0, "area": 1, "neighbourhood": 2}

Projector = Callable[[np.ndarray], np.ndarray]


class PlacesError(TrackerError):
    """A boundaries or streets file that cannot be used; the message names the feature."""


@dataclass(frozen=True)
class Boundary:
    """One neighbourhood read from the boundaries file."""

    id: str
    name: str
    area: str | None  # the area's name, when the tree groups neighbourhoods into areas
    geometry: BaseGeometry
    label: tuple[float, float] | None = None  # (lon, lat) from the file, when it gives one


@dataclass(frozen=True)
class StreetRecord:
    """A street (CONTRACT §1): same-named segments that connect, and where it lies."""

    id: str
    name: str
    geometry: MultiLineString  # WGS84 lon/lat
    length_m: float  # measured in NZTM2000
    main_place_id: str | None  # the neighbourhood holding the largest share of its length
    place_ids: tuple[str, ...]  # the neighbourhoods it lies in (MIN_SHARE_M or more), sorted


# --- reading boundaries -----------------------------------------------------------------


def read_geojson_features(path: Path) -> list[dict]:
    """The features of a GeoJSON FeatureCollection file, or PlacesError saying why not."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlacesError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlacesError(f"{path}: not readable GeoJSON ({exc})") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise PlacesError(f"{path}: expected a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise PlacesError(f"{path}: the FeatureCollection has no features")
    return features


def read_boundaries(
    path: Path, *, id_property: str, name_property: str, area_property: str | None = None
) -> list[Boundary]:
    """Neighbourhood boundaries from GeoJSON, every geometry checked.

    Raises PlacesError naming the first bad feature (by index and id) and what is wrong.
    """
    boundaries: list[Boundary] = []
    seen: set[str] = set()
    for index, feature in enumerate(read_geojson_features(path)):
        where = f"{path}: feature {index}"
        props = _properties(feature, where)
        place_id = props.get(id_property)
        if not isinstance(place_id, str) or not PLACE_ID.match(place_id):
            raise PlacesError(
                f"{where}: property {id_property!r} must be a lower-case slug "
                f"(letters, digits, hyphens), got {place_id!r}"
            )
        where = f"{where} ({place_id})"
        if place_id in seen:
            raise PlacesError(f"{where}: duplicate id {place_id!r}")
        seen.add(place_id)
        name = props.get(name_property)
        if not isinstance(name, str) or not name.strip():
            raise PlacesError(f"{where}: property {name_property!r} is missing or empty")
        area = None
        if area_property:
            area = props.get(area_property)
            if not isinstance(area, str) or not slugify(area):
                raise PlacesError(f"{where}: property {area_property!r} is missing or empty")
        geometry = _polygon(feature.get("geometry"), where)
        label = _label(props, where)
        boundaries.append(Boundary(place_id, name.strip(), area, geometry, label))
    return boundaries


def _properties(feature: object, where: str) -> dict:
    """A feature's properties, or PlacesError when it is not a GeoJSON Feature."""
    if not isinstance(feature, dict):
        raise PlacesError(f"{where}: not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise PlacesError(f"{where}: properties must be an object")
    return props


def _polygon(raw: object, where: str) -> BaseGeometry:
    """A valid Polygon or MultiPolygon, or PlacesError."""
    if not isinstance(raw, dict) or raw.get("type") not in ("Polygon", "MultiPolygon"):
        kind = raw.get("type") if isinstance(raw, dict) else raw
        raise PlacesError(f"{where}: geometry must be a Polygon or MultiPolygon, got {kind!r}")
    geometry = _shape(raw, where)
    if not geometry.is_valid:
        raise PlacesError(f"{where}: invalid geometry ({explain_validity(geometry)})")
    return geometry


def _shape(raw: dict, where: str) -> BaseGeometry:
    """A 2-D shapely geometry with finite WGS84 coordinates, or PlacesError."""
    try:
        # NaN in the file would otherwise raise a numpy warning before our own check
        with np.errstate(invalid="ignore"):
            geometry = shapely.force_2d(shape(raw))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, GEOSException) as exc:
        raise PlacesError(f"{where}: unreadable geometry ({exc})") from None
    if geometry.is_empty:
        raise PlacesError(f"{where}: empty geometry")
    xy = shapely.get_coordinates(geometry)
    lon, lat = xy[:, 0], xy[:, 1]
    if not (np.isfinite(xy).all() and (np.abs(lon) <= 180).all() and (np.abs(lat) <= 90).all()):
        raise PlacesError(f"{where}: coordinates are not WGS84 longitude/latitude")
    return geometry


def _label(props: dict, where: str) -> tuple[float, float] | None:
    """The label point from `label_lon`/`label_lat` when the file gives them."""
    if "label_lon" not in props and "label_lat" not in props:
        return None
    lon, lat = props.get("label_lon"), props.get("label_lat")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lon, lat))
    if not numbers or not (abs(lon) <= 180 and abs(lat) <= 90):
        raise PlacesError(f"{where}: label_lon/label_lat must be WGS84 longitude/latitude")
    return float(lon), float(lat)


# --- reading streets --------------------------------------------------------------------


def read_streets(path: Path, boundaries: list[Boundary]) -> list[StreetRecord]:
    """Streets from a GeoJSON gazetteer of named road segments, sorted by id.

    Same-named segments (names compared folded) join when an end of one lies within
    50 m of the other; far-apart pieces of one name become separate streets (CONTRACT §1).
    Lengths and shares are measured in NZTM2000 (EPSG:2193).
    """
    names, lines = _read_segments(path)
    if not lines:
        return []
    project = _nztm_projector()
    lines_nztm = project(np.array(lines, dtype=object))
    groups = _join_segments([search_key(n) for n in names], lines_nztm)
    geometries = np.array([MultiLineString([lines[i] for i in g]) for g in groups], dtype=object)
    lengths = [float(shapely.length(lines_nztm[g]).sum()) for g in groups]
    shares = _place_shares(geometries, boundaries, project)
    streets = []
    for group, geometry, length, share in zip(groups, geometries, lengths, shares, strict=True):
        main = min(share, key=lambda p: (-share[p], p)) if share else None
        # A street ending on a boundary road pokes a few metres over it (the boundaries and
        # the centrelines come from different surveys): that neighbour is not one it lies in.
        places = tuple(sorted(p for p in share if share[p] >= MIN_SHARE_M or p == main))
        name = _display_name(names[group[0]])
        streets.append(StreetRecord("", name, geometry, round(length, 1), main, places))
    return _with_ids(streets)


def _read_segments(path: Path) -> tuple[list[str], list[LineString]]:
    """Each named line (one per part of a MultiLineString) with its source name."""
    names: list[str] = []
    lines: list[LineString] = []
    for index, feature in enumerate(read_geojson_features(path)):
        where = f"{path}: feature {index}"
        name = _properties(feature, where).get("name")
        if name is not None and not isinstance(name, str):
            raise PlacesError(f"{where}: property 'name' must be text, got {name!r}")
        name = " ".join((name or "").split())
        if name:
            where = f"{where} ({name})"
        if len(name) > MAX_STREET_NAME:
            raise PlacesError(f"{where}: name longer than {MAX_STREET_NAME} characters")
        parts = _lines(feature.get("geometry"), where)
        # Unnamed segments (LINZ: driveways, tracks, service lanes) are not streets, and
        # neither is a name of punctuation alone, which would give an empty id.
        if search_key(name):
            names.extend([name] * len(parts))
            lines.extend(parts)
    return names, lines


def _lines(raw: object, where: str) -> list[LineString]:
    """The non-empty lines of a LineString or MultiLineString, or PlacesError."""
    if not isinstance(raw, dict) or raw.get("type") not in ("LineString", "MultiLineString"):
        kind = raw.get("type") if isinstance(raw, dict) else raw
        raise PlacesError(
            f"{where}: geometry must be a LineString or MultiLineString, got {kind!r}"
        )
    geometry = _shape(raw, where)
    parts = geometry.geoms if isinstance(geometry, MultiLineString) else [geometry]
    return [part for part in parts if not part.is_empty]


def _display_name(name: str) -> str:
    """Title case for names the source gives in capitals; other names as given."""
    return title_case(name) if name == name.upper() else name


def _nztm_projector() -> Projector:
    """A function projecting WGS84 geometries to NZTM2000 (EPSG:2193), for metres."""
    transformer = Transformer.from_crs("EPSG:4326", "EPSG:2193", always_xy=True)

    def project(geometries: np.ndarray) -> np.ndarray:
        return shapely.transform(
            geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
        )

    return project


def _join_segments(keys: list[str], lines_nztm: np.ndarray) -> list[list[int]]:
    """Indices of segments grouped into streets: same key, connected within JOIN_DISTANCE_M.

    Union-find over the (segment end, segment) pairs an STRtree finds close together.
    An end is compared with the whole of the other segment, not only its ends: LINZ
    does not always split a road where a same-named branch meets it (Ferry Road, Innes
    Road and Harewood Road each have such a T), and end-to-end alone splits them.
    """
    count = len(keys)
    codes = np.unique(keys, return_inverse=True)[1]
    ends = np.concatenate([shapely.get_point(lines_nztm, 0), shapely.get_point(lines_nztm, -1)])
    end, other = shapely.STRtree(lines_nztm).query(ends, "dwithin", distance=JOIN_DISTANCE_M)
    end = end % count  # ends k and k + count are segment k's
    same = (end != other) & (codes[end] == codes[other])
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(end[same].tolist(), other[same].tolist(), strict=True):
        parent[root(i)] = root(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(count):
        groups[root(i)].append(i)
    return list(groups.values())


def _place_shares(
    streets: np.ndarray, boundaries: list[Boundary], project: Projector
) -> list[dict[str, float]]:
    """For each street, metres of it inside each neighbourhood it intersects."""
    shares: list[dict[str, float]] = [{} for _ in streets]
    if not boundaries:
        return shares
    polygons = np.array([b.geometry for b in boundaries])
    street_index, place_index = shapely.STRtree(polygons).query(streets, "intersects")
    pieces = shapely.intersection(streets[street_index], polygons[place_index])
    metres = shapely.length(project(pieces))
    for s, p, m in zip(street_index.tolist(), place_index.tolist(), metres.tolist(), strict=True):
        shares[s][boundaries[p].id] = m
    return shares


def _with_ids(streets: list[StreetRecord]) -> list[StreetRecord]:
    """The streets with their ids, sorted by id.

    A name that is one street gets its slug; a name that is several gets the slug plus
    the main neighbourhood ("school-road-yaldhurst"), then "-2", "-3" while that clashes.
    """
    by_slug: dict[str, list[StreetRecord]] = defaultdict(list)
    for street in streets:
        by_slug[slugify(street.name)].append(street)
    taken = {slug for slug, group in by_slug.items() if len(group) == 1}
    named = []
    for slug, group in sorted(by_slug.items()):
        if len(group) == 1:
            named.append(replace(group[0], id=slug))
            continue
        # the longest piece in a neighbourhood keeps the plain suffix, so ids stay stable
        for street in sorted(group, key=lambda s: (s.main_place_id or "", -s.length_m)):
            base = f"{slug}-{street.main_place_id}" if street.main_place_id else slug
            street_id, n = base, 2
            while street_id in taken:
                street_id, n = f"{base}-{n}", n + 1
            taken.add(street_id)
            named.append(replace(street, id=street_id))
    return sorted(named, key=lambda s: s.id)


# --- storing ------------------------------------------------------------------------------


def area_ids(city_id: str, boundaries: list[Boundary]) -> dict[str, str]:
    """Place id of each area name: its slug, or slug + "-area" when that id is taken.

    Wards are often named after a suburb (Riccarton ward, Riccarton neighbourhood), and
    place ids share one namespace (/places/ID).
    """
    taken = {city_id} | {b.id for b in boundaries}
    ids: dict[str, str] = {}
    for area in sorted({b.area for b in boundaries if b.area}):
        base = slugify(area) if slugify(area) not in taken else f"{slugify(area)}-area"
        area_id, n = base, 2
        while area_id in taken:
            area_id, n = f"{base}-{n}", n + 1
        taken.add(area_id)
        ids[area] = area_id
    return ids


def place_rows(city_id: str, city_name: str, boundaries: list[Boundary]) -> list[dict[str, Any]]:
    """Place table rows for the whole tree, parents before children."""
    if not boundaries:
        raise PlacesError("no neighbourhoods: a city needs at least one boundary")
    areas = area_ids(city_id, boundaries)
    members: dict[str, list[BaseGeometry]] = defaultdict(list)
    for b in boundaries:
        if b.area:
            members[b.area].append(b.geometry)
    rows = [
        _place_row(
            city_id, city_name, "city", None, shapely.union_all([b.geometry for b in boundaries])
        )
    ]
    rows += [
        _place_row(area_id, area, "area", city_id, shapely.union_all(members[area]))
        for area, area_id in areas.items()
    ]
    rows += [
        _place_row(
            b.id, b.name, "neighbourhood", areas[b.area] if b.area else city_id, b.geometry, b.label
        )
        for b in boundaries
    ]
    return rows


def _place_row(
    place_id: str,
    name: str,
    level: str,
    parent_id: str | None,
    geometry: BaseGeometry,
    label: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One Place row; the label is a point inside the geometry unless the file gave one."""
    if label is None:
        point = geometry.representative_point()
        label = (point.x, point.y)
    minx, miny, maxx, maxy = geometry.bounds
    return {
        "id": place_id,
        "name": name,
        "level": level,
        "parent_id": parent_id,
        "search_key": search_key(name),
        "geometry": shapely.to_geojson(geometry),
        "display_geometry": shapely.to_geojson(_display(geometry)),
        "label_lon": round(label[0], DIGITS),
        "label_lat": round(label[1], DIGITS),
        "min_lon": minx,
        "min_lat": miny,
        "max_lon": maxx,
        "max_lat": maxy,
    }


def _display(geometry: BaseGeometry) -> BaseGeometry:
    """A lighter geometry for maps; the original when simplifying breaks it."""
    simple = _rounded(shapely.simplify(geometry, DISPLAY_TOLERANCE, preserve_topology=True))
    return simple if simple.is_valid and not simple.is_empty else geometry


def _rounded(geometry: BaseGeometry) -> BaseGeometry:
    """The geometry with coordinates rounded to DIGITS decimals."""
    return shapely.transform(geometry, lambda xy: np.round(xy, DIGITS))


def _street_row(street: StreetRecord) -> dict[str, Any]:
    """One Street row."""
    minx, miny, maxx, maxy = street.geometry.bounds
    return {
        "id": street.id,
        "name": street.name,
        "search_key": search_key(street.name),
        "main_place_id": street.main_place_id,
        "geometry": shapely.to_geojson(_rounded(street.geometry)),
        "length_m": street.length_m,
        "min_lon": minx,
        "min_lat": miny,
        "max_lon": maxx,
        "max_lat": maxy,
    }


Box = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat


@dataclass(frozen=True)
class PlaceChanges:
    """What store_places changed in the place tree."""

    retired: tuple[str, ...] = ()  # live before, missing from the file now (sorted)
    changed: bool = False  # any place added, retired, brought back, renamed or redrawn
    # Where a neighbourhood's boundary appeared, moved or went (old and new boxes): works
    # there may lie in another neighbourhood now.
    redrawn: tuple[Box, ...] = ()


def store_places(
    session: Session,
    *,
    city_id: str,
    city_name: str,
    boundaries: list[Boundary],
    streets: list[StreetRecord] | None = None,
) -> PlaceChanges:
    """Write the place tree and, when given, the streets; idempotent, the caller commits.

    Places missing from the file are retired, never deleted (observations, works and
    comments refer to them), and come back when a later file has them. Streets are
    replaced by the new set, except old ones that other rows (works …) still refer to.
    """
    rows = [row | {"retired_at": None} for row in place_rows(city_id, city_name, boundaries)]
    stored = _stored_places(session)
    new, changed = _upsert(session, Place, rows)
    retired = sorted(set(stored) - {row["id"] for row in rows} - _retired(stored))
    for chunk in _chunks(retired):
        session.exec(update(Place).where(Place.id.in_(chunk)).values(retired_at=utcnow()))
    if streets is not None:
        _store_streets(session, streets)
    return PlaceChanges(
        retired=tuple(retired),
        changed=bool(new or changed or retired),
        redrawn=_redrawn_boxes(stored, new, changed, retired),
    )


def _stored_places(session: Session) -> dict[str, dict[str, Any]]:
    """Each stored place's level, box, geometry and retirement, by id."""
    columns = (Place.id, Place.level, Place.geometry, Place.retired_at, *_BOX_COLUMNS)
    return {row.id: dict(row._mapping) for row in session.exec(sa_select(*columns))}


_BOX_COLUMNS = (Place.min_lon, Place.min_lat, Place.max_lon, Place.max_lat)


def _retired(stored: dict[str, dict[str, Any]]) -> set[str]:
    """The ids among `stored` that are retired already."""
    return {place_id for place_id, row in stored.items() if row["retired_at"] is not None}


def _redrawn_boxes(
    stored: dict[str, dict[str, Any]], new: list[dict], changed: list[dict], retired: list[str]
) -> tuple[Box, ...]:
    """Boxes of the neighbourhoods that appeared, came back, moved or went, old and new."""
    boxes: list[Box] = []
    for row in new + changed:
        old = stored.get(row["id"])
        if row["level"] != "neighbourhood":
            continue
        if old is None or old["retired_at"] is not None or old["geometry"] != row["geometry"]:
            boxes.append(_box(row))
            if old is not None:
                boxes.append(_box(old))
    boxes += [_box(stored[place_id]) for place_id in retired]
    return tuple(boxes)


def _box(row: dict[str, Any]) -> Box:
    return (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"])


def _upsert(
    session: Session, model: type[SQLModel], rows: list[dict[str, Any]]
) -> tuple[list[dict], list[dict]]:
    """Insert new rows and update changed ones, matched on `id`, in bulk; (new, changed)."""
    if not rows:
        return [], []
    columns = [getattr(model, name) for name in rows[0]]
    stored = {row.id: dict(row._mapping) for row in session.exec(sa_select(*columns))}
    new = [row for row in rows if row["id"] not in stored]
    changed = [row for row in rows if row["id"] in stored and stored[row["id"]] != row]
    if new:
        session.exec(insert(model), params=new)
    if changed:
        session.exec(update(model), params=changed)
    return new, changed


def _store_streets(session: Session, streets: list[StreetRecord]) -> None:
    """Make the Street and StreetPlace tables hold `streets`, keeping referenced old ones."""
    _upsert(session, Street, [_street_row(s) for s in streets])
    current = {s.id for s in streets}
    old = set(session.exec(select(Street.id)).all()) - current
    removed = old - _referenced_streets(session, old)
    wanted = {(s.id, p) for s in streets for p in s.place_ids}
    stored = {
        tuple(r) for r in session.exec(sa_select(StreetPlace.street_id, StreetPlace.place_id))
    }
    stale = [
        {"s": s, "p": p}
        for s, p in stored
        if (s in current and (s, p) not in wanted) or s in removed
    ]
    table = StreetPlace.__table__
    if stale:
        session.exec(
            delete(table).where(
                table.c.street_id == bindparam("s"), table.c.place_id == bindparam("p")
            ),
            params=stale,
        )
    for chunk in _chunks(sorted(removed)):
        session.exec(delete(Street).where(Street.id.in_(chunk)))
    added = [{"street_id": s, "place_id": p} for s, p in sorted(wanted - stored)]
    if added:
        session.exec(insert(StreetPlace), params=added)


def _referenced_streets(session: Session, street_ids: set[str]) -> set[str]:
    """The streets among `street_ids` that a row of another table refers to."""
    referenced: set[str] = set()
    if not street_ids:
        return referenced
    street_table = Street.__table__
    for table in SQLModel.metadata.sorted_tables:
        if table is StreetPlace.__table__:
            continue
        for fk in table.foreign_keys:
            if fk.column.table is street_table:
                for chunk in _chunks(sorted(street_ids)):
                    query = sa_select(fk.parent).where(fk.parent.in_(chunk)).distinct()
                    referenced.update(session.exec(query).scalars())
    return referenced


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    """Slices of `items`, keeping IN lists short."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- reading back -------------------------------------------------------------------------

# Retired places keep their rows for history; nothing reads them as places any more.
_live = Place.retired_at.is_(None)


def list_places(session: Session, *, with_geometry: bool = True) -> list[dict[str, Any]]:
    """Every live place, city first, then areas and neighbourhoods by name.

    With `with_geometry`, each carries its display geometry as a GeoJSON object.
    """
    columns = [
        Place.id,
        Place.name,
        Place.level,
        Place.parent_id,
        Place.label_lon,
        Place.label_lat,
        Place.min_lon,
        Place.min_lat,
        Place.max_lon,
        Place.max_lat,
    ]
    if with_geometry:
        columns.append(Place.display_geometry)
    places = []
    for row in session.exec(sa_select(*columns).where(_live)):
        place = {
            "id": row.id,
            "name": row.name,
            "level": row.level,
            "parent_id": row.parent_id,
            "label": [row.label_lon, row.label_lat],
            "bbox": [row.min_lon, row.min_lat, row.max_lon, row.max_lat],
        }
        if with_geometry:
            place["geometry"] = json.loads(row.display_geometry)
        places.append(place)
    return sorted(places, key=lambda p: (LEVEL_ORDER.get(p["level"], 3), search_key(p["name"])))


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


def nztm_distance_m(a: BaseGeometry, b: BaseGeometry) -> float:
    """Distance in metres between two WGS84 geometries, measured in NZTM2000."""
    project = _nztm_projector()
    first, second = project(np.array([a, b]))
    return float(shapely.distance(first, second))


def nztm_distances_m(a: BaseGeometry, others: list[BaseGeometry]) -> np.ndarray:
    """Distances in metres from `a` to each of `others` (WGS84), in one projection."""
    projected = _nztm_projector()(np.array([a, *others], dtype=object))
    return shapely.distance(projected[0], projected[1:])


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
    measure = shapely.area if geometry.geom_type.endswith("Polygon") else shapely.length
    project = _nztm_projector()
    amounts = {}
    for place_id, text in candidates:
        piece = shapely.intersection(geometry, _parsed(text))
        if not piece.is_empty:
            amounts[place_id] = float(measure(project(np.array([piece]))[0]))
    total = sum(amounts.values())
    return {p: a / total for p, a in amounts.items() if a > 0} if total > 0 else {}


def relocate_works(session: Session, boxes: Iterable[Box]) -> dict[int, str | None]:
    """Locate again the works whose box meets `boxes` (where boundaries appeared, moved or
    went); {work id: its measure} for those whose places changed, for the caller to bump."""
    boxes = list(boxes)
    if not boxes:
        return {}
    works = session.exec(
        select(Work.id, Work.geometry, Work.measure_id, *_WORK_BOX).order_by(Work.id)
    ).all()
    near = [work for work in works if any(_meets(work[3:], box) for box in boxes)]
    stored: dict[int, dict[str, float]] = defaultdict(dict)
    for chunk in _chunks([work.id for work in near]):
        query = select(WorkPlace.work_id, WorkPlace.place_id, WorkPlace.share)
        for work_id, place_id, share in session.exec(query.where(WorkPlace.work_id.in_(chunk))):
            stored[work_id][place_id] = share
    moved: dict[int, str | None] = {}
    for work in near:
        shares = share_by_place(session, shapely.from_geojson(work.geometry))
        if shares != stored[work.id]:
            _store_work_places(session, work.id, shares)
            moved[work.id] = work.measure_id
    return moved


_WORK_BOX = (Work.min_lon, Work.min_lat, Work.max_lon, Work.max_lat)


def _meets(a: Iterable[float], b: Box) -> bool:
    """Whether two boxes (min_lon, min_lat, max_lon, max_lat) overlap or touch."""
    a_min_lon, a_min_lat, a_max_lon, a_max_lat = a
    return a_min_lon <= b[2] and a_max_lon >= b[0] and a_min_lat <= b[3] and a_max_lat >= b[1]


def _store_work_places(session: Session, work_id: int, shares: dict[str, float]) -> None:
    """Replace a work's places and main place by `shares` (CONTRACT §6: the largest)."""
    session.exec(delete(WorkPlace).where(WorkPlace.work_id == work_id))
    session.add_all(WorkPlace(work_id=work_id, place_id=p, share=s) for p, s in shares.items())
    main = min(shares, key=lambda p: (-shares[p], p)) if shares else None
    session.exec(update(Work).where(Work.id == work_id).values(main_place_id=main))


# --- search -------------------------------------------------------------------------------


def search_streets(session: Session, q: str, limit: int = 20) -> list[dict[str, Any]]:
    """Streets whose name has a word starting with each word of `q`, best first."""
    query = _matching(Street, q, limit)
    if query is None:
        return []
    rows = session.exec(query.add_columns(Street.main_place_id)).all()
    places: dict[str, list[str]] = defaultdict(list)
    if rows:
        # A street kept without a gazetteer update may still name a retired place.
        pairs = session.exec(
            select(StreetPlace.street_id, StreetPlace.place_id)
            .join(Place, Place.id == StreetPlace.place_id)
            .where(StreetPlace.street_id.in_([r.id for r in rows]), _live)
            .order_by(StreetPlace.place_id)
        )
        for street_id, place_id in pairs:
            places[street_id].append(place_id)
    return [
        {
            "id": r.id,
            "name": r.name,
            "places": sorted(places[r.id], key=lambda p: p != r.main_place_id),
        }
        for r in rows
    ]


def search_places(session: Session, q: str, limit: int = 20) -> list[dict[str, Any]]:
    """Live places whose name has a word starting with each word of `q`, best first."""
    query = _matching(Place, q, limit)
    if query is None:
        return []
    rows = session.exec(query.add_columns(Place.level, Place.parent_id).where(_live))
    return [{"id": r.id, "name": r.name, "level": r.level, "parent": r.parent_id} for r in rows]


def _matching(model: type[Place] | type[Street], q: str, limit: int):
    """SELECT id, name of `model` rows matching `q` in rank order; None for no words.

    Each word must start a word of the name: `(' ' || search_key) LIKE '% word%'`, which
    runs alike on SQLite and PostgreSQL. Rank: exact name, name starting with the query,
    shorter names, then alphabetical.
    """
    folded = search_key(q)
    if not folded or limit <= 0:
        return None
    key = model.search_key
    spaced = literal_column("' '", String) + key
    rank = case((key == folded, 0), (key.like(_like_escape(folded) + "%", escape="\\"), 1), else_=2)
    query = sa_select(model.id, model.name)
    for word in folded.split():
        query = query.where(spaced.like(f"% {_like_escape(word)}%", escape="\\"))
    return query.order_by(rank, func.length(key), key, model.id).limit(limit)


def _like_escape(text: str) -> str:
    """`text` with LIKE wildcards escaped, to match literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
