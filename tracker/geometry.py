"""One reader for a work's location as agencies send it: GeoJSON, WKT, or lon and lat.

The JSON API, CSV uploads and feeds all read geometries here, so the same value is read
the same way and refused with the same words whichever door it came in by. What a work
may then be (its kind, valid, inside the city) is the write path's to check.
"""

import json
from typing import Any

from shapely import wkt
from shapely.errors import ShapelyError
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

NOT_A_GEOMETRY = "geometry is neither GeoJSON nor WKT"


def parse_geometry(value: Any) -> tuple[BaseGeometry | None, str | None]:
    """The shape of a GeoJSON geometry (a mapping, or its JSON text) or of WKT text, or
    why there is none."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.startswith("{"):
                value = json.loads(text)
            else:
                return wkt.loads(text), None
        except (ValueError, ShapelyError):
            return None, NOT_A_GEOMETRY
    if not isinstance(value, dict):
        return None, NOT_A_GEOMETRY
    try:
        return shape(value), None
    except Exception:  # shapely raises many kinds of error for bad GeoJSON
        return None, NOT_A_GEOMETRY


def lon_lat(lon: Any, lat: Any) -> tuple[Point | None, str | None]:
    """The point at `lon`, `lat` (numbers or their text), or why there is none."""
    try:
        return Point(float(lon), float(lat)), None
    except (TypeError, ValueError):
        return None, f"lon and lat must be numbers: {lon!r}, {lat!r}"


def point_on(geometry: BaseGeometry) -> Point:
    """One point that stands for a geometry on a map: the middle of a line, a point inside
    an area (a centroid can fall outside a bent street or a hollow area)."""
    if geometry.geom_type in ("LineString", "MultiLineString"):
        return geometry.interpolate(0.5, normalized=True)
    return geometry.representative_point()
