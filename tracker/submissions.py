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

Who sent what is kept per revision: an Observation row (its latest revision) and each
ObservationRevision (the values it held before) point at their Batch, which names the
agency, channel, token or user and feed run. The audit trail of values is read from
there rather than copied into AuditEvent.
"""

import functools
import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, insert, select, text, true, update
from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.limits import EARLIEST_DATE, MAX_MAGNITUDE, date_problem, magnitude_problem
from tracker.models import (
    AuditEvent,
    Batch,
    Dimension,
    MeasurePlace,
    Node,
    Observation,
    ObservationRevision,
    Place,
    Work,
    WorkPlace,
    WorkStatusChange,
    utcnow,
)

CHANNELS = ("api", "csv", "web", "feed", "demo")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NOTE_MAX = 1000
NUL = "\x00"  # PostgreSQL refuses it in text; no title, note or name needs it
NUL_MESSAGE = "{} holds a NUL character"
IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_KEY_MAX = 200


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


class CleanRow(NamedTuple):
    """A valid observation row (a tuple: a large batch makes a hundred thousand)."""

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
    input_errors: Sequence[RowError] = (),
    token_id: int | None = None,
    user_id: int | None = None,
    feed_run_id: int | None = None,
    idempotency: "Idempotency | None" = None,
    dry_run: bool = False,
    partial: bool = False,
    today: date | None = None,
) -> Outcome:
    """Validate and store measure observations as `agency_id`.

    `row_numbers` gives each row's number for error reports (CSV line numbers); default
    the 0-based index. `input_errors` are problems found while reading the input (a CSV
    record with too many fields …), reported with the rest. Does not commit: the caller's
    transaction holds the whole batch.
    """
    replay = _begin(
        session, agency_id, rows, channel, idempotency, dry_run=dry_run, partial=partial
    )
    if replay is not None:
        return replay
    numbers = list(row_numbers) if row_numbers is not None else list(range(len(rows)))
    rules = _load_rules(session, rows)
    allowed = _dimension_values(session)
    today = today or _city_today(session)

    clean: list[CleanRow] = []
    errors: list[RowError] = list(input_errors)
    foreign: list[RowError] = []
    seen: dict[tuple, int] = {}
    for number, raw in zip(numbers, rows, strict=True):
        measure = rules.get(_text(raw, "measure"))
        if measure is not None and measure.agency_id != agency_id:
            foreign.append(_foreign_measure(number, measure.id, measure.agency_id, agency_id))
            continue
        row, row_errors = _validate_row(number, raw, rules, allowed, today)
        if row_errors:
            errors.extend(row_errors)
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

    outcome = _settle(errors, foreign, partial=partial)
    if clean:
        batch = Batch(
            agency_id=agency_id,
            channel=channel,
            token_id=token_id,
            user_id=user_id,
            feed_run_id=feed_run_id,
            idempotency_key=idempotency.key if idempotency else None,
            body_hash=idempotency.body_hash if idempotency else None,
        )
        _store(session, clean, outcome, dry_run=dry_run, batch=batch)
    return outcome


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key header and a hash of the body it came with."""

    key: str
    body_hash: str

    @classmethod
    def of(cls, key: str | None, body: bytes) -> "Idempotency | None":
        if not key:
            return None
        if len(key) > IDEMPOTENCY_KEY_MAX:
            raise TrackerError(f"Idempotency-Key is longer than {IDEMPOTENCY_KEY_MAX} characters")
        if not key.isprintable():
            raise TrackerError("Idempotency-Key must be printable text")
        return cls(key, hashlib.sha256(body).hexdigest())


def _begin(
    session: Session,
    agency_id: str,
    rows: Sequence[Any],
    channel: str,
    idempotency: Idempotency | None,
    *,
    dry_run: bool,
    partial: bool,
) -> Outcome | None:
    """Checks before validating rows; the first answer again when a key is replayed."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if idempotency is not None and not dry_run:
        replay = _replay(session, agency_id, idempotency)
        if replay is not None:
            return replay
    if not rows and not partial:
        raise SubmissionRejected([RowError(None, None, "the batch has no rows")])
    return None


def _replay(session: Session, agency_id: str, idempotency: Idempotency) -> Outcome | None:
    """The outcome of the batch sent earlier with this key (409 if its body differed).

    Keys live 24 hours: an older batch lets go of its key so the key can be used again.
    """
    session.execute(
        update(Batch)
        .where(
            Batch.agency_id == agency_id,
            Batch.idempotency_key == idempotency.key,
            Batch.received_at < utcnow() - IDEMPOTENCY_TTL,
        )
        .values(idempotency_key=None)
    )
    earlier = session.scalars(
        select(Batch).where(Batch.agency_id == agency_id, Batch.idempotency_key == idempotency.key)
    ).first()
    if earlier is None:
        return None
    if earlier.body_hash != idempotency.body_hash:
        raise TrackerError(
            "this Idempotency-Key was used in the last 24 hours with a different body",
            status=409,
        )
    return Outcome(
        accepted=earlier.accepted,
        revised=earlier.revised,
        unchanged=earlier.unchanged,
        batch=earlier.id,
    )


def _text(raw: Any, key: str) -> str | None:
    """raw[key] when raw is an object and the value is text, else None."""
    value = raw.get(key) if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def _foreign_measure(number: int, measure_id: str, owner: str | None, agency_id: str) -> RowError:
    return RowError(
        number, "measure", f"measure {measure_id!r} belongs to {owner!r}, not {agency_id!r}"
    )


def _settle(errors: list[RowError], foreign: list[RowError], *, partial: bool) -> Outcome:
    """All or nothing: refuse the batch over any bad row (403 if any row is another
    agency's). Partial (feeds): the bad rows become the outcome's rejected rows."""
    if not partial:
        if foreign:
            raise SubmissionForbidden(sorted(foreign + errors, key=_row_order))
        if errors:
            raise SubmissionRejected(sorted(errors, key=_row_order))
    return Outcome(rejected=sorted(errors + foreign, key=_row_order))


def _record_batch(session: Session, batch: Batch, outcome: Outcome) -> datetime:
    """Store the batch row with the outcome's counts; its time is the batch's time."""
    batch.received_at = utcnow()
    batch.accepted = outcome.accepted
    batch.revised = outcome.revised
    batch.unchanged = outcome.unchanged
    session.add(batch)
    session.flush()
    outcome.batch = batch.id
    return batch.received_at


def _row_order(error: RowError) -> tuple[int, int]:
    return (-1 if error.row is None else error.row, 0)


def _city_today(session: Session) -> date:
    """Today in the city's timezone, so an evening entry in Christchurch is not "future"."""
    timezone = session.scalar(select(Place.timezone).where(Place.level == "city"))
    return datetime.now(ZoneInfo(timezone or "Pacific/Auckland")).date()


def _load_rules(session: Session, rows: Iterable[dict[str, Any]]) -> dict[str, MeasureRules]:
    """Rules for the measures these rows name (one query for nodes, one for places)."""
    names = {_text(r, "measure") for r in rows} - {None}
    if not names:
        return {}
    output = Node.__table__.alias("output_node")
    # A batch naming thousands of (unknown) measures reads every measure instead of
    # binding a parameter per name.
    named = Node.id.in_(names) if len(names) <= _IN_CHUNK else true()
    found = session.execute(
        select(Node.id, output.c.agency_id, Node.dimensions, Node.source)
        .join(output, output.c.id == Node.parent_id)
        .where(named, Node.kind == "measure", Node.retired_at.is_(None))
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


_ROW_FIELDS = frozenset({"measure", "place", "date", "value", "dims", "note"})


def _validate_row(
    number: int,
    raw: Any,
    rules: dict[str, MeasureRules],
    allowed: dict[str, set[str]],
    today: date,
) -> tuple[CleanRow | None, list[RowError]]:
    """One row: the common shape accepted at once, anything else checked field by field."""
    quick = _quick_row(number, raw, rules, today)
    if quick is not None:
        return quick, []
    return _check_row(number, raw, rules, allowed, today)


def _quick_row(
    number: int, raw: Any, rules: dict[str, MeasureRules], today: date
) -> CleanRow | None:
    """The row, when it is exactly measure, place, date and a number for a measure without
    dimensions: nearly every row of a large batch, accepted in a few look-ups.

    None means "not sure", never "invalid": such a row goes through `_check_row`, which
    accepts it or names every problem. It accepts only rows `_check_row` accepts, as the
    same CleanRow (tests/test_submissions_quick.py checks that on generated rows).
    """
    if type(raw) is not dict or len(raw) != 4:
        return None
    try:
        measure = rules[raw["measure"]]
        place_id = raw["place"]
        when = _iso_date(raw["date"])
        value = raw["value"]
        if type(value) is str:
            value = float(value.strip())
        elif type(value) is int:
            value = float(value)
        elif type(value) is not float:
            return None
        if (
            measure.derived
            or measure.dimensions
            or place_id not in measure.places
            or type(when) is not date
            or when > today
            or when < EARLIEST_DATE
            or not abs(value) <= MAX_MAGNITUDE  # NaN too
        ):
            return None
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return CleanRow(number, measure.id, place_id, when, "", value, None)


def _check_row(
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

    if not _ROW_FIELDS.issuperset(raw):
        for extra in sorted(set(raw) - _ROW_FIELDS):
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
    elif isinstance(note, str) and NUL in note:
        fail("note", NUL_MESSAGE.format("note"))

    if errors:
        return None, errors
    return CleanRow(number, measure_id, place_id, when, key, value, note or None), []


def _parse_date(raw: Any, fail, today: date) -> date | None:
    when = _iso_date(raw) if isinstance(raw, str) else None
    if when is None:
        fail("date", f"date must be YYYY-MM-DD, got {raw!r}")
        return None
    if isinstance(when, str):
        fail("date", when)
        return None
    if when > today:
        fail("date", f"date {raw} is in the future")
        return None
    if problem := date_problem(when):
        fail("date", f"date {problem}, got {raw}")
        return None
    return when


@functools.lru_cache(maxsize=4096)
def _iso_date(raw: str) -> date | str | None:
    """The date `raw` names, a problem, or None when it is not YYYY-MM-DD at all.

    Cached: a batch usually repeats a handful of dates over thousands of rows.
    """
    if not ISO_DATE.match(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return f"{raw!r} is not a real date"


def _parse_value(raw: Any, fail, name: str = "value") -> float | None:
    """A finite number; null (or an empty CSV cell) retracts the current value."""
    if raw is ...:
        fail(name, f"{name} is required (null retracts the current value)")
        return None
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        fail(name, f"{name} must be a number, got a boolean")
        return None
    if isinstance(raw, str):
        try:
            number = float(raw.strip())
        except ValueError:
            fail(name, f"{name} must be a number, got {_short(raw)}")
            return None
    elif isinstance(raw, int | float):
        try:
            number = float(raw)
        except OverflowError:  # an integer with hundreds of digits
            number = math.inf
    else:
        fail(name, f"{name} must be a number, got {type(raw).__name__}")
        return None
    if not math.isfinite(number):
        fail(name, f"{name} must be a finite number, got {_short(raw)}")
        return None
    if problem := magnitude_problem(number):
        fail(name, f"{name} {problem}, got {_short(raw)}")
        return None
    return number


def _short(raw: Any) -> str:
    """A value as an error message quotes it: a number of 5,000 digits is not repeated."""
    text = repr(raw) if isinstance(raw, str) else _number_text(raw)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _number_text(number: Any) -> str:
    """A number as text; an integer of thousands of digits has no str() in Python 3.11+."""
    try:
        return str(number)
    except ValueError:
        return f"an integer of about {int(number.bit_length() * 0.30103)} digits"


def _parse_dims(raw: Any, measure: MeasureRules | None, allowed, fail) -> str:
    if raw is None:
        if measure is not None and not measure.dimensions:
            return ""  # the common case, decided without building anything
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
    if not dry_run:
        _lock_agency_writes(session, batch.agency_id)
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
    now = _record_batch(session, batch, outcome)

    if new_rows:
        _insert_observations(session, new_rows, batch.id, now)
    if changed:
        # The value being replaced goes to the history first, copied in SQL.
        obs = Observation
        replaced = (obs.id, obs.revisions, obs.value, obs.batch_id, obs.received_at, obs.note)
        ids = [obs_id for _, obs_id, _ in changed]
        for start in range(0, len(ids), _IN_CHUNK):
            session.execute(
                insert(ObservationRevision).from_select(
                    ["observation_id", "revision", "value", "batch_id", "received_at", "note"],
                    select(*replaced).where(obs.id.in_(ids[start : start + _IN_CHUNK])),
                )
            )
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
    if new_rows or changed:
        touched = sorted({r.measure_id for r in new_rows} | {r.measure_id for r, _, _ in changed})
        session.execute(
            update(Node).where(Node.id.in_(touched)).values(data_version=Node.data_version + 1)
        )
    session.flush()


_IN_CHUNK = 5000  # ids in one IN (…): well inside both backends' limits on parameters

_OBSERVATION_COLUMNS = (
    "measure_id",
    "place_id",
    "date",
    "dims_key",
    "value",
    "revisions",
    "batch_id",
    "received_at",
    "first_received_at",
    "note",
)


def _insert_observations(
    session: Session, rows: list[CleanRow], batch_id: int, now: datetime
) -> None:
    """New observations in one driver-level bulk write: COPY on PostgreSQL, executemany
    on SQLite.

    The biggest cost of a large batch: SQLAlchemy's per-row parameter handling took as long
    as the insert itself, so the rows go to the driver as plain tuples, with the date
    and time converted by the column types' own bind processors (which turn them into
    text on SQLite and leave them to the driver on PostgreSQL). On PostgreSQL, COPY
    takes the rows as one stream instead of a statement per row.
    """
    connection = session.connection()
    dialect = connection.dialect
    table = Observation.__table__
    day = functools.lru_cache(maxsize=None)(_bind(table.c.date, dialect))  # few distinct days
    at = _bind(table.c.received_at, dialect)(now)
    values = [
        (r.measure_id, r.place_id, day(r.date), r.dims_key, r.value, 1, batch_id, at, at, r.note)
        for r in rows
    ]
    columns = ", ".join(_OBSERVATION_COLUMNS)
    if dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        return
    marks = ", ".join("?" * len(_OBSERVATION_COLUMNS))
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", values)


def _bind(column, dialect) -> Callable[[Any], Any]:
    """How the dialect stores the column's values (text on SQLite), as SQLAlchemy would."""
    return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)


def _lock_agency_writes(session: Session, agency_id: str) -> None:
    """Hold the agency's write lock from here to the end of the transaction.

    Taken before a batch reads the rows it is about to change. Without it, two batches of
    one agency sent at once both read "no such observation" (or work) and both insert it
    (a unique-constraint 500), both read revision n and both store n + 1 (a revision lost
    from the count), and on PostgreSQL update the same rows in different orders
    (deadlock). Agencies never write each other's rows, so on PostgreSQL their batches
    still run side by side: a transaction-level advisory lock per agency, released at
    commit or rollback. SQLite has one writer at a time anyway: BEGIN IMMEDIATE takes
    its write lock now, waiting out the busy timeout, instead of at the first write after
    the reads; a transaction that has written already holds it.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        key = zlib.crc32(f"tracker:agency-writes:{agency_id}".encode())
        session.execute(text("SELECT pg_advisory_xact_lock(CAST(:key AS bigint))"), {"key": key})
    elif connection.dialect.name == "sqlite" and not _sqlite_in_transaction(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_in_transaction(connection) -> bool:
    return connection.connection.dbapi_connection.in_transaction


def _existing(session: Session, rows: list[CleanRow]) -> dict[tuple, tuple[int, float | None, int]]:
    """Current (id, value, revisions) of the observations these rows address.

    One query per measure over the batch's places, cells and date range (seeks in
    uq_observation), then an exact match in Python: cheap for both a few rows and a
    10,000-row batch.
    """
    found: dict[tuple, tuple[int, float | None, int]] = {}
    by_measure: dict[str, list[CleanRow]] = {}
    for row in rows:
        by_measure.setdefault(row.measure_id, []).append(row)
    for measure_id, measure_rows in by_measure.items():
        places = sorted({r.place_id for r in measure_rows})
        keys = sorted({r.dims_key for r in measure_rows})
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
        if len(keys) <= 500:
            query = query.where(Observation.dims_key.in_(keys))
        for obs_id, place_id, key, when, value, revisions in session.execute(query):
            found[(measure_id, place_id, key, when)] = (obs_id, value, revisions)
    return found


def has_demo_data(session: Session) -> bool:
    """Whether any demo batch was loaded (pages then label their figures as demo)."""
    return (
        session.scalar(select(func.count()).select_from(Batch).where(Batch.channel == "demo")) > 0
    )


# --- works ------------------------------------------------------------------------------

WORK_STATUSES = ("planned", "in_progress", "complete", "cancelled")
WORK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
WORK_DATES = ("planned_start", "planned_end", "actual_start", "actual_end")
WORK_FIELDS = {"id", "title", "status", "geometry", "street", "measure", "quantity", *WORK_DATES}
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
        batch = Batch(
            agency_id=agency_id,
            channel=channel,
            token_id=token_id,
            user_id=user_id,
            feed_run_id=feed_run_id,
            idempotency_key=idempotency.key if idempotency else None,
            body_hash=idempotency.body_hash if idempotency else None,
        )
        _store_works(session, agency_id, clean, outcome, dry_run=dry_run, batch=batch)
    return outcome


def _works_measures(session: Session) -> dict[str, str | None]:
    """Agency of each live `source: works` measure."""
    return _measure_agencies(session, Node.source == "works")


def _measure_agencies(session: Session, *conditions) -> dict[str, str | None]:
    """Agency (its output's) of each live measure meeting `conditions`."""
    output = Node.__table__.alias("output_node")
    return dict(
        session.execute(
            select(Node.id, output.c.agency_id)
            .join(output, output.c.id == Node.parent_id)
            .where(Node.kind == "measure", Node.retired_at.is_(None), *conditions)
        ).all()
    )


def _validate_work(session, number, raw, measures, extent, resolve_street):
    """One work row checked field by field."""
    from shapely.geometry import shape

    if not isinstance(raw, dict):
        return None, [RowError(number, None, "a row must be an object")]
    errors: list[RowError] = []

    def fail(field_name: str | None, message: str) -> None:
        errors.append(RowError(number, field_name, message))

    for extra in sorted(set(raw) - WORK_FIELDS):
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
        try:
            geometry = shape(raw["geometry"])
        except Exception:  # shapely raises many kinds of error for bad GeoJSON
            fail("geometry", "geometry is not a GeoJSON Point, LineString or Polygon (or Multi-)")
        else:
            problem = _geometry_problem(geometry, extent)
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

    from tracker.places import share_by_place

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
    # Locate every work before adding any row: a query with rows pending would flush
    # them first, one flush per work (most of a 40,000-work batch's time).
    with session.no_autoflush:
        shares = [share_by_place(session, work.geometry) for work, _, _ in planned]
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
    # The rows that follow from each work go in as plain dicts, in bulk: building an ORM
    # object each was most of what remained of a large batch's time.
    places, changes, events = [], [], []
    for (work, values, current), row, here, old in zip(planned, rows, shares, olds, strict=True):
        places += [{"work_id": row.id, "place_id": p, "share": s} for p, s in here.items()]
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
    for model, values in ((WorkPlace, places), (WorkStatusChange, changes), (AuditEvent, events)):
        if values:
            session.execute(insert(model), values)
    if touched:
        session.execute(
            update(Node)
            .where(Node.id.in_(sorted(touched)))
            .values(data_version=Node.data_version + 1)
        )
    session.flush()


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


# --- CSV input --------------------------------------------------------------------------

OBSERVATION_COLUMNS = ("measure", "place", "date", "value")
WORK_CSV_COLUMNS = {*WORK_FIELDS, "lon", "lat"}


@dataclass
class InputRows:
    """Rows read from a request body, shaped like the JSON API's, with their numbers (CSV:
    the line each record starts on) and the problems found while reading them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def read_observations_csv(body: bytes) -> InputRows:
    """Observations from `measure,place,date,value[,dim.NAME…][,note]`.

    An empty value cell retracts (like JSON null); an empty dim cell leaves that
    dimension out. A file-level problem (not CSV, missing or unknown columns) raises
    SubmissionRejected with `row: null`.
    """
    header, records = _csv_records(
        body, required=OBSERVATION_COLUMNS, allowed={"note"}, prefix="dim."
    )
    # Cells by position: a dict per record of a large upload would cost more than the rest.
    base = [(name, header.index(name)) for name in OBSERVATION_COLUMNS]
    dims = [(name[4:], i) for i, name in enumerate(header) if name.startswith("dim.")]
    note = header.index("note") if "note" in header else None
    result = InputRows()
    for line, record in _well_formed(header, records, result):
        row: dict[str, Any] = {name: record[i] for name, i in base}
        if dims:
            cell = {name: record[i] for name, i in dims if record[i] != ""}
            if cell:
                row["dims"] = cell
        if note is not None and record[note]:
            row["note"] = record[note]
        _add_row(result, line, row)
    return result


def read_works_csv(body: bytes) -> InputRows:
    """Works from a CSV with `id,title,status` and a `geometry` (WKT), `lon`+`lat` or
    `street` column, plus the optional date, measure and quantity columns."""
    from shapely import wkt
    from shapely.errors import ShapelyError
    from shapely.geometry import Point, mapping

    header, records = _csv_records(
        body, required=("id", "title", "status"), allowed=WORK_CSV_COLUMNS
    )
    result = InputRows()
    for line, record in _well_formed(header, records, result):
        fields = dict(zip(header, record, strict=True))
        row = {k: v for k, v in fields.items() if v != "" and k not in ("lon", "lat")}
        lon, lat = fields.get("lon", ""), fields.get("lat", "")
        if row.get("geometry"):
            try:
                row["geometry"] = mapping(wkt.loads(row["geometry"]))
            except (ShapelyError, ValueError):
                result.errors.append(RowError(line, "geometry", "geometry is not WKT"))
                continue
        elif lon or lat:
            try:
                row["geometry"] = mapping(Point(float(lon), float(lat)))
            except ValueError:
                result.errors.append(
                    RowError(line, "lon", f"lon and lat must be numbers: {lon!r}, {lat!r}")
                )
                continue
        _add_row(result, line, row)
    return result


def _csv_records(body: bytes, *, required, allowed, prefix: str | None = None):
    """The CSV's records after checking its header; file-level problems refuse it whole."""
    from importers import ParseError
    from importers.csv import read_records

    try:
        header, records = read_records(body)
    except ParseError as exc:
        raise SubmissionRejected([RowError(None, None, exc.message)]) from None
    problems = [
        RowError(None, name, f"missing column {name!r}") for name in required if name not in header
    ]
    known = set(required) | set(allowed)
    problems += [
        RowError(None, name, f"unknown column {name!r}")
        for name in header
        if name not in known
        and not (prefix and name.startswith(prefix) and len(name) > len(prefix))
    ]
    if problems:
        raise SubmissionRejected(problems)
    return header, records


def _well_formed(header: list[str], records, result: InputRows):
    """(line, record) of the records with as many fields as the header; the others
    become row errors."""
    from importers.csv import record_problem

    for line, record in records:
        problem = record_problem(header, record)
        if problem:
            result.errors.append(RowError(line, None, f"the record {problem}"))
        else:
            yield line, record


def _add_row(result: InputRows, number: int, row: dict[str, Any]) -> None:
    result.rows.append(row)
    result.row_numbers.append(number)
