"""Works: each row checked (geometry or street, status, dates, measure), then upserted by
(agency, id) with its places, the streets it lies on, status history and audit events."""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlmodel import Session

from tracker.geometry import parse_geometry
from tracker.limits import date_problem
from tracker.models import (
    MEASURE_AGENCY,
    AuditEvent,
    Batch,
    Node,
    Work,
    WorkPlace,
    WorkStatusChange,
    WorkStreet,
    join_measure_agency,
)
from tracker.submissions.batches import (
    _IN_CHUNK,
    Idempotency,
    Outcome,
    RowError,
    _begin,
    _foreign_measure,
    _lock_agency_writes,
    _record_batch,
    _settle,
    new_batch,
)
from tracker.submissions.fields import ISO_DATE, NUL, NUL_MESSAGE, _parse_value, _text
from tracker.vocabulary import WORK_STATUSES

WORK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
WORK_DATES = ("planned_start", "planned_end", "actual_start", "actual_end")
# The fields a work row may have (JSON; CSV adds lon and lat).
WORK_ROW_FIELDS = {
    "id",
    "title",
    "status",
    "geometry",
    "street",
    "measure",
    "quantity",
    *WORK_DATES,
}
TITLE_MAX = 300


@dataclass
class CleanWork:
    row: int
    ref: str
    title: str
    status: str
    geometry: Any  # shapely geometry, WGS84
    street_id: str | None
    dates: dict[str, date | None]
    measure_id: str | None
    quantity: float | None


def submit_works(
    session: Session,
    *,
    agency_id: str,
    rows: Sequence[dict[str, Any]],
    channel: str,
    row_numbers: Sequence[int] | None = None,
    input_errors: Sequence[RowError] = (),
    token_id: int | None = None,
    user_id: int | None = None,
    feed_run_id: int | None = None,
    idempotency: "Idempotency | None" = None,
    dry_run: bool = False,
    partial: bool = False,
) -> Outcome:
    """Validate and upsert works by (agency, id), located by geometry or along a street.

    Same modes as `submit_observations`. A status change is kept in WorkStatusChange and
    every created or changed work in the audit trail; `source: works` measures that a
    change touches get their data version bumped.
    """
    from tracker.places import city_extent, resolve_street

    replay = _begin(
        session, agency_id, rows, channel, idempotency, dry_run=dry_run, partial=partial
    )
    if replay is not None:
        return replay
    numbers = list(row_numbers) if row_numbers is not None else list(range(len(rows)))
    owners = _measure_agencies(session)
    measures = _works_measures(session)
    extent = city_extent(session)
    errors: list[RowError] = list(input_errors)
    foreign: list[RowError] = []
    clean: list[CleanWork] = []
    seen: dict[str, int] = {}
    for number, raw in zip(numbers, rows, strict=True):
        measure_id = _text(raw, "measure")
        # Any measure of another agency is a 403, derived from works or not (CONTRACT §4).
        if measure_id in owners and owners[measure_id] != agency_id:
            foreign.append(_foreign_measure(number, measure_id, owners[measure_id], agency_id))
            continue
        work, row_errors = _validate_work(session, number, raw, measures, extent, resolve_street)
        if row_errors:
            errors.extend(row_errors)
            continue
        if work.ref in seen:
            errors.append(
                RowError(
                    number,
                    "id",
                    f"duplicate of row {seen[work.ref]}: work {work.ref!r} appears twice",
                )
            )
            continue
        seen[work.ref] = number
        clean.append(work)

    outcome = _settle(errors, foreign, partial=partial)
    if clean:
        batch = new_batch(
            agency_id,
            channel,
            token_id=token_id,
            user_id=user_id,
            feed_run_id=feed_run_id,
            idempotency=idempotency,
        )
        _store_works(session, agency_id, clean, outcome, dry_run=dry_run, batch=batch)
    return outcome


def _works_measures(session: Session) -> dict[str, str | None]:
    """Agency of each live `source: works` measure."""
    return _measure_agencies(session, Node.source == "works")


def _measure_agencies(session: Session, *conditions) -> dict[str, str | None]:
    """Agency (its output's) of each live measure meeting `conditions`."""
    query = join_measure_agency(select(Node.id, MEASURE_AGENCY))
    return dict(
        session.execute(
            query.where(Node.kind == "measure", Node.retired_at.is_(None), *conditions)
        ).all()
    )


def _validate_work(session, number, raw, measures, extent, resolve_street):
    """One work row checked field by field."""
    if not isinstance(raw, dict):
        return None, [RowError(number, None, "a row must be an object")]
    errors: list[RowError] = []

    def fail(field_name: str | None, message: str) -> None:
        errors.append(RowError(number, field_name, message))

    for extra in sorted(set(raw) - WORK_ROW_FIELDS):
        fail(extra, f"unknown field {extra!r}")
    ref = raw.get("id")
    if not isinstance(ref, str) or not WORK_ID.match(ref):
        fail(
            "id",
            "id is required: up to 100 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {ref!r}",
        )
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        fail("title", "title is required")
    elif len(title) > TITLE_MAX:
        fail("title", f"title is longer than {TITLE_MAX} characters")
    elif NUL in title:
        fail("title", NUL_MESSAGE.format("title"))
    status = raw.get("status")
    if status not in WORK_STATUSES:
        fail("status", f"status must be one of {', '.join(WORK_STATUSES)}; got {status!r}")

    geometry, street_id = None, None
    has_geometry = raw.get("geometry") not in (None, "")
    has_street = raw.get("street") not in (None, "")
    if has_geometry == has_street:
        fail("geometry", "give exactly one of geometry or street")
    elif has_geometry:
        # A JSON row sends an object; CSV and feeds read WKT and GeoJSON text into one.
        if isinstance(raw["geometry"], dict):
            geometry, problem = parse_geometry(raw["geometry"])
        else:
            problem = "geometry must be a GeoJSON object"
        problem = problem or _geometry_problem(geometry, extent)
        if problem:
            fail("geometry", problem)
            geometry = None
    elif not isinstance(raw["street"], str):
        fail("street", "street must be a street id or name")
    elif NUL in raw["street"]:
        fail("street", NUL_MESSAGE.format("street"))
    else:
        street_id, geometry, problem = resolve_street(session, raw["street"])
        if problem:
            fail("street", problem)

    dates = {name: _optional_date(raw.get(name), name, fail) for name in WORK_DATES}
    for start, end in (("planned_start", "planned_end"), ("actual_start", "actual_end")):
        if dates[start] and dates[end] and dates[end] < dates[start]:
            fail(end, f"{end} {dates[end]} is before {start} {dates[start]}")
    if status == "complete" and dates["actual_end"] is None:
        fail("actual_end", "a complete work needs actual_end (the day it was finished)")
    if status in ("planned", "cancelled") and dates["actual_end"] is not None:
        fail("actual_end", f"a {status} work cannot have actual_end")

    measure_id = raw.get("measure")
    if measure_id is not None and not isinstance(measure_id, str):
        fail("measure", f"measure must be a measure id, got {type(measure_id).__name__}")
        measure_id = None
    elif measure_id is not None and measure_id not in measures:
        fail("measure", f"{measure_id!r} is not a measure derived from works (source: works)")
    quantity = raw.get("quantity")
    if quantity is not None:
        if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
            fail("quantity", "quantity must be a number")
            quantity = None
        else:
            quantity = _parse_value(quantity, fail, "quantity")
            if quantity is not None and quantity < 0:
                fail("quantity", "quantity cannot be negative")
            if measure_id is None:
                fail("quantity", "quantity needs a measure to count towards")
    if errors:
        return None, errors
    return CleanWork(
        number, ref, title.strip(), status, geometry, street_id, dates, measure_id, quantity
    ), []


def _geometry_problem(geometry, extent) -> str | None:
    """Why a work's geometry cannot be used, or None."""
    if geometry.geom_type not in (
        "Point",
        "LineString",
        "Polygon",
        "MultiPoint",
        "MultiLineString",
        "MultiPolygon",
    ):
        return f"geometry type {geometry.geom_type} is not supported"
    if geometry.is_empty:
        return "geometry is empty"
    if not geometry.is_valid:
        from shapely.validation import explain_validity

        return f"geometry is invalid ({explain_validity(geometry)})"
    if extent is not None and not extent.intersects(geometry):
        return "geometry lies outside the city"
    return None


def _optional_date(raw: Any, name: str, fail) -> date | None:
    if raw in (None, ""):
        return None
    if not isinstance(raw, str) or not ISO_DATE.match(raw):
        fail(name, f"{name} must be YYYY-MM-DD, got {raw!r}")
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        fail(name, f"{raw!r} is not a real date")
        return None
    if problem := date_problem(day):
        fail(name, f"{name} {problem}, got {raw}")
        return None
    return day


def _store_works(
    session: Session,
    agency_id: str,
    works: list[CleanWork],
    outcome: Outcome,
    *,
    dry_run: bool,
    batch: Batch,
) -> None:
    """Insert new works, update changed ones (history and audit kept), skip equal ones."""
    from shapely.geometry import mapping

    from tracker.places import shares_by_place, streets_near

    if not dry_run:
        _lock_agency_writes(session, agency_id)
    refs = [w.ref for w in works]
    existing = {
        w.ref: w
        for start in range(0, len(refs), _IN_CHUNK)
        for w in session.scalars(
            select(Work).where(
                Work.agency_id == agency_id, Work.ref.in_(refs[start : start + _IN_CHUNK])
            )
        )
    }
    planned: list[tuple[CleanWork, dict[str, Any], Work | None]] = []
    for work in works:
        values = {
            "title": work.title,
            "status": work.status,
            "geometry": json.dumps(mapping(work.geometry), separators=(",", ":")),
            "street_id": work.street_id,
            "measure_id": work.measure_id,
            "quantity": work.quantity,
            **work.dates,
        }
        current = existing.get(work.ref)
        if current is not None and all(getattr(current, k) == v for k, v in values.items()):
            outcome.unchanged += 1
            continue
        if current is not None:
            outcome.revised += 1
        planned.append((work, values, current))
    outcome.accepted = len(works)
    if dry_run:
        return
    now = _record_batch(session, batch, outcome)
    # Every work is located before any row is added, against the neighbourhoods read once,
    # and measured against the streets near any of them (one STRtree of street boxes).
    geometries = [work.geometry for work, _, _ in planned]
    shares = shares_by_place(session, geometries)
    on_streets = streets_near(session, geometries, [work.street_id for work, _, _ in planned])
    touched: set[str] = set()
    rows, olds = [], []
    for (work, values, current), here in zip(planned, shares, strict=True):
        minx, miny, maxx, maxy = work.geometry.bounds
        values.update(
            main_place_id=max(here, key=here.get) if here else None,
            min_lon=minx,
            min_lat=miny,
            max_lon=maxx,
            max_lat=maxy,
            batch_id=batch.id,
            updated_at=now,
        )
        if current is None:
            row, old = Work(agency_id=agency_id, ref=work.ref, **values), None
            session.add(row)
        else:
            row = current
            old = {k: _jsonable(getattr(row, k)) for k in values if k not in _NOT_AUDITED}
            if row.measure_id:
                touched.add(row.measure_id)
            for key, value in values.items():
                setattr(row, key, value)
        rows.append(row)
        olds.append(old)
    session.flush()  # new works get their ids, in one multi-row insert
    replaced = [row.id for (_, _, current), row in zip(planned, rows, strict=True) if current]
    for start in range(0, len(replaced), _IN_CHUNK):
        chunk = replaced[start : start + _IN_CHUNK]
        session.execute(delete(WorkPlace).where(WorkPlace.work_id.in_(chunk)))
        session.execute(delete(WorkStreet).where(WorkStreet.work_id.in_(chunk)))
    # The rows that follow from each work go in as plain dicts, in bulk: building an ORM
    # object each was most of what remained of a large batch's time.
    places, streets, changes, events = [], [], [], []
    for (work, values, current), row, here, near, old in zip(
        planned, rows, shares, on_streets, olds, strict=True
    ):
        places += [{"work_id": row.id, "place_id": p, "share": s} for p, s in here.items()]
        streets += [{"work_id": row.id, "street_id": s, "distance_m": d} for s, d in near.items()]
        old_status = old["status"] if old is not None else None
        if old_status != row.status:
            changes.append(
                {
                    "work_id": row.id,
                    "old_status": old_status,
                    "new_status": row.status,
                    "batch_id": batch.id,
                    "changed_at": now,
                }
            )
        if row.measure_id:
            touched.add(row.measure_id)
        new = {k: _jsonable(values[k]) for k in values if k not in _NOT_AUDITED}
        if old is not None:
            old, new = _changed_only(old, new)
        events.append(
            {
                "at": now,
                "agency_id": agency_id,
                "token_id": batch.token_id,
                "user_id": batch.user_id,
                "channel": batch.channel,
                "batch_id": batch.id,
                "action": "work.create" if current is None else "work.update",
                "entity_id": f"{agency_id}/{work.ref}",
                "measure_id": row.measure_id,
                "place_id": row.main_place_id,
                "old": old,
                "new": new,
            }
        )
    for model, values in (
        (WorkPlace, places),
        (WorkStreet, streets),
        (WorkStatusChange, changes),
        (AuditEvent, events),
    ):
        if values:
            session.execute(insert(model), values)
    if touched:
        session.execute(
            update(Node)
            .where(Node.id.in_(sorted(touched)))
            .values(data_version=Node.data_version + 1)
        )
    session.flush()
    _analyze_if_grown(session, sum(current is None for _, _, current in planned))


# A batch adding this many works, and a tenth of the table or more, has PostgreSQL read
# the works tables' statistics again at once (about 85 ms for 40,000 works). Until
# autovacuum does it (a minute later, or never where it is off) the planner takes the new
# rows for a handful, and a page by place or street took 165-212 ms instead of 65.
ANALYZE_AFTER_WORKS = 1000


def _analyze_if_grown(session: Session, added: int) -> None:
    """ANALYZE the works tables on PostgreSQL after a batch that grew them by a tenth."""
    connection = session.connection()
    if added < ANALYZE_AFTER_WORKS or connection.dialect.name != "postgresql":
        return
    if added * 10 >= session.scalar(select(func.count()).select_from(Work)):
        connection.execute(text("ANALYZE work, workplace, workstreet"))


# Derived from the geometry or bookkeeping: the audit keeps what the agency sent.
_NOT_AUDITED = {
    "min_lon",
    "min_lat",
    "max_lon",
    "max_lat",
    "main_place_id",
    "batch_id",
    "updated_at",
}


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _changed_only(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict, dict]:
    keys = [k for k in new if old.get(k) != new[k]]
    return {k: old.get(k) for k in keys}, {k: new[k] for k in keys}
