"""What an agency works with and has sent: its measures for the entry forms, its batches,
and its observations and works with every change (who, through which channel, when).

Read-only; every query is limited to one agency, so a page built from these functions
cannot show another agency's data.
"""

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlmodel import Session

from tracker.models import (
    MEASURE_AGENCY,
    ApiToken,
    Batch,
    Dimension,
    MeasurePlace,
    Node,
    Observation,
    Place,
    User,
    Work,
    WorkStatusChange,
    every_revision,
    join_measure_agency,
)


@dataclass(frozen=True)
class MeasureChoice:
    """A measure an agency can submit, with the places and dimension values it takes."""

    id: str
    title: str
    unit: str | None
    places: list[tuple[str, str]]  # (id, name), in alphabetical order
    dimensions: dict[str, list[str]]  # name -> values, in the tree's order


@dataclass(frozen=True)
class BatchSummary:
    id: int
    received_at: datetime
    channel: str
    who: str
    accepted: int
    revised: int
    unchanged: int


@dataclass(frozen=True)
class Change:
    """One step in an observation's or a work's history: old -> new."""

    old: Any
    new: Any
    at: datetime
    channel: str
    who: str
    note: str | None = None


@dataclass(frozen=True)
class ObservationHistory:
    measure_id: str
    measure_title: str
    place_name: str
    date: date
    dims_key: str
    value: float | None
    changes: list[Change]  # oldest first; the first has old None


@dataclass(frozen=True)
class WorkHistory:
    ref: str
    title: str
    status: str
    place_name: str | None
    updated_at: datetime
    changes: list[Change]  # status changes, oldest first


def _owned_measures(agency_id: str) -> Select:
    """Live measures of the agency's outputs (a measure's agency is its output's)."""
    return (
        join_measure_agency(select(Node.id, Node.title, Node.unit, Node.dimensions))
        .where(agency_id == MEASURE_AGENCY, Node.kind == "measure", Node.retired_at.is_(None))
        .order_by(Node.title, Node.id)
    )


def agency_measures(session: Session, agency_id: str) -> list[MeasureChoice]:
    """The measures `agency_id` submits values for (not those derived from works)."""
    found = session.execute(
        _owned_measures(agency_id).where(Node.source.is_distinct_from("works"))
    ).all()
    places: dict[str, list[tuple[str, str]]] = {m.id: [] for m in found}
    for measure_id, place_id, name in session.execute(
        select(MeasurePlace.measure_id, Place.id, Place.name)
        .join(Place, Place.id == MeasurePlace.place_id)
        .where(MeasurePlace.measure_id.in_(places))
        .order_by(Place.search_key)  # folds macrons: Ōpāwa sorts with O
    ):
        places[measure_id].append((place_id, name))
    values: dict[str, list[str]] = {}
    for name, value in session.execute(
        select(Dimension.name, Dimension.value).order_by(Dimension.name, Dimension.position)
    ):
        values.setdefault(name, []).append(value)
    return [
        MeasureChoice(
            id=m.id,
            title=m.title,
            unit=m.unit,
            places=places[m.id],
            dimensions={name: values.get(name, []) for name in m.dimensions or ()},
        )
        for m in found
    ]


def works_measures(session: Session, agency_id: str) -> list[tuple[str, str]]:
    """(id, title) of the agency's measures derived from works, which a work may count towards."""
    query = _owned_measures(agency_id).where(Node.source == "works")
    return [(m.id, m.title) for m in session.execute(query)]


def agency_batches(session: Session, agency_id: str, limit: int = 50) -> list[BatchSummary]:
    """The agency's latest batches, newest first: channel, who sent it, and the counts."""
    rows = session.execute(
        select(Batch, User.email, ApiToken.label)
        .outerjoin(User, User.id == Batch.user_id)
        .outerjoin(ApiToken, ApiToken.id == Batch.token_id)
        .where(Batch.agency_id == agency_id)
        .order_by(Batch.received_at.desc(), Batch.id.desc())
        .limit(limit)
    )
    return [
        BatchSummary(
            id=batch.id,
            received_at=batch.received_at,
            channel=batch.channel,
            who=_who(batch, email, label),
            accepted=batch.accepted,
            revised=batch.revised,
            unchanged=batch.unchanged,
        )
        for batch, email, label in rows
    ]


def observation_history(
    session: Session, agency_id: str, limit: int = 100
) -> list[ObservationHistory]:
    """The agency's most recently received observations, each with all its revisions."""
    observations = session.execute(
        join_measure_agency(
            select(Observation, Node.title, Place.name).join(
                Node, Node.id == Observation.measure_id
            )
        )
        .join(Place, Place.id == Observation.place_id)
        .where(agency_id == MEASURE_AGENCY)
        .order_by(Observation.received_at.desc(), Observation.id.desc())
        .limit(limit)
    ).all()
    changes: dict[int, list[Change]] = {obs.id: [] for obs, _, _ in observations}
    previous: dict[int, float | None] = {}
    revisions = every_revision()
    for revision in session.execute(
        select(revisions, Batch, User.email, ApiToken.label)
        .join(Batch, Batch.id == revisions.c.batch_id)
        .outerjoin(User, User.id == Batch.user_id)
        .outerjoin(ApiToken, ApiToken.id == Batch.token_id)
        .where(revisions.c.observation_id.in_(changes))
        .order_by(revisions.c.observation_id, revisions.c.revision)
    ):
        obs_id = revision.observation_id
        changes[obs_id].append(
            Change(
                old=previous.get(obs_id),
                new=revision.value,
                at=revision.received_at,
                channel=revision.Batch.channel,
                who=_who(revision.Batch, revision.email, revision.label),
                note=revision.note,
            )
        )
        previous[obs_id] = revision.value
    return [
        ObservationHistory(
            measure_id=obs.measure_id,
            measure_title=title,
            place_name=place_name,
            date=obs.date,
            dims_key=obs.dims_key,
            value=obs.value,
            changes=changes[obs.id],
        )
        for obs, title, place_name in observations
    ]


def works_history(session: Session, agency_id: str, limit: int = 100) -> list[WorkHistory]:
    """The agency's most recently updated works, each with its status changes."""
    works = session.execute(
        select(Work, Place.name)
        .outerjoin(Place, Place.id == Work.main_place_id)
        .where(Work.agency_id == agency_id)
        .order_by(Work.updated_at.desc(), Work.id.desc())
        .limit(limit)
    ).all()
    changes: dict[int, list[Change]] = {work.id: [] for work, _ in works}
    for change, batch, email, label in session.execute(
        select(WorkStatusChange, Batch, User.email, ApiToken.label)
        .join(Batch, Batch.id == WorkStatusChange.batch_id)
        .outerjoin(User, User.id == Batch.user_id)
        .outerjoin(ApiToken, ApiToken.id == Batch.token_id)
        .where(WorkStatusChange.work_id.in_(changes))
        .order_by(WorkStatusChange.work_id, WorkStatusChange.changed_at, WorkStatusChange.id)
    ):
        changes[change.work_id].append(
            Change(
                old=change.old_status,
                new=change.new_status,
                at=change.changed_at,
                channel=batch.channel,
                who=_who(batch, email, label),
            )
        )
    return [
        WorkHistory(
            ref=work.ref,
            title=work.title,
            status=work.status,
            place_name=place_name,
            updated_at=work.updated_at,
            changes=changes[work.id],
        )
        for work, place_name in works
    ]


def _who(batch: Batch, email: str | None, token_label: str | None) -> str:
    """Who sent a batch, in words: the staff member, the API token, the feed run."""
    if email:
        return email
    if batch.token_id is not None:
        return f"API token #{batch.token_id}" + (f" ({token_label})" if token_label else "")
    if batch.feed_run_id is not None:
        return f"feed run #{batch.feed_run_id}"
    return batch.channel


def measure_titles(session: Session) -> list[tuple[str, str]]:
    """(id, title) of every live measure, by title: the audit page's filter."""
    query = (
        select(Node.id, Node.title)
        .where(Node.kind == "measure", Node.retired_at.is_(None))
        .order_by(Node.title, Node.id)
    )
    return [(row.id, row.title) for row in session.execute(query)]
