"""Reading street segments from the gazetteer and joining them into streets (CONTRACT §1).

Lengths and shares are measured in NZTM2000 (EPSG:2193); the projection helper lives here
and the distance functions in `locate` use it too.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, MultiLineString

from tracker.places.boundaries import (
    Boundary,
    PlacesError,
    _properties,
    _shape,
    read_geojson_features,
)
from tracker.text import search_key, slugify, title_case

JOIN_DISTANCE_M = 50.0  # a segment end this close to a same-named segment joins it
MAX_STREET_NAME = 100  # leaves room in Street.id (150) for the neighbourhood suffix
MIN_SHARE_M = 5.0  # a street "lies in" a neighbourhood holding at least this much of it

Projector = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StreetRecord:
    """A street (CONTRACT §1): same-named segments that connect, and where it lies."""

    id: str
    name: str
    geometry: MultiLineString  # WGS84 lon/lat
    length_m: float  # measured in NZTM2000
    main_place_id: str | None  # the neighbourhood holding the largest share of its length
    place_ids: tuple[str, ...]  # the neighbourhoods it lies in (MIN_SHARE_M or more), sorted


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
