"""The audit trail: every accepted change, who made it, through which channel, old → new.

Observation changes are read from their revisions (each points at its batch, which names
the agency, channel, token or user and feed run), so values are never copied twice;
changes to works, tokens and accounts are AuditEvent rows.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, tuple_, union_all
from sqlmodel import Session

from tracker.models import (
    AuditEvent,
    Batch,
    Observation,
    ObservationRevision,
    User,
    every_revision,
)


def audit_trail(
    session: Session,
    *,
    measure_id: str | None = None,
    place_id: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The latest `limit` changes, newest first, optionally for one measure and/or place."""
    revisions = _revision_changes(measure_id, place_id)
    events = _events(measure_id, place_id)
    both = union_all(revisions, events).subquery()
    rows = session.execute(
        select(both, User.email)
        .outerjoin(User, User.id == both.c.user_id)
        .order_by(both.c.at.desc(), both.c.sort_id.desc())
        .limit(limit)
    ).all()
    olds = _previous_values(session, rows)
    # JSON columns stay out of the UNION (PostgreSQL cannot compare json); read them after.
    event_ids = [row.event_id for row in rows if row.event_id is not None]
    events = {
        event.id: event
        for event in session.scalars(select(AuditEvent).where(AuditEvent.id.in_(event_ids)))
    }
    return [_entry(row, events, olds) for row in rows]


def _previous_values(session: Session, rows) -> dict[tuple[int, int], float | None]:
    """The value before each listed revision, read for those rows only (not a window over
    every revision ever sent). A value that was replaced is always in ObservationRevision."""
    wanted = {
        (row.observation_id, row.revision - 1)
        for row in rows
        if row.kind == "observation" and row.revision > 1
    }
    if not wanted:
        return {}
    rev = ObservationRevision
    found = session.execute(
        select(rev.observation_id, rev.revision, rev.value).where(
            tuple_(rev.observation_id, rev.revision).in_(sorted(wanted))
        )
    )
    return {(observation, revision + 1): value for observation, revision, value in found}


def _revision_changes(measure_id: str | None, place_id: str | None):
    """Observation revisions as changes; the value before is read after the limit."""
    revisions = every_revision()
    query = (
        select(
            revisions.c.received_at.label("at"),
            revisions.c.observation_id.label("sort_id"),
            Batch.agency_id.label("agency_id"),
            Batch.channel.label("channel"),
            Batch.token_id.label("token_id"),
            Batch.user_id.label("user_id"),
            Batch.id.label("batch_id"),
            Batch.feed_run_id.label("feed_run_id"),
            literal("observation").label("kind"),
            revisions.c.revision.label("revision"),
            Observation.measure_id.label("measure_id"),
            Observation.place_id.label("place_id"),
            Observation.date.label("date"),
            Observation.dims_key.label("dims_key"),
            revisions.c.observation_id.label("observation_id"),
            revisions.c.value.label("new_value"),
            literal(None).label("event_id"),
        )
        .join(Observation, Observation.id == revisions.c.observation_id)
        .join(Batch, Batch.id == revisions.c.batch_id)
    )
    if measure_id:
        query = query.where(Observation.measure_id == measure_id)
    if place_id:
        query = query.where(Observation.place_id == place_id)
    return query


def _events(measure_id: str | None, place_id: str | None):
    query = select(
        AuditEvent.at.label("at"),
        AuditEvent.id.label("sort_id"),
        AuditEvent.agency_id.label("agency_id"),
        AuditEvent.channel.label("channel"),
        AuditEvent.token_id.label("token_id"),
        AuditEvent.user_id.label("user_id"),
        AuditEvent.batch_id.label("batch_id"),
        literal(None).label("feed_run_id"),
        literal("event").label("kind"),
        literal(None).label("revision"),
        AuditEvent.measure_id.label("measure_id"),
        AuditEvent.place_id.label("place_id"),
        literal(None).label("date"),
        literal(None).label("dims_key"),
        literal(None).label("observation_id"),
        literal(None).label("new_value"),
        AuditEvent.id.label("event_id"),
    )
    if measure_id:
        query = query.where(AuditEvent.measure_id == measure_id)
    if place_id:
        query = query.where(AuditEvent.place_id == place_id)
    return query


def _entry(row, events: dict[int, AuditEvent], olds: dict[tuple[int, int], Any]) -> dict[str, Any]:
    """One change in the shape the API and the admin page show."""
    entry = {
        "at": row.at,
        "agency": row.agency_id,
        "channel": row.channel,
        "token": row.token_id,
        "user": row.email,
        "batch": row.batch_id,
        "feed_run": row.feed_run_id,
        "measure": row.measure_id,
        "place": row.place_id,
    }
    if row.kind == "observation":
        day = row.date if not isinstance(row.date, str) else datetime.fromisoformat(row.date)
        return entry | {
            "action": "observation.create" if row.revision == 1 else "observation.revise",
            "entity": f"{row.measure_id}/{row.place_id}/{_iso(day)}"
            + (f"/{row.dims_key}" if row.dims_key else ""),
            "old": None
            if row.revision == 1
            else {"value": olds.get((row.observation_id, row.revision))},
            "new": {"value": row.new_value},
        }
    event = events[row.event_id]
    return entry | {
        "action": event.action,
        "entity": event.entity_id,
        "old": event.old,
        "new": event.new,
    }


def _iso(day: Any) -> str:
    return day.date().isoformat() if isinstance(day, datetime) else day.isoformat()
