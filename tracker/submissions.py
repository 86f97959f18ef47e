"""The one write path: validate a batch, authorise it, store revisions, record the batch.

API calls, CSV uploads, web entries, feed runs and the demo loader all call these
functions, so validation, authorisation, revisions and the trail exist once.

Two modes:
- all or nothing (API, CSV, web, demo): any bad row refuses the whole batch with every
  row's error (`SubmissionRejected`, 422), and a row naming another agency's measure
  refuses it with 403 (`SubmissionForbidden`);
- partial (feeds): valid rows are stored, bad and foreign rows come back in
  `Outcome.rejected` with their reasons.
Either way the rows that are stored are written in the caller's one transaction.

Who sent what is kept per revision: each ObservationRevision points at its Batch, which
names the agency, channel, token or user and feed run. The audit trail of values is read
from there rather than copied into AuditEvent.
"""

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update
from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.models import (
    Batch,
    Dimension,
    MeasurePlace,
    Node,
    Observation,
    ObservationRevision,
    Place,
    utcnow,
)

CHANNELS = ("api", "csv", "web", "feed", "demo")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NOTE_MAX = 1000


@dataclass(frozen=True)
class RowError:
    """What is wrong with one row: `row` as the caller numbers rows (None: the whole file)."""

    row: int | None
    field: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


class SubmissionRejected(TrackerError):
    """Bad rows in an all-or-nothing batch; nothing was stored."""

    status = 422

    def __init__(self, errors: Sequence[RowError], message: str = "invalid rows; nothing stored"):
        super().__init__(message, errors=[e.to_json() for e in errors])
        self.row_errors = list(errors)


class SubmissionForbidden(SubmissionRejected):
    """A row names another agency's measure; nothing was stored."""

    status = 403

    def __init__(self, errors: Sequence[RowError]):
        super().__init__(errors, "rows name measures of another agency; nothing stored")


@dataclass
class Outcome:
    """What a batch did: `accepted` counts every stored row, revised and unchanged among them."""

    accepted: int = 0
    revised: int = 0
    unchanged: int = 0
    batch: int | None = None
    rejected: list[RowError] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "revised": self.revised,
            "unchanged": self.unchanged,
            "batch": self.batch,
        }


@dataclass(frozen=True)
class MeasureRules:
    """What a row for one measure must satisfy."""

    id: str
    agency_id: str | None
    places: frozenset[str]
    dimensions: tuple[str, ...]
    derived: bool  # source: works — never submitted


@dataclass(frozen=True)
class CleanRow:
    row: int
    measure_id: str
    place_id: str
    date: date
    dims_key: str
    value: float | None
    note: str | None


def dims_key(dims: dict[str, str]) -> str:
    """Canonical text of a dimension cell: "age=65+|sex=female" (sorted by name), "" if none."""
    return "|".join(f"{name}={dims[name]}" for name in sorted(dims))


def submit_observations(
    session: Session,
    *,
    agency_id: str,
    rows: Sequence[dict[str, Any]],
    channel: str,
    row_numbers: Sequence[int] | None = None,
    token_id: int | None = None,
    user_id: int | None = None,
    feed_run_id: int | None = None,
    dry_run: bool = False,
    partial: bool = False,
    today: date | None = None,
) -> Outcome:
    """Validate and store measure observations as `agency_id`.

    `row_numbers` gives each row's number for error reports (CSV line numbers); default
    the 0-based index. Does not commit: the caller's transaction holds the whole batch.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    numbers = list(row_numbers) if row_numbers is not None else list(range(len(rows)))
    rules = _load_rules(session, rows)
    allowed = _dimension_values(session)
    today = today or _city_today(session)

    clean: list[CleanRow] = []
    errors: list[RowError] = []
    foreign: list[RowError] = []
    seen: dict[tuple, int] = {}
    for number, raw in zip(numbers, rows, strict=True):
        row, row_errors = _validate_row(number, raw, rules, allowed, today)
        if row_errors:
            errors.extend(row_errors)
            continue
        measure = rules[row.measure_id]
        if measure.agency_id != agency_id:
            foreign.append(
                RowError(
                    number,
                    "measure",
                    f"measure {row.measure_id!r} belongs to "
                    f"{measure.agency_id!r}, not {agency_id!r}",
                )
            )
            continue
        key = (row.measure_id, row.place_id, row.date, row.dims_key)
        if key in seen:
            errors.append(
                RowError(
                    number,
                    None,
                    f"duplicate of row {seen[key]}: same measure, place, date and dimensions",
                )
            )
            continue
        seen[key] = number
        clean.append(row)

    if not partial:
        if errors:
            raise SubmissionRejected(sorted(errors, key=_row_order) + foreign)
        if foreign:
            raise SubmissionForbidden(foreign)
    outcome = Outcome(rejected=sorted(errors + foreign, key=_row_order))
    if not clean:
        return outcome
    _store(
        session,
        clean,
        outcome,
        dry_run=dry_run,
        batch=Batch(
            agency_id=agency_id,
            channel=channel,
            token_id=token_id,
            user_id=user_id,
            feed_run_id=feed_run_id,
        ),
    )
    return outcome


def _row_order(error: RowError) -> tuple[int, int]:
    return (-1 if error.row is None else error.row, 0)


def _city_today(session: Session) -> date:
    """Today in the city's timezone, so an evening entry in Christchurch is not "future"."""
    timezone = session.scalar(select(Place.timezone).where(Place.level == "city"))
    return datetime.now(ZoneInfo(timezone or "Pacific/Auckland")).date()


def _load_rules(session: Session, rows: Iterable[dict[str, Any]]) -> dict[str, MeasureRules]:
    """Rules for the measures these rows name (one query for nodes, one for places)."""
    names = {r.get("measure") for r in rows if isinstance(r, dict)}
    names = {n for n in names if isinstance(n, str)}
    if not names:
        return {}
    output = Node.__table__.alias("output_node")
    found = session.execute(
        select(Node.id, output.c.agency_id, Node.dimensions, Node.source)
        .join(output, output.c.id == Node.parent_id)
        .where(Node.id.in_(names), Node.kind == "measure", Node.retired_at.is_(None))
    ).all()
    places: dict[str, set[str]] = {m.id: set() for m in found}
    for measure_id, place_id in session.execute(
        select(MeasurePlace.measure_id, MeasurePlace.place_id).where(
            MeasurePlace.measure_id.in_(places)
        )
    ):
        places[measure_id].add(place_id)
    return {
        m.id: MeasureRules(
            id=m.id,
            agency_id=m.agency_id,
            places=frozenset(places[m.id]),
            dimensions=tuple(m.dimensions or ()),
            derived=m.source == "works",
        )
        for m in found
    }


def _dimension_values(session: Session) -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {}
    for name, value in session.execute(select(Dimension.name, Dimension.value)):
        allowed.setdefault(name, set()).add(value)
    return allowed


def _validate_row(
    number: int,
    raw: Any,
    rules: dict[str, MeasureRules],
    allowed: dict[str, set[str]],
    today: date,
) -> tuple[CleanRow | None, list[RowError]]:
    """One row checked field by field; every problem is reported, not just the first."""
    if not isinstance(raw, dict):
        return None, [RowError(number, None, "a row must be an object")]
    errors: list[RowError] = []

    def fail(field_name: str | None, message: str) -> None:
        errors.append(RowError(number, field_name, message))

    known = {"measure", "place", "date", "value", "dims", "note"}
    for extra in sorted(set(raw) - known):
        fail(extra, f"unknown field {extra!r}")

    measure = None
    measure_id = raw.get("measure")
    if not isinstance(measure_id, str) or not measure_id:
        fail("measure", "measure is required")
    elif measure_id not in rules:
        fail("measure", f"unknown measure {measure_id!r}")
    else:
        measure = rules[measure_id]
        if measure.derived:
            fail(
                "measure",
                f"measure {measure_id!r} is derived from works and cannot be "
                "submitted; submit the works instead",
            )

    place_id = raw.get("place")
    if not isinstance(place_id, str) or not place_id:
        fail("place", "place is required")
    elif measure is not None and place_id not in measure.places:
        fail("place", f"place {place_id!r} is not one of the places measure {measure.id!r} covers")

    when = _parse_date(raw.get("date"), fail, today)
    value = _parse_value(raw.get("value", ...), fail)
    key = _parse_dims(raw.get("dims"), measure, allowed, fail)

    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        fail("note", "note must be text")
    elif isinstance(note, str) and len(note) > NOTE_MAX:
        fail("note", f"note is longer than {NOTE_MAX} characters")

    if errors:
        return None, errors
    return CleanRow(number, measure_id, place_id, when, key, value, note or None), []


def _parse_date(raw: Any, fail, today: date) -> date | None:
    if not isinstance(raw, str) or not ISO_DATE.match(raw):
        fail("date", f"date must be YYYY-MM-DD, got {raw!r}")
        return None
    try:
        when = date.fromisoformat(raw)
    except ValueError:
        fail("date", f"{raw!r} is not a real date")
        return None
    if when > today:
        fail("date", f"date {raw} is in the future")
        return None
    return when


def _parse_value(raw: Any, fail) -> float | None:
    """A finite number; null (or an empty CSV cell) retracts the current value."""
    if raw is ...:
        fail("value", "value is required (null retracts the current value)")
        return None
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        fail("value", "value must be a number, got a boolean")
        return None
    if isinstance(raw, str):
        try:
            number = float(raw.strip())
        except ValueError:
            fail("value", f"value must be a number, got {raw!r}")
            return None
    elif isinstance(raw, int | float):
        number = float(raw)
    else:
        fail("value", f"value must be a number, got {type(raw).__name__}")
        return None
    if not math.isfinite(number):
        fail("value", f"value must be a finite number, got {raw!r}")
        return None
    return number


def _parse_dims(raw: Any, measure: MeasureRules | None, allowed, fail) -> str:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail("dims", "dims must be an object of dimension name to value")
        return ""
    for name, value in raw.items():
        if name not in allowed:
            fail(f"dim.{name}", f"unknown dimension {name!r}")
        elif not isinstance(value, str) or value not in allowed[name]:
            fail(
                f"dim.{name}",
                f"{value!r} is not a value of dimension {name!r} "
                f"({', '.join(sorted(allowed[name]))})",
            )
    if measure is not None:
        for name in raw:
            if name in allowed and name not in measure.dimensions:
                fail(f"dim.{name}", f"measure {measure.id!r} has no dimension {name!r}")
        for name in measure.dimensions:
            if name not in raw:
                fail(f"dim.{name}", f"measure {measure.id!r} needs a value for dimension {name!r}")
    return dims_key({k: v for k, v in raw.items() if isinstance(v, str)})


def _store(
    session: Session, rows: list[CleanRow], outcome: Outcome, *, dry_run: bool, batch: Batch
) -> None:
    """Insert new observations, revise changed ones, leave equal ones; all in bulk."""
    existing = _existing(session, rows)
    new_rows: list[CleanRow] = []
    changed: list[tuple[CleanRow, int, int]] = []  # row, observation id, next revision
    for row in rows:
        current = existing.get((row.measure_id, row.place_id, row.dims_key, row.date))
        if current is None:
            if row.value is None:
                outcome.unchanged += 1  # retracting what was never there changes nothing
            else:
                new_rows.append(row)
        elif current[1] == row.value:
            outcome.unchanged += 1
        else:
            changed.append((row, current[0], current[2] + 1))
            outcome.revised += 1
    outcome.accepted = len(rows)
    if dry_run:
        return

    now = utcnow()
    batch.received_at = now
    batch.accepted, batch.revised, batch.unchanged = (
        outcome.accepted,
        outcome.revised,
        outcome.unchanged,
    )
    session.add(batch)
    session.flush()
    outcome.batch = batch.id

    revisions: list[dict[str, Any]] = []
    if new_rows:
        ids = session.scalars(
            insert(Observation).returning(Observation.id, sort_by_parameter_order=True),
            [
                {
                    "measure_id": r.measure_id,
                    "place_id": r.place_id,
                    "date": r.date,
                    "dims_key": r.dims_key,
                    "value": r.value,
                    "revisions": 1,
                    "batch_id": batch.id,
                    "received_at": now,
                    "note": r.note,
                }
                for r in new_rows
            ],
        ).all()
        revisions += [
            {
                "observation_id": i,
                "revision": 1,
                "value": r.value,
                "batch_id": batch.id,
                "received_at": now,
                "note": r.note,
            }
            for i, r in zip(ids, new_rows, strict=True)
        ]
    if changed:
        session.execute(
            update(Observation),
            [
                {
                    "id": obs_id,
                    "value": r.value,
                    "revisions": rev,
                    "batch_id": batch.id,
                    "received_at": now,
                    "note": r.note,
                }
                for r, obs_id, rev in changed
            ],
        )
        revisions += [
            {
                "observation_id": obs_id,
                "revision": rev,
                "value": r.value,
                "batch_id": batch.id,
                "received_at": now,
                "note": r.note,
            }
            for r, obs_id, rev in changed
        ]
    if revisions:
        session.execute(insert(ObservationRevision), revisions)
        touched = sorted({r.measure_id for r in new_rows} | {r.measure_id for r, _, _ in changed})
        session.execute(
            update(Node).where(Node.id.in_(touched)).values(data_version=Node.data_version + 1)
        )
    session.flush()


def _existing(session: Session, rows: list[CleanRow]) -> dict[tuple, tuple[int, float | None, int]]:
    """Current (id, value, revisions) of the observations these rows address.

    One query per measure over the batch's places and date range, then an exact match in
    Python: cheap for both a few rows and a 10,000-row batch.
    """
    found: dict[tuple, tuple[int, float | None, int]] = {}
    by_measure: dict[str, list[CleanRow]] = {}
    for row in rows:
        by_measure.setdefault(row.measure_id, []).append(row)
    for measure_id, measure_rows in by_measure.items():
        places = sorted({r.place_id for r in measure_rows})
        query = select(
            Observation.id,
            Observation.place_id,
            Observation.dims_key,
            Observation.date,
            Observation.value,
            Observation.revisions,
        ).where(
            Observation.measure_id == measure_id,
            Observation.date >= min(r.date for r in measure_rows),
            Observation.date <= max(r.date for r in measure_rows),
        )
        if len(places) <= 500:
            query = query.where(Observation.place_id.in_(places))
        for obs_id, place_id, key, when, value, revisions in session.execute(query):
            found[(measure_id, place_id, key, when)] = (obs_id, value, revisions)
    return found


def has_demo_data(session: Session) -> bool:
    """Whether any demo batch was loaded (pages then label their figures as demo)."""
    return (
        session.scalar(select(func.count()).select_from(Batch).where(Batch.channel == "demo")) > 0
    )


__all__ = [
    "Outcome",
    "RowError",
    "SubmissionForbidden",
    "SubmissionRejected",
    "dims_key",
    "has_demo_data",
    "submit_observations",
]
