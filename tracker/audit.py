"""The audit trail: every accepted change, who made it, through which channel, old → new.

Observation changes are read from their revisions: the observation rows (current values)
and ObservationRevision (replaced ones), each pointing at its batch, which names the
agency, channel, token or user and feed run; so values are never copied twice;
changes to works, tokens and accounts are AuditEvent rows.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import Date, Float, Integer, String, cast, literal, null, select, tuple_, union_all
from sqlmodel import Session

from tracker.models import (
    AuditEvent,
    Batch,
    Observation,
    ObservationRevision,
    User,
)


def audit_trail(
    session: Session,
    *,
    measure_id: str | None = None,
    place_id: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The latest `limit` changes, newest first, optionally for one measure and/or place."""
    both = union_all(
        *_revision_changes(measure_id, place_id), _events(measure_id, place_id)
    ).subquery()
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
    """Observation revisions as changes, two selects: current values (the observation rows)
    and replaced ones. Each is filtered by measure and place itself, so the filter seeks
    an index instead of waiting for the union; the value before is read after the limit."""
    obs, rev = Observation, ObservationRevision
    current = (obs.received_at, obs.revisions, obs.value, obs.batch_id)
    replaced = (rev.received_at, rev.revision, rev.value, rev.batch_id)
    selects = []
    for (at, revision, value, batch_id), source in ((current, None), (replaced, rev)):
        query = select(
            at.label("at"),
            obs.id.label("sort_id"),
            Batch.agency_id.label("agency_id"),
            Batch.channel.label("channel"),
            Batch.token_id.label("token_id"),
            Batch.user_id.label("user_id"),
            Batch.id.label("batch_id"),
            Batch.feed_run_id.label("feed_run_id"),
            literal("observation").label("kind"),
            revision.label("revision"),
            obs.measure_id.label("measure_id"),
            obs.place_id.label("place_id"),
            obs.date.label("date"),
            obs.dims_key.label("dims_key"),
            obs.id.label("observation_id"),
            value.label("new_value"),
            _none(Integer).label("event_id"),
        ).select_from(obs)
        if source is not None:
            query = query.join(source, source.observation_id == obs.id)
        query = query.join(Batch, Batch.id == batch_id)
        if measure_id:
            query = query.where(obs.measure_id == measure_id)
        if place_id:
            query = query.where(obs.place_id == place_id)
        selects.append(query)
    return selects


def _events(measure_id: str | None, place_id: str | None):
    query = select(
        AuditEvent.at.label("at"),
        AuditEvent.id.label("sort_id"),
        AuditEvent.agency_id.label("agency_id"),
        AuditEvent.channel.label("channel"),
        AuditEvent.token_id.label("token_id"),
        AuditEvent.user_id.label("user_id"),
        AuditEvent.batch_id.label("batch_id"),
        _none(Integer).label("feed_run_id"),
        literal("event").label("kind"),
        _none(Integer).label("revision"),
        AuditEvent.measure_id.label("measure_id"),
        AuditEvent.place_id.label("place_id"),
        _none(Date).label("date"),
        _none(String).label("dims_key"),
        _none(Integer).label("observation_id"),
        _none(Float).label("new_value"),
        AuditEvent.id.label("event_id"),
    )
    if measure_id:
        query = query.where(AuditEvent.measure_id == measure_id)
    if place_id:
        query = query.where(AuditEvent.place_id == place_id)
    return query


def _none(kind):
    """A typed NULL: PostgreSQL settles a UNION's column types branch by branch, and an
    untyped NULL in two branches becomes text before it meets the third's integer."""
    return cast(null(), kind)


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
