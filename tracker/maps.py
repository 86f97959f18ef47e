"""Every map on the site, built with Folium: plain data in, HTML out.

No database or request access here: pages gather the figures (through the roll-up, like
the API) and pass them in, so a map's tooltip and the table beside it show the same words.

Three rules hold for every map:
- Nothing loads from outside the site but map tiles. Folium's CDN asset lists are emptied;
  pages load the vendored Leaflet from static/ themselves, and the map's script is handed
  back without its <script> tag so the page wraps it with the response's CSP nonce.
- Every text that reaches the map is escaped with `map_text`: Folium puts tooltips into
  `innerHTML` from inside JavaScript template literals, so HTML escaping alone is not
  enough (FIELD_NOTES: `${…}`, backticks and backslashes must go too).
- Maps stay small: coordinates are rounded, the city view uses simplified boundaries, and
  works travel as one GeoJSON layer per agency, not one marker each.
"""

import functools
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import folium
import shapely
import shapely.geometry
from folium.features import GeoJsonPopup, GeoJsonTooltip

from tracker.geometry import point_on
from tracker.rollup.cache import LRU

# Pages include Leaflet from static/; Folium must not add its CDN links (a new list, not
# a mutation: the class attributes are shared by every map).
folium.Map.default_js = []
folium.Map.default_css = []

CHRISTCHURCH = (-43.53, 172.63)
MAX_ZOOM = 18
COORDINATE_DECIMALS = 5  # about 1 m: finer than any boundary or work position we hold


@dataclass(frozen=True)
class Style:
    """How one class of feature is drawn, and the words that say the same without colour."""

    label: str
    fill: str
    line: str
    dash: str | None = None  # a dashed outline tells a class apart without its colour
    fill_opacity: float = 0.65


# Roll-up statuses (CONTRACT §3 rule 7). "No data" is its own class, drawn hollow and
# dashed: never the colour of zero or of the lowest band.
STATUS_STYLES: Mapping[str, Style] = {
    "complete": Style("Complete", "#1a6b35", "#10421f"),
    "on_track": Style("On track", "#74b77a", "#2f6b36"),
    "at_risk": Style("At risk", "#f0a04b", "#8a5312", dash="6 3"),
    "off_track": Style("Off track", "#b2182b", "#5c0c16", dash="2 3"),
    "no_target": Style("No local target", "#a9a3d1", "#514a8a", fill_opacity=0.5),
    "no_data": Style("No data", "#ffffff", "#6b6b6b", dash="4 4", fill_opacity=0.15),
}

# Work statuses as residents read them; "unknown" is an open work left unchanged too long.
WORK_STYLES: Mapping[str, Style] = {
    "planned": Style("Planned", "#2b83ba", "#ffffff", fill_opacity=0.95),
    "in_progress": Style("Under way", "#e66101", "#ffffff", fill_opacity=0.95),
    "complete": Style("Done", "#5e3c99", "#ffffff", fill_opacity=0.95),
    "cancelled": Style("Cancelled", "#8c8c8c", "#ffffff", dash="3 3", fill_opacity=0.8),
    "unknown": Style("Status unknown", "#ffffff", "#222222", dash="2 2", fill_opacity=0.95),
}


# Problem reports (tracker.reports): open ones stand out, closed ones fade.
REPORT_STYLES: Mapping[str, Style] = {
    "open": Style("Open report", "#c51b7d", "#ffffff", fill_opacity=0.95),
    "closed": Style("Closed report", "#b8b8b8", "#444444", dash="2 2", fill_opacity=0.8),
}


@dataclass(frozen=True)
class Tiles:
    """A background tile layer: an XYZ URL template and its attribution (HTML)."""

    url: str
    attribution: str


@dataclass(frozen=True, kw_only=True)
class Area:
    """A polygon coloured by `status`, with a tooltip of its name and a line of figures."""

    id: str
    name: str
    geometry: Mapping[str, Any]
    status: str
    summary: str = ""


@dataclass(frozen=True, kw_only=True)
class Line:
    """A line drawn over the areas: a street."""

    name: str
    geometry: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class WorkMark:
    """A work: its shown status (a WORK_STYLES key), agency and where it is."""

    id: str
    title: str
    status: str
    agency: str
    geometry: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class ReportMark:
    """A problem report: its number, category, status (a REPORT_STYLES key) and point."""

    id: int
    title: str
    status: str
    lon: float
    lat: float


@dataclass(frozen=True)
class RenderedMap:
    """A map ready for a page: its <div>, and its JavaScript without a <script> tag."""

    html: str
    script: str
    name: str  # the JavaScript name of the map, also the id of its <div>
    layers: tuple[str, ...] = field(default=())  # the works layers' names, for the page
    script_url: str = ""  # where the page loads the script from (set by the page)

    def renamed(self, name: str) -> "RenderedMap":
        """The same map under another name, in its <div> and its script alike (Folium
        names maps at random; a page and its script may be built by different workers)."""
        return replace(
            self,
            html=self.html.replace(self.name, name),
            script=self.script.replace(self.name, name),
            name=name,
        )


def map_text(value: object) -> str:
    """Text safe in Folium's tooltips: HTML-escaped, and inert inside template literals."""
    escaped = html.escape(str(value), quote=True)
    return escaped.replace("`", "&#96;").replace("$", "&#36;").replace("\\", "&#92;")


def build_map(
    *,
    areas: Sequence[Area] = (),
    lines: Sequence[Line] = (),
    works: Sequence[WorkMark] = (),
    reports: Sequence[ReportMark] = (),
    tiles: Tiles | None = None,
    bounds: Sequence[float] | None = None,
    simplify: float | None = None,
    works_as_points: bool = False,
    label: str = "Map",
) -> RenderedMap:
    """A Leaflet map of `areas` (by status), `lines`, `works` (one layer per agency) and
    problem `reports` (one layer, each with a popup linking to its page).

    `bounds` is [west, south, east, north] to show; without it the map fits its features.
    For a whole-city view, `simplify` (degrees) thins the areas' boundaries and
    `works_as_points` draws each work as one point on it (a work along a street would
    otherwise carry the whole street's line). `label` names the map for screen readers
    (the page pairs it with a table of the same data).
    """
    if simplify:
        areas = [replace(a, geometry=_simplified(a.geometry, simplify)) for a in areas]
    if works_as_points:
        works = [replace(w, geometry=_point_on(w.geometry)) for w in works]
    m = folium.Map(
        location=CHRISTCHURCH,
        zoom_start=11,
        tiles=None,
        max_zoom=MAX_ZOOM,
        control_scale=True,
        prefer_canvas=False,
    )
    if tiles is not None:
        folium.TileLayer(
            tiles=tiles.url, attr=tiles.attribution, name="Streets", max_zoom=MAX_ZOOM
        ).add_to(m)
    if areas:
        _area_layer(areas).add_to(m)
    for line in lines:
        folium.GeoJson(
            _feature(line.geometry, {"name": map_text(line.name)}),
            name=map_text(line.name),
            # A wide, pale band under the works: the street stays visible where works
            # cover it (a work along it is drawn on top, in its status colour).
            style_function=lambda _: {"color": "#1d2433", "weight": 14, "opacity": 0.3},
            tooltip=GeoJsonTooltip(fields=["name"], labels=False),
        ).add_to(m)
    layers = []
    for agency, marks in _by_agency(works).items():
        _works_layer(agency, marks).add_to(m)
        layers.append(agency)
    if reports:
        _reports_layer(reports).add_to(m)
        layers.append("Problem reports")
    if len(layers) > 1 or (layers and areas):
        # Collapsed: open, it would cover a phone's map; it opens on tap, hover or focus.
        folium.LayerControl(collapsed=True).add_to(m)
    extent = bounds or _extent(
        [a.geometry for a in areas]
        + [x.geometry for x in (*lines, *works)]
        + [{"type": "Point", "coordinates": [r.lon, r.lat]} for r in reports]
    )
    if extent is not None:
        west, south, east, north = extent
        m.fit_bounds([[south, west], [north, east]])
    root = m.get_root()
    root.render()
    div = root.html.render().strip()
    div = div.replace("<div ", f'<div role="region" aria-label="{html.escape(label)}" ', 1)
    return RenderedMap(div, root.script.render(), m.get_name(), tuple(layers))


def _area_layer(areas: Sequence[Area]) -> folium.GeoJson:
    return _layer(
        "Neighbourhoods",
        [
            (a.id, a.geometry, STATUS_STYLES[a.status], {"name": a.name, "summary": a.summary})
            for a in areas
        ],
        weight=1,
        highlight_function=lambda _: {"weight": 3},
    )


def _works_layer(agency: str, marks: Sequence[WorkMark]) -> folium.GeoJson:
    return _layer(
        f"Works: {agency}",
        [
            (m.id, m.geometry, WORK_STYLES[m.status], {"title": m.title, "agency": m.agency})
            for m in marks
        ],
        weight=2,
        marker=folium.CircleMarker(radius=6, fill=True),
    )


def _reports_layer(reports: Sequence[ReportMark]) -> folium.GeoJson:
    """Reports as points; the popup's link is ours, its words escaped with map_text."""
    layer = _layer(
        "Problem reports",
        [
            (
                f"report-{r.id}",
                {"type": "Point", "coordinates": [r.lon, r.lat]},
                REPORT_STYLES[r.status],
                {"title": f"Report {r.id}: {r.title}"},
            )
            for r in reports
        ],
        weight=2,
        marker=folium.CircleMarker(radius=5, fill=True),
    )
    for feature, report in zip(layer.data["features"], reports, strict=True):
        feature["properties"]["link"] = (
            f'<a href="/reports/{int(report.id)}">{feature["properties"]["title"]}</a>'
        )
    GeoJsonPopup(fields=["link"], labels=False).add_to(layer)
    return layer


def _layer(
    name: str,
    items: Sequence[tuple[str, Mapping[str, Any], Style, dict[str, str]]],
    *,
    weight: int,
    **options: Any,
) -> folium.GeoJson:
    """One GeoJSON layer of (id, geometry, style, texts): each feature drawn in its style,
    with a tooltip of its texts and its style's label, every text escaped."""
    styles = {}
    features = []
    for feature_id, geometry, style, texts in items:
        properties = {"status": map_text(style.label)}
        properties |= {key: map_text(value) for key, value in texts.items()}
        feature = _feature(geometry, properties, feature_id=feature_id)
        styles[feature["id"]] = _style(style, weight=weight, line="Line" in geometry["type"])
        features.append(feature)
    # The tooltip reads: name or title, status, then the rest.
    first, *rest = items[0][3] if items else ("status",)
    fields = [first, "status", *rest] if first != "status" else ["status"]
    return folium.GeoJson(
        {"type": "FeatureCollection", "features": features},
        name=map_text(name),
        style_function=lambda feature: styles[feature["id"]],
        tooltip=GeoJsonTooltip(fields=fields, labels=False),
        **options,
    )


def _style(style: Style, *, weight: int, line: bool = False) -> dict[str, Any]:
    """Leaflet's style for a feature; a line (a work along a street) has no fill, so it is
    drawn thick in the fill colour (its outline colour where the fill is white)."""
    if line:
        colour = style.line if style.fill.lower() == "#ffffff" else style.fill
        return {"color": colour, "weight": max(weight, 5), "opacity": 0.9, "dashArray": style.dash}
    return {
        "fillColor": style.fill,
        "color": style.line,
        "weight": weight,
        "fillOpacity": style.fill_opacity,
        "dashArray": style.dash,
    }


def _by_agency(works: Iterable[WorkMark]) -> dict[str, list[WorkMark]]:
    layers: dict[str, list[WorkMark]] = {}
    for work in works:
        layers.setdefault(work.agency, []).append(work)
    return dict(sorted(layers.items()))


def _feature(
    geometry: Mapping[str, Any], properties: dict[str, str], *, feature_id: str | None = None
) -> dict[str, Any]:
    feature: dict[str, Any] = {
        "type": "Feature",
        "geometry": {
            "type": geometry["type"],
            "coordinates": _rounded(geometry["coordinates"]),
        },
        "properties": properties,
    }
    if feature_id is not None:
        feature["id"] = map_text(feature_id)
    return feature


def _simplified(geometry: Mapping[str, Any], tolerance: float) -> dict[str, Any]:
    shape = shapely.geometry.shape(geometry).simplify(tolerance, preserve_topology=True)
    return shapely.geometry.mapping(shape)


def _point_on(geometry: Mapping[str, Any]) -> dict[str, Any]:
    if geometry["type"] == "Point":
        return dict(geometry)
    return shapely.geometry.mapping(point_on(shapely.geometry.shape(geometry)))


def point_of(geometry_text: str) -> dict[str, Any]:
    """A point on a geometry stored as GeoJSON text: where a work is marked on the city map.

    Kept by the text: parsing some hundreds of street lines was most of the city page's
    build, and works change far less often than the figures that make it be rebuilt."""
    return {"type": "Point", "coordinates": list(_point_of_text(geometry_text))}


@functools.lru_cache(maxsize=4096)
def _point_of_text(geometry_text: str) -> tuple[float, float]:
    point = point_on(shapely.geometry.shape(json.loads(geometry_text)))
    return point.x, point.y


def _rounded(coordinates: Any) -> Any:
    if isinstance(coordinates, int | float):
        return round(coordinates, COORDINATE_DECIMALS)
    return [_rounded(c) for c in coordinates]


def _extent(geometries: Iterable[Mapping[str, Any]]) -> tuple[float, ...] | None:
    """[west, south, east, north] around every coordinate, or None for no geometry."""
    lons: list[float] = []
    lats: list[float] = []

    def walk(coordinates: Any) -> None:
        if coordinates and isinstance(coordinates[0], int | float):
            lons.append(coordinates[0])
            lats.append(coordinates[1])
        else:
            for c in coordinates:
                walk(c)

    for geometry in geometries:
        walk(geometry["coordinates"])
    if not lons:
        return None
    return (min(lons), min(lats), max(lons), max(lats))


class MapCache:
    """Rendered maps by key; callers put the data versions a map was built from in the key,
    so an entry is never stale, only unused."""

    def __init__(self, size: int = 256):
        self._maps = LRU(size)

    def get_or_build(self, key: tuple, build) -> RenderedMap:
        rendered = self._maps.get(key)
        if rendered is None:
            rendered = build()
            self._maps.put(key, rendered)
        return rendered
