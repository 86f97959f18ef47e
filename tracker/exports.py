"""Open-data exports (CONTRACT §8): every current value, the change history, the roll-up
of every node at every place, places and works as GeoJSON, and the Frictionless data
package describing them.

Each export is a generator of text chunks read from the database in pages of CHUNK rows
(a server-side cursor on PostgreSQL, `fetchmany` on SQLite), so memory stays flat however
large the tables grow; the web layer streams them. Every figure of rollup.csv comes from
`tracker.rollup`, as /api/v1/rollup's do, so the two can never disagree.

CSV cells that are text are neutralised against spreadsheet formulas (`csv_cell`):
anyone can open these files in a spreadsheet, and a place name or title starting with
`=` must not run there.
"""

import csv
import io
import json
import math
import typing
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient
from sqlalchemy import Engine, literal, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from tracker.api.schemas import Status
from tracker.clock import utc_iso
from tracker.models import (
    Agency,
    Batch,
    Dimension,
    Node,
    Observation,
    ObservationRevision,
    Place,
    Work,
    every_revision,
)
from tracker.rollup import RollupCache, load_definitions, rollup
from tracker.vocabulary import BATCH_CHANNELS
from tracker.works import work_features

CHUNK = 1000  # rows read from the database at a time
FEATURE_CHUNK = 100  # features at a time: one can be large (the city's whole boundary)
DIGITS = 6  # RFC 7946 §11.2: about 10 cm; more says nothing true
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LICENCE = {
    "name": "CC-BY-4.0",
    "title": "Creative Commons Attribution 4.0 International",
    "path": "https://creativecommons.org/licenses/by/4.0/",
}
BOUNDARIES_LICENCE = {
    "name": "CC-BY-3.0-NZ",
    "title": "Creative Commons Attribution 3.0 New Zealand",
    "path": "https://creativecommons.org/licenses/by/3.0/nz/",
}
BOUNDARIES_SOURCE = {
    "title": "Stats NZ Area Units 2013",
    "path": "https://datafinder.stats.govt.nz/",
    "description": "Contains Statistics New Zealand data (Area Units 2013), licensed for "
    "re-use under CC BY 3.0 NZ; GeoJSON conversion published by the NZ Herald "
    "(nzherald/nz_area_units_geojson).",
}
STREETS_SOURCE = {
    "title": "LINZ NZ Road Centrelines (Topo 1:50k)",
    "path": "https://data.linz.govt.nz/",
    "description": "Sourced from the LINZ Data Service and licensed for reuse under CC BY 4.0.",
}


# --- CSV cells ---------------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """One CSV cell: numbers as numbers, dates as ISO 8601, times as UTC with Z, booleans
    as true/false, nothing as empty, and text that a spreadsheet would read as a formula
    (starting with =, +, -, @, tab or CR) behind a `'`, which spreadsheets show as text.

    Use it for every cell of every CSV this tracker writes.
    """
    if type(value) is str:  # most cells: the fast path (exports write millions of cells)
        return "'" + value if value[:1] in _FORMULA_FIRST else value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return csv_number(value)
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text[:1] in _FORMULA_FIRST else text


_FORMULA_FIRST = frozenset(FORMULA_STARTS)


def csv_number(value: float) -> str:
    """A number as short as it reads exactly: 412 rather than 412.0, 0.1 as 0.1."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def csv_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """CSV text (RFC 4180, CRLF line ends) for `header` and `rows`, in chunks of about
    CHUNK lines, every cell through `csv_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow([csv_cell(cell) for cell in row])
        if count % CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _streamed(session: Session, query, chunk: int = CHUNK) -> Iterator[Any]:
    """Rows of `query`, fetched `chunk` at a time (a server-side cursor on PostgreSQL)."""
    result = session.execute(query.execution_options(stream_results=True, yield_per=chunk))
    try:
        yield from result
    finally:
        result.close()


def dimension_names(session: Session) -> list[str]:
    """Every declared dimension, by name: one `dim.NAME` column each."""
    return list(session.scalars(select(Dimension.name).distinct().order_by(Dimension.name)))


def _cells(key: str, names: list[str]) -> list[str | None]:
    """The value of each dimension in a dims_key ("age=65+|sex=female"), None where absent."""
    given = dict(part.split("=", 1) for part in key.split("|")) if key else {}
    return [given.get(name) for name in names]


# --- observations.csv ---------------------------------------------------------------------

OBSERVATION_FIELDS = [
    ("measure", "string", "Measure id (see /measures/ID)."),
    ("place", "string", "Neighbourhood id (see /places/ID and places.geojson)."),
    ("date", "date", "The day the value is for (YYYY-MM-DD)."),
    # dim.NAME columns go here
    ("value", "number", "The current value: its latest revision. Empty: the agency "
     "retracted it."),
    ("unit", "string", "The measure's unit."),
    ("revisions", "integer", "How many values were sent for this cell; 1 = never revised."),
    ("agency", "string", "Id of the agency that sent the current value."),
    ("channel", "string", "How it arrived: api, csv (upload), web (form), feed or demo."),
    ("received_at", "datetime", "When the current value was received (UTC)."),
    ("first_received_at", "datetime", "When the first value for this cell was received (UTC)."),
]  # fmt: skip


def observations_csv(session: Session) -> Iterator[str]:
    """Every row of the observation table (every current value), in (measure, place,
    dimension cell, date) order."""
    names = dimension_names(session)
    query = (
        select(
            Observation.measure_id,
            Observation.place_id,
            Observation.date,
            Observation.dims_key,
            Observation.value,
            Node.unit,
            Observation.revisions,
            Batch.agency_id,
            Batch.channel,
            Observation.received_at,
            Observation.first_received_at,
        )
        .join(Batch, Batch.id == Observation.batch_id)
        .outerjoin(Node, Node.id == Observation.measure_id)
        .order_by(
            Observation.measure_id, Observation.place_id, Observation.dims_key, Observation.date
        )
    )

    def rows():
        for measure, place, day, key, value, *rest in _streamed(session, query):
            yield [measure, place, day, *_cells(key, names), value, *rest]

    return csv_lines(_header(OBSERVATION_FIELDS, names), rows())


def _header(fields, names: list[str]) -> list[str]:
    return (
        [f for f, _, _ in fields[:3]] + [f"dim.{n}" for n in names] + [f for f, _, _ in fields[3:]]
    )


# --- revisions.csv ------------------------------------------------------------------------

REVISION_FIELDS = [
    ("measure", "string", "Measure id."),
    ("place", "string", "Neighbourhood id."),
    ("date", "date", "The day the value is for."),
    # dim.NAME columns go here
    ("revision", "integer", "Revision number of this cell: 1 is the first value sent."),
    ("change", "string", "created (revision 1), revised, or retracted (new value empty)."),
    ("old_value", "number", "The value before this revision; empty for revision 1 or when "
     "the one before was a retraction."),
    ("new_value", "number", "The value this revision set; empty for a retraction."),
    ("received_at", "datetime", "When this revision was received (UTC)."),
    ("agency", "string", "Id of the agency that sent it."),
    ("channel", "string", "How it arrived: api, csv (upload), web (form), feed or demo."),
    ("batch", "integer", "The submission it came in; rows sent together share it."),
]  # fmt: skip


def revisions_csv(session: Session) -> Iterator[str]:
    """Every value ever sent, oldest first, each with the value it replaced."""
    names = dimension_names(session)
    every = every_revision()
    before = aliased(ObservationRevision)
    query = (
        select(
            Observation.measure_id,
            Observation.place_id,
            Observation.date,
            Observation.dims_key,
            every.c.revision,
            before.value,
            every.c.value,
            every.c.received_at,
            Batch.agency_id,
            Batch.channel,
            every.c.batch_id,
        )
        .join(Observation, Observation.id == every.c.observation_id)
        .join(Batch, Batch.id == every.c.batch_id)
        .outerjoin(
            before,
            (before.observation_id == every.c.observation_id)
            & (before.revision == every.c.revision - literal(1)),
        )
        .order_by(every.c.received_at, every.c.batch_id, Observation.id, every.c.revision)
    )

    def rows():
        for measure, place, day, key, revision, old, new, *rest in _streamed(session, query):
            change = "created" if revision == 1 else "retracted" if new is None else "revised"
            yield [measure, place, day, *_cells(key, names), revision, change, old, new, *rest]

    return csv_lines(_header(REVISION_FIELDS, names), rows())


# --- rollup.csv ---------------------------------------------------------------------------

ROLLUP_FIELDS = [
    ("date", "date", "The day the figures are for."),
    ("place", "string", "Place id: the city, an area or a neighbourhood."),
    ("place_name", "string", "The place's name."),
    ("place_level", "string", "city, area or neighbourhood."),
    ("node", "string", "Result, output or measure id."),
    ("kind", "string", "result, output or measure."),
    ("parent", "string", "The node's parent in the results tree; empty for a top result."),
    ("title", "string", "The node's title."),
    ("value", "number", "Measures: the value at the place (latest revisions)."),
    ("target", "number", "Measures: the target at the place; empty: no local target."),
    ("baseline", "number", "Measures: the baseline at the place."),
    ("unit", "string", "Measures: the unit."),
    ("progress", "number", "Share of the way from baseline to target, 0 to 1 "
     "(outputs and results: the weighted mean of their children's)."),
    ("expected", "number", "Where progress should be by this day, 0 to 1."),
    ("status", "string", "complete, on_track, at_risk, off_track, no_target or no_data."),
    ("coverage", "number", "Measures: share of neighbourhoods that reported; outputs and "
     "results: share of children's weight with progress."),
    ("as_of", "date", "Measures: the latest observation date among the values used."),
    ("stale", "boolean", "Measures: true when every value used is older than twice the "
     "reporting frequency; empty when nothing was reported."),
    ("forecast", "date", "Measures: the day the trend line reaches the target, if it does."),
]  # fmt: skip


def rollup_csv(session: Session, *, on: date, cache: RollupCache) -> Iterator[str]:
    """Every node taking part at every live place on `on`, with the figures
    /api/v1/rollup gives (CONTRACT §3), place by place in the order of the places export.

    Each measure's neighbourhood values come from SQL once per day (the roll-up's cache
    keeps them for the next place); per place only the small combination runs.
    """
    tree = load_definitions(session, cache)
    places = session.execute(
        select(Place.id, Place.name, Place.level)
        .where(Place.retired_at.is_(None))
        .order_by(Place.level != "city", Place.level != "area", Place.id)
    ).all()

    def rows():
        for place_id, name, level in places:
            if place_id not in tree.places:
                continue
            answer = rollup(session, place_id=place_id, on=on, cache=cache).to_json()
            stack = [(node, None) for node in reversed(answer["results"])]
            while stack:
                node, parent = stack.pop()
                yield [
                    answer["date"], place_id, name, level, node["id"], node["kind"], parent,
                    node["title"], node.get("value"), node.get("target"), node.get("baseline"),
                    node.get("unit"), node["progress"], node["expected"], node["status"],
                    node["coverage"], node.get("as_of"), node.get("stale"), node.get("forecast"),
                ]  # fmt: skip
                stack.extend((child, node["id"]) for child in reversed(node["children"]))

    return csv_lines([f for f, _, _ in ROLLUP_FIELDS], rows())


# --- GeoJSON ------------------------------------------------------------------------------


def rfc7946(geometry: BaseGeometry) -> dict[str, Any]:
    """A geometry as RFC 7946 wants it: at most DIGITS decimals, polygons' exterior rings
    counter-clockwise and holes clockwise (the right-hand rule, §3.1.6)."""
    geometry = shapely.transform(geometry, lambda xy: np.round(xy, DIGITS))
    return mapping(_oriented(geometry))


def _oriented(geometry: BaseGeometry) -> BaseGeometry:
    if geometry.geom_type == "Polygon":
        return orient(geometry, sign=1.0)
    if geometry.geom_type in ("MultiPolygon", "GeometryCollection"):
        return type(geometry)([_oriented(part) for part in geometry.geoms])
    return geometry


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _collection(features: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A FeatureCollection as text, FEATURE_CHUNK features a chunk."""
    parts = ['{"type":"FeatureCollection","features":[']
    for count, feature in enumerate(features):
        parts.append(("," if count else "") + "\n" + to_json(feature))
        if len(parts) >= FEATURE_CHUNK:
            yield "".join(parts)
            parts = []
    parts.append("\n]}\n")
    yield "".join(parts)


def places_geojson(session: Session) -> Iterator[str]:
    """Every live place (city, areas, neighbourhoods) with its full boundary."""
    query = (
        select(Place.id, Place.name, Place.level, Place.parent_id, Place.geometry)
        .where(Place.retired_at.is_(None))
        .order_by(Place.level != "city", Place.level != "area", Place.id)
    )

    def features():
        for place_id, name, level, parent, geometry in _streamed(session, query, FEATURE_CHUNK):
            yield {
                "type": "Feature",
                "id": place_id,
                "properties": {"id": place_id, "name": name, "level": level, "parent": parent},
                "geometry": rfc7946(shape(json.loads(geometry))),
            }

    return _collection(features())


def works_geojson(session: Session) -> Iterator[str]:
    """Every work, in (agency, id) order, with the properties /api/v1/works gives."""
    query = select(Work).order_by(Work.agency_id, Work.ref)

    def features():
        result = session.execute(
            query.execution_options(stream_results=True, yield_per=FEATURE_CHUNK)
        )
        try:
            for chunk in result.scalars().partitions():
                # One query for the chunk's places, not one per work.
                for feature in work_features(session, chunk)["features"]:
                    feature["geometry"] = rfc7946(shape(feature["geometry"]))
                    yield feature
        finally:
            result.close()

    return _collection(features())


# --- datapackage.json ---------------------------------------------------------------------


def datapackage(
    session: Session, *, base_url: str, agency_url: Callable[[str], str], demo: bool
) -> dict[str, Any]:
    """The Frictionless data package (v1) describing every export, with the licence and
    the sources' attributions. `base_url` is the address of /exports/ (for `homepage`),
    `agency_url(id)` that of an agency's page."""
    names = dimension_names(session)
    city = session.execute(select(Place.id, Place.name).where(Place.level == "city")).first()
    agencies = session.execute(
        select(Agency.id, Agency.name).where(Agency.retired_at.is_(None)).order_by(Agency.id)
    ).all()
    title = f"Rebuild tracker: {city.name}" if city else "Rebuild tracker"
    description = (
        "What each agency reported for each neighbourhood, every revision of it, the "
        "roll-up of every result, output and measure at every place, the places and the "
        "located works, as published by the rebuild tracker."
    )
    if demo:
        description += " Demo data: these figures are synthetic examples, not official statistics."
    dims = [
        {"name": f"dim.{n}", "type": "string", "description": f"The {n} dimension's value; "
         "empty for a measure without it."}
        for n in names
    ]  # fmt: skip
    return {
        "profile": "data-package",
        "name": f"{city.id if city else 'city'}-rebuild-tracker",
        "title": title,
        "description": description,
        "homepage": base_url,
        "licenses": [LICENCE],
        "sources": [{"title": name, "path": agency_url(agency_id)} for agency_id, name in agencies]
        + [BOUNDARIES_SOURCE, STREETS_SOURCE],
        "resources": [
            _csv_resource(
                "observations",
                "Every current value (latest revision) of every "
                "measure at every neighbourhood, date and dimension cell.",
                _fields(OBSERVATION_FIELDS, dims),
            ),
            _csv_resource(
                "revisions",
                "The change history: every value ever sent, oldest "
                "first, with the value it replaced, when and by which agency.",
                _fields(REVISION_FIELDS, dims),
            ),
            _csv_resource(
                "rollup",
                "Every result, output and measure at every place on one "
                "day (rollup.csv?date=YYYY-MM-DD; default today in the city), as "
                "/api/v1/rollup gives them.",
                _fields(ROLLUP_FIELDS, []),
                key=["place", "node"],
            ),
            {
                "profile": "data-resource",
                "name": "places",
                "path": "places.geojson",
                "format": "geojson",
                "mediatype": "application/geo+json",
                "encoding": "utf-8",
                "description": "The city, its areas and neighbourhoods as an RFC 7946 "
                "FeatureCollection (WGS84); properties id, name, level, parent.",
                "licenses": [BOUNDARIES_LICENCE],
                "sources": [BOUNDARIES_SOURCE],
            },
            {
                "profile": "data-resource",
                "name": "works",
                "path": "works.geojson",
                "format": "geojson",
                "mediatype": "application/geo+json",
                "encoding": "utf-8",
                "description": "Every located work as an RFC 7946 FeatureCollection (WGS84); "
                "feature id AGENCY/ID; properties id, agency, ref, title, status, street, "
                "places, planned_start, planned_end, actual_start, actual_end, measure, "
                "quantity, updated_at.",
                "licenses": [LICENCE],
                "sources": [STREETS_SOURCE],
            },
        ],
    }


# Table Schema constraints, by column name (a name means the same in every file).
_REQUIRED = {"required": True}
_SHARE = {"minimum": 0, "maximum": 1}
CONSTRAINTS: dict[str, dict[str, Any]] = {
    "measure": _REQUIRED,
    "place": _REQUIRED,
    "date": _REQUIRED,
    "node": _REQUIRED,
    "agency": _REQUIRED,
    "received_at": _REQUIRED,
    "first_received_at": _REQUIRED,
    "batch": _REQUIRED,
    "revisions": {"required": True, "minimum": 1},
    "revision": {"required": True, "minimum": 1},
    "channel": {"required": True, "enum": list(BATCH_CHANNELS)},
    "change": {"required": True, "enum": ["created", "revised", "retracted"]},
    "kind": {"required": True, "enum": ["result", "output", "measure"]},
    "place_level": {"required": True, "enum": ["city", "area", "neighbourhood"]},
    "status": {"required": True, "enum": list(typing.get_args(Status))},
    "progress": _SHARE,
    "expected": _SHARE,
    "coverage": _SHARE,
}


def _fields(fields, dims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    described = [
        {"name": name, "type": kind, "description": text}
        | ({"constraints": CONSTRAINTS[name]} if name in CONSTRAINTS else {})
        for name, kind, text in fields
    ]
    return described[:3] + dims + described[3:] if dims else described


def _csv_resource(
    name: str, description: str, fields: list[dict[str, Any]], key: list[str] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"fields": fields, "missingValues": [""]}
    if key:
        schema["primaryKey"] = key
    return {
        "profile": "tabular-data-resource",
        "name": name,
        "path": f"{name}.csv",
        "format": "csv",
        "mediatype": "text/csv",
        "encoding": "utf-8",
        "description": description,
        "dialect": {"delimiter": ",", "doubleQuote": True, "header": True},
        "schema": schema,
    }


def export_session(engine: Engine) -> Session:
    """A session of its own for one streamed export (it outlives the request's)."""
    return Session(engine, expire_on_commit=False)
