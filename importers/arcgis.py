"""ArcGIS REST: a FeatureServer or MapServer layer's `query`, read page by page.

The feed's URL is the layer (`…/FeatureServer/0`) or its `…/query`. Each page asks for
`where=1=1&outFields=*&outSR=4326` from `resultOffset`, `resultRecordCount` records at a
time, while the answer says `exceededTransferLimit`. Esri JSON (`f=json`, the default)
is preferred: it names each field's type, so epoch-millisecond dates are found and
turned into calendar dates. A `file:` URL is a folder of saved answers (page-1.json …).
"""

import logging
from datetime import datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from shapely.errors import ShapelyError
from shapely.geometry import Polygon

from importers import (
    Fetch,
    Importer,
    Page,
    ParseError,
    SourceRow,
    SourceTable,
    local_page,
    read_pages,
    register,
)
from importers.geojson import feature_row
from importers.json import load_json

log = logging.getLogger(__name__)

PAGE_SIZE = 1000


@register
class ArcGisImporter(Importer):
    """Records numbered from 0 across pages.

    Options: `page_size` (default 1000; a server with a lower maxRecordCount sends fewer,
    and the next page starts after what came), `where` (default 1=1), `order_by`
    (orderByFields, for servers that page unstably without one), `f` (json or geojson),
    `date_fields` (with f=geojson, which does not say which fields are dates) and
    `timezone` (the calendar dates are read in; tracker.feeds passes the city's).
    """

    format = "arcgis"
    geometry = True

    def parse(self, body: bytes, options: dict[str, Any] | None = None) -> list[SourceRow]:
        """The rows of one query answer."""
        return self._page(body, 0, options or {}).rows

    def read(self, fetch: Fetch, url: str, options: dict[str, Any]) -> SourceTable:
        """Every page of the layer's query."""
        return read_pages(
            fetch,
            lambda offset, page: self._request(url, offset, page, options),
            lambda body, offset: self._page(body, offset, options),
        )

    @staticmethod
    def _request(url: str, offset: int, page: int, options: dict) -> tuple[str, dict | None]:
        """The address and query parameters of one page."""
        if url.startswith("file:"):
            return local_page(url, page), None
        base = url.rstrip("/")
        params = {
            "where": options.get("where", "1=1"),
            "outFields": "*",
            "returnGeometry": "true",
            "outSR": 4326,
            "f": options.get("f", "json"),
            "resultOffset": offset,
            "resultRecordCount": int(options.get("page_size", PAGE_SIZE)),
        }
        if options.get("order_by"):
            params["orderByFields"] = options["order_by"]
        return (base if base.endswith("/query") else f"{base}/query"), params

    @staticmethod
    def _page(body: bytes, offset: int, options: dict) -> Page:
        """Rows, columns and the more-follow flag of one answer (Esri JSON or GeoJSON)."""
        data = load_json(body)
        if not isinstance(data, dict):
            raise ParseError("expected an ArcGIS query answer (a JSON object)")
        if "error" in data:
            raise _refusal(data["error"])
        features = data.get("features")
        if not isinstance(features, list):
            raise ParseError("the answer has no list of features")
        # With f=geojson, some server versions put the flag under "properties".
        more = bool(
            data.get("exceededTransferLimit")
            or (data.get("properties") or {}).get("exceededTransferLimit")
        )
        zone = ZoneInfo(options.get("timezone", "UTC"))
        if data.get("type") == "FeatureCollection":
            rows = [feature_row(offset + i, f) for i, f in enumerate(features)]
            dates, columns = set(options.get("date_fields", ())), None
        else:
            fields = data.get("fields") if isinstance(data.get("fields"), list) else []
            dates = {f.get("name") for f in fields if f.get("type") == "esriFieldTypeDate"}
            columns = frozenset(f.get("name") for f in fields) if fields else None
            rows = [esri_row(offset + i, f) for i, f in enumerate(features)]
        for row in rows:
            for name in dates & row.fields.keys():
                row.fields[name] = epoch_date(row.fields[name], zone)
        return Page(rows, columns, more)


def _refusal(error: Any) -> ParseError:
    """A refused query (a bad where, a missing token), which ArcGIS sends with HTTP 200.

    Its message and details are the server's text: the operator's log has them; the
    public error has the code only when it is an HTTP-like number.
    """
    log.warning("ArcGIS refused the query: %.500s", error)
    code = error.get("code") if isinstance(error, dict) else None
    known = isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599
    return ParseError(
        f"ArcGIS error{f' {code}' if known else ''} (its message is in the operator's log)"
    )


def esri_row(number: int, feature: Any) -> SourceRow:
    """A row from one Esri JSON feature: its attributes, and its geometry as GeoJSON."""
    if not isinstance(feature, dict) or not isinstance(feature.get("attributes"), dict):
        return SourceRow(number, {}, problem="not an ArcGIS feature (no attributes)")
    row = SourceRow(number, dict(feature["attributes"]))
    try:
        row.geometry = esri_geometry(feature.get("geometry"))
    except (TypeError, ValueError, IndexError, ShapelyError) as exc:
        row.problem = f"unreadable geometry ({exc})"
    return row


def epoch_date(value: Any, zone: ZoneInfo) -> Any:
    """An esriFieldTypeDate (milliseconds since 1970, UTC) as its calendar date in `zone`.

    Dates entered as local midnight are stored as the UTC instant before it (11:00 or
    12:00 the day before in New Zealand), so the zone matters. Other values pass through
    for the feed run to judge.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    try:
        return datetime.fromtimestamp(value / 1000, zone).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return value


def esri_geometry(geometry: Any) -> dict[str, Any] | None:
    """GeoJSON for an Esri point, multipoint, polyline or polygon; None when empty."""
    if not geometry:
        return None
    if "x" in geometry:
        # An empty point comes as x: null or x: "NaN".
        if geometry["x"] in (None, "NaN"):
            return None
        return {"type": "Point", "coordinates": [float(geometry["x"]), float(geometry["y"])]}
    if "points" in geometry:
        return _multi("MultiPoint", "Point", [_xy(p) for p in geometry["points"]])
    if "paths" in geometry:
        paths = [[_xy(p) for p in path] for path in geometry["paths"]]
        return _multi("MultiLineString", "LineString", paths)
    if "rings" in geometry:
        polygons = _polygons([[_xy(p) for p in ring] for ring in geometry["rings"]])
        return _multi("MultiPolygon", "Polygon", polygons)
    raise ValueError("not an Esri point, multipoint, polyline or polygon")


def _xy(point: list) -> list[float]:
    """x and y only: Esri points may carry z and m after them."""
    return [float(point[0]), float(point[1])]


def _multi(multi: str, single: str, parts: list) -> dict[str, Any] | None:
    """A single geometry when there is one part, the Multi- kind for more, None for none."""
    if not parts:
        return None
    if len(parts) == 1:
        return {"type": single, "coordinates": parts[0]}
    return {"type": multi, "coordinates": parts}


def _polygons(rings: list[list[list[float]]]) -> list[list[list[list[float]]]]:
    """Group Esri rings into GeoJSON polygons.

    Esri winds outer rings clockwise and holes anticlockwise, one flat list for all
    parts; GeoJSON (RFC 7946) winds the other way and nests holes in their polygon. A
    hole that lies in no outer ring (a publisher that ignored the winding rule) is taken
    as an outer ring of its own.
    """
    outers = [ring for ring in rings if _signed_area(ring) < 0]
    holes = [ring for ring in rings if _signed_area(ring) >= 0]
    polygons = [[ring[::-1]] for ring in outers]
    shapes = [Polygon(ring) for ring in outers]
    for hole in holes:
        inside = Polygon(hole).representative_point()
        owner = next((i for i, s in enumerate(shapes) if s.contains(inside)), None)
        if owner is None:
            polygons.append([hole])
        else:
            polygons[owner].append(hole[::-1])
    return polygons


def _signed_area(ring: list[list[float]]) -> float:
    """Twice the ring's signed area: positive when it winds anticlockwise."""
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairwise(ring))
