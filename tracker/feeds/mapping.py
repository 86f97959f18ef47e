"""Source rows to submission rows (CONTRACT §7): which source column fills which field
(a feed's `fields` map), the columns a source must have, and one observation or work row
shaped like the API body per source row, or the reasons it cannot be one.
"""

from typing import Any

from shapely.geometry import mapping
from sqlalchemy import select
from sqlmodel import Session

from importers import Importer, SourceRow, SourceTable
from tracker.geometry import lon_lat, parse_geometry
from tracker.models import Feed, Place
from tracker.submissions import RowError
from tracker.text import search_key

# The row fields a feed's field map fills in (a work's geometry comes from the record).
FEED_OBSERVATION_FIELDS = ("measure", "place", "date", "value", "note")
FEED_WORK_FIELDS = (
    "id",
    "title",
    "status",
    "street",
    "planned_start",
    "planned_end",
    "actual_start",
    "actual_end",
    "measure",
    "quantity",
)
# Fields that hold ids or words: a number there (an ArcGIS OBJECTID, a CKAN integer
# column) is meant as text.
TEXT_FIELDS = {"measure", "place", "id", "title", "status", "street"}


def submission_rows(
    session: Session, feed: Feed, table: SourceTable
) -> tuple[list[dict[str, Any]], list[int], list[RowError]]:
    """The rows to submit with their source numbers, and the rows refused before that."""
    names = place_names(session) if feed.place_match == "name" else None
    build = work_row if feed.provides == "works" else observation_row
    rows, numbers, errors = [], [], []
    for source in table.rows:
        row, row_errors = build(source, feed, names)
        if row_errors:
            errors.extend(row_errors)
        else:
            rows.append(row)
            numbers.append(source.number)
    return rows, numbers, errors


def source_column(feed: Feed, target: str) -> str:
    """The source column a feed reads a field from: its `fields` entry, else the same name."""
    return feed.fields.get(target, target)


def missing_columns(feed: Feed, importer: Importer, columns: frozenset[str] | None) -> list[str]:
    """Required columns the source lacks, each with the field it is for; none when unknown."""
    if columns is None:
        return []
    if feed.provides == "works":
        required = ["id", "title", "status"]
    else:
        required = ["place", "date", "value"] + ([] if feed.measure_id else ["measure"])
    missing = [
        f"{source_column(feed, t)!r} (for {t})"
        for t in required
        if source_column(feed, t) not in columns
    ]
    if feed.provides == "works" and not (importer.geometry or _locatable(feed, columns)):
        missing.append(
            f"{source_column(feed, 'geometry')!r} or {source_column(feed, 'street')!r} or "
            f"{source_column(feed, 'lon')!r} and {source_column(feed, 'lat')!r} "
            "(for where the work is)"
        )
    return missing


def _locatable(feed: Feed, columns: frozenset[str]) -> bool:
    """Whether the columns can place a work: a geometry, a street, or lon and lat."""
    return (
        source_column(feed, "geometry") in columns
        or source_column(feed, "street") in columns
        or {source_column(feed, "lon"), source_column(feed, "lat")} <= columns
    )


def _cell(target: str, value: Any) -> Any:
    """A source value as submissions expects it.

    Spreadsheet exports pad cells with spaces, and number-typed id columns give numbers.
    """
    if isinstance(value, str):
        return value.strip()
    if target in TEXT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _mapped(source: SourceRow, feed: Feed, targets: tuple[str, ...]) -> dict[str, Any]:
    """The targets the source row has a value for (a cell it lacks stays out of the row)."""
    row = {}
    for target in targets:
        column = source_column(feed, target)
        if column in source.fields:
            row[target] = _cell(target, source.fields[column])
    return row


def observation_row(
    source: SourceRow, feed: Feed, names: dict[str, list[str]] | None
) -> tuple[dict[str, Any], list[RowError]]:
    """An observation row shaped like the API body, or the reasons it cannot be one."""
    if source.problem:
        return {}, [RowError(source.number, None, source.problem)]
    row = _mapped(source, feed, FEED_OBSERVATION_FIELDS)
    if feed.measure_id:
        row["measure"] = feed.measure_id
    if row.get("note") in (None, ""):
        row.pop("note", None)
    dims = {}
    targets = {t for t in feed.fields if t.startswith("dim.")}
    targets |= {c for c in source.fields if c.startswith("dim.")}
    for target in sorted(targets):
        value = _cell(target, source.fields.get(source_column(feed, target)))
        if value not in (None, ""):
            dims[target[4:]] = value
    if dims:
        row["dims"] = dims
    if names is not None and isinstance(row.get("place"), str):
        ids = names.get(search_key(row["place"]), [])
        if len(ids) != 1:
            problem = "no neighbourhood is named" if not ids else "several neighbourhoods are named"
            return {}, [RowError(source.number, "place", f"{problem} {row['place']!r}")]
        row["place"] = ids[0]
    return row, []


def work_row(
    source: SourceRow, feed: Feed, _names: dict[str, list[str]] | None
) -> tuple[dict[str, Any], list[RowError]]:
    """A work row shaped like the API body, or the reasons it cannot be one."""
    if source.problem:
        return {}, [RowError(source.number, None, source.problem)]
    row = {k: v for k, v in _mapped(source, feed, FEED_WORK_FIELDS).items() if v not in (None, "")}
    if feed.measure_id:
        row["measure"] = feed.measure_id
    geometry, error = _work_geometry(source, feed)
    if error:
        return {}, [error]
    if geometry is not None:
        row["geometry"] = geometry
    return row, []


def _work_geometry(source: SourceRow, feed: Feed) -> tuple[dict | None, RowError | None]:
    """A work's GeoJSON geometry: the importer's, a geometry column, or lon and lat."""
    if source.geometry is not None:
        return source.geometry, None
    value = source.fields.get(source_column(feed, "geometry"))
    if isinstance(value, dict):
        return value, None
    if isinstance(value, str) and value.strip():
        geometry, problem = parse_geometry(value)
        if problem:
            return None, RowError(source.number, "geometry", problem)
        return mapping(geometry), None
    lon = source.fields.get(source_column(feed, "lon"))
    lat = source.fields.get(source_column(feed, "lat"))
    if lon in (None, "") or lat in (None, ""):
        return None, None
    point, problem = lon_lat(lon, lat)
    if problem:
        return None, RowError(source.number, "lon", problem)
    return mapping(point), None


def place_names(session: Session) -> dict[str, list[str]]:
    """Neighbourhood ids by folded name, for `place_match: name` (case and macrons ignored)."""
    names: dict[str, list[str]] = {}
    for place_id, name in session.execute(
        select(Place.id, Place.name).where(Place.level == "neighbourhood").order_by(Place.id)
    ):
        names.setdefault(search_key(name), []).append(place_id)
    return names
