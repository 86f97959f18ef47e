"""A batch's bookkeeping: its errors and outcome, idempotency, its row and the agency's
write lock.

Two modes:
- all or nothing (API, CSV, web, demo): any bad row refuses the whole batch with every
  row's error (`SubmissionRejected`, 422), and a row naming another agency's measure
  refuses it with 403 (`SubmissionForbidden`);
- partial (feeds): valid rows are stored, bad and foreign rows come back in
  `Outcome.rejected` with their reasons.
"""

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.models import Batch, utcnow
from tracker.vocabulary import BATCH_CHANNELS

IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_KEY_MAX = 200
_IN_CHUNK = 5000  # ids in one IN (…): well inside both backends' limits on parameters


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


def new_batch(
    agency_id: str,
    channel: str,
    *,
    token_id: int | None,
    user_id: int | None,
    feed_run_id: int | None,
    idempotency: Idempotency | None,
) -> Batch:
    """The batch row a submission is stored under: who sent it, how, and its key."""
    return Batch(
        agency_id=agency_id,
        channel=channel,
        token_id=token_id,
        user_id=user_id,
        feed_run_id=feed_run_id,
        idempotency_key=idempotency.key if idempotency else None,
        body_hash=idempotency.body_hash if idempotency else None,
    )


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
    if channel not in BATCH_CHANNELS:
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
