"""Measure observations: each row checked, then stored as new values or revisions.

Who sent what is kept per revision: an Observation row (its latest revision) and each
ObservationRevision (the values it held before) point at their Batch, which names the
agency, channel, token or user and feed run. The audit trail of values is read from
there rather than copied into AuditEvent.
"""

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import insert, select, true, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from tracker.cells import dims_key
from tracker.clock import city_today
from tracker.limits import EARLIEST_DATE, MAX_MAGNITUDE, date_problem
from tracker.models import (
    MEASURE_AGENCY,
    Batch,
    Dimension,
    MeasurePlace,
    Node,
    Observation,
    ObservationRevision,
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
from tracker.submissions.fields import NUL, NUL_MESSAGE, _iso_date, _parse_value, _text

NOTE_MAX = 1000


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
        batch = new_batch(
            agency_id,
            channel,
            token_id=token_id,
            user_id=user_id,
            feed_run_id=feed_run_id,
            idempotency=idempotency,
        )
        _store(session, clean, outcome, dry_run=dry_run, batch=batch)
    return outcome


def _city_today(session: Session) -> date:
    """Today in the city's timezone, so an evening entry in Christchurch is not "future"."""
    return city_today(session)


def _load_rules(session: Session, rows: Iterable[dict[str, Any]]) -> dict[str, MeasureRules]:
    """Rules for the measures these rows name (one query for nodes, one for places)."""
    names = {_text(r, "measure") for r in rows} - {None}
    if not names:
        return {}
    # A batch naming thousands of (unknown) measures reads every measure instead of
    # binding a parameter per name.
    named = Node.id.in_(names) if len(names) <= _IN_CHUNK else true()
    query = join_measure_agency(
        select(Node.id, MEASURE_AGENCY.label("agency_id"), Node.dimensions, Node.source)
    )
    found = session.execute(
        query.where(named, Node.kind == "measure", Node.retired_at.is_(None))
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
    if raw in (None, ""):
        fail("date", "date is required (YYYY-MM-DD)")
        return None
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
        statement = f"COPY {table.name} ({columns}) FROM STDIN"
        cursor = connection.connection.driver_connection.cursor()
        try:
            with cursor.copy(statement) as copy:
                for value in values:
                    copy.write_row(value)
        except dialect.loaded_dbapi.Error as failure:
            raise _as_sqlalchemy_error(connection, statement, failure, cursor) from failure
        return
    marks = ", ".join("?" * len(_OBSERVATION_COLUMNS))
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", values)


def _as_sqlalchemy_error(connection, statement: str, failure: Exception, cursor) -> DBAPIError:
    """A driver's failure of a statement run past SQLAlchemy (COPY), as SQLAlchemy would
    have raised it: the same exception classes, and a lost link dropped from the pool, so
    a full disk or a server going away is answered as for any other statement."""
    dialect = connection.dialect
    lost = dialect.is_disconnect(failure, connection.connection.dbapi_connection, cursor)
    if lost:
        connection.invalidate(failure)
    return DBAPIError.instance(
        statement,
        None,
        failure,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )


def _bind(column, dialect) -> Callable[[Any], Any]:
    """How the dialect stores the column's values (text on SQLite), as SQLAlchemy would."""
    return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)


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
