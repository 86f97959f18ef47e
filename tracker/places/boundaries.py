"""Reading the boundaries GeoJSON into checked neighbourhoods, and the place rows they make.

Also the GeoJSON reading that streets share: `read_geojson_features`, feature properties,
checked WGS84 shapes, and PlacesError for a file that cannot be used.
"""

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from tracker.errors import TrackerError
from tracker.text import search_key, slugify

PLACE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
DISPLAY_TOLERANCE = 1e-4  # degrees (about 10 m): simplification for maps and the API
DIGITS = 6  # decimals kept in stored coordinates (about 0.1 m)


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
        # One line of single spaces, as street names are: a name goes into headings, map
        # labels and mail subjects, where a line break has no place.
        name = " ".join(name.split())
        if area is not None:
            area = " ".join(area.split())
        boundaries.append(Boundary(place_id, name, area, geometry, label))
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


# --- place rows --------------------------------------------------------------------------


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
