"""Reading works back: by place, along a street, or in a box, as GeoJSON features."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import shapely.geometry
from sqlalchemy import and_, func, or_, select, true
from sqlmodel import Session

from tracker.errors import NotFound, TrackerError
from tracker.geometry import point_on
from tracker.limits import MAX_BBOX_DEGREES, WORKS_PAGE_SIZE
from tracker.models import Batch, Place, Street, Work, WorkPlace, WorkStatusChange, WorkStreet
from tracker.places import NEAR_STREET_M  # noqa: F401  (what "on a street" means)


@dataclass(frozen=True)
class WorksPage:
    """One page of works in (agency, ref) order, the number of works in all, and the cursor
    of the next page (the last work's AGENCY/REF; None on the last page)."""

    works: list[Work]
    total: int
    after: str | None


def works_in_place(
    session: Session,
    place_id: str,
    *,
    after: str | None = None,
    limit: int = WORKS_PAGE_SIZE,
    shown: Sequence[str] = (),
    now: datetime | None = None,
) -> WorksPage:
    """Works lying (partly) in the place or, for an area or the city, in any neighbourhood
    below it; with `shown`, only those whose status as shown at `now` (`shown_status`) is
    one of them."""
    inside = _in_place(session, place_id)
    if shown:
        inside = and_(inside, shown_as(shown, now or datetime.now(UTC)))
    return _page(session, inside, after, limit)


def _in_place(session: Session, place_id: str):
    """SQL condition: the work lies (partly) in the place; NotFound for no live place."""
    place = session.get(Place, place_id)
    if place is None or place.retired_at is not None:
        raise NotFound(f"no place {place_id!r}")
    leaves = _leaves_below(session, place)
    return Work.id.in_(select(WorkPlace.work_id).where(WorkPlace.place_id.in_(leaves)))


def works_on_street(
    session: Session, street_id: str, *, after: str | None = None, limit: int = WORKS_PAGE_SIZE
) -> WorksPage:
    """Works filed under the street, and works whose geometry lies within NEAR_STREET_M
    (the WorkStreet rows written when each work was stored or the gazetteer changed)."""
    if session.get(Street, street_id) is None:
        raise NotFound(f"no street {street_id!r}")
    on = Work.id.in_(select(WorkStreet.work_id).where(WorkStreet.street_id == street_id))
    return _page(session, on, after, limit)


def works_in_bbox(
    session: Session, bbox: str, *, after: str | None = None, limit: int = WORKS_PAGE_SIZE
) -> WorksPage:
    """Works whose bounding box meets `bbox` ("west,south,east,north" in degrees)."""
    try:
        west, south, east, north = (float(part) for part in bbox.split(","))
    except ValueError:
        raise TrackerError("bbox must be four numbers: west,south,east,north") from None
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise TrackerError("bbox must be west,south,east,north with west <= east, south <= north")
    if east - west > MAX_BBOX_DEGREES or north - south > MAX_BBOX_DEGREES:
        raise TrackerError(
            f"bbox must be at most {MAX_BBOX_DEGREES:g} degrees wide and high; "
            "for every work of a place, ask by place"
        )
    meets = (
        (Work.min_lon <= east)
        & (Work.max_lon >= west)
        & (Work.min_lat <= north)
        & (Work.max_lat >= south)
    )
    return _page(session, meets, after, limit)


def _page(session: Session, condition, after: str | None, limit: int) -> WorksPage:
    """The works meeting `condition` after the cursor, `limit` of them, with the total."""
    total = session.scalar(select(func.count()).select_from(Work).where(condition))
    query = select(Work).where(condition).order_by(Work.agency_id, Work.ref)
    if after is not None:
        agency_id, ref = _cursor_key(after)
        query = query.where(
            or_(Work.agency_id > agency_id, and_(Work.agency_id == agency_id, Work.ref > ref))
        )
    works = list(session.scalars(query.limit(limit + 1)))
    return _cut(works[:limit], total, more=len(works) > limit)


def _cursor_key(after: str) -> tuple[str, str]:
    """(agency, ref) of a cursor "AGENCY/REF": a page starts after that work."""
    agency_id, _, ref = after.partition("/")
    return agency_id, ref


def _cut(works: list[Work], total: int, *, more: bool) -> WorksPage:
    """A page of works; its cursor names its last work when more follow."""
    after = f"{works[-1].agency_id}/{works[-1].ref}" if more and works else None
    return WorksPage(works, total, after)


def work_features(session: Session, works: list[Work]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of `works`; feature id AGENCY/ID (CONTRACT §4)."""
    places: dict[int, list[str]] = {}
    if works:
        for work_id, place_id in session.execute(
            select(WorkPlace.work_id, WorkPlace.place_id)
            .where(WorkPlace.work_id.in_([w.id for w in works]))
            .order_by(WorkPlace.share.desc())
        ):
            places.setdefault(work_id, []).append(place_id)
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": f"{work.agency_id}/{work.ref}",
                "geometry": json.loads(work.geometry),
                "properties": {
                    "id": f"{work.agency_id}/{work.ref}",
                    "agency": work.agency_id,
                    "ref": work.ref,
                    "title": work.title,
                    "status": work.status,
                    "street": work.street_id,
                    "places": places.get(work.id, []),
                    "planned_start": work.planned_start,
                    "planned_end": work.planned_end,
                    "actual_start": work.actual_start,
                    "actual_end": work.actual_end,
                    "measure": work.measure_id,
                    "quantity": work.quantity,
                    "updated_at": work.updated_at,
                },
            }
            for work in works
        ],
    }


def _leaves_below(session: Session, place: Place) -> list[str]:
    """Neighbourhood ids at or below `place` (the place tree is at most three deep)."""
    if place.level == "neighbourhood":
        return [place.id]
    children = session.scalars(select(Place).where(Place.parent_id == place.id)).all()
    return [leaf for child in children for leaf in _leaves_below(session, child)]


# --- works as residents read them --------------------------------------------------------

STATUS_UNKNOWN_AFTER = timedelta(weeks=8)  # an open work unchanged this long: "status unknown"
OPEN_STATUSES = ("planned", "in_progress")


def shown_status(work: Work, now: datetime) -> str:
    """The status a page shows: the agency's, or "unknown" for an open work whose record has
    not changed for STATUS_UNKNOWN_AFTER (residents should not read a stale "under way")."""
    if work.status in OPEN_STATUSES and now - work.updated_at > STATUS_UNKNOWN_AFTER:
        return "unknown"
    return work.status


def shown_as(statuses: Sequence[str], now: datetime):
    """SQL condition: the work's status as shown at `now` (`shown_status`; "unknown" for an
    open work unchanged for STATUS_UNKNOWN_AFTER) is one of `statuses`."""
    cutoff = now - STATUS_UNKNOWN_AFTER
    parts = []
    for status in statuses:
        if status == "unknown":
            parts.append(and_(Work.status.in_(OPEN_STATUSES), Work.updated_at < cutoff))
        elif status in OPEN_STATUSES:
            parts.append(and_(Work.status == status, Work.updated_at >= cutoff))
        else:
            parts.append(Work.status == status)
    return or_(*parts) if parts else true()


def shown_status_counts(session: Session, place_id: str, now: datetime) -> dict[str, int]:
    """{status as shown at `now`: number of works} for the works in the place."""
    return _shown_counts(session, _in_place(session, place_id), now)


def _shown_counts(session: Session, condition, now: datetime) -> dict[str, int]:
    """{status as shown at `now`: number of works} for the works meeting `condition`, those
    with none left out: two grouped counts, by stored status and of the open works
    unchanged too long, which move to "unknown"."""
    counts = dict(
        session.execute(
            select(Work.status, func.count()).where(condition).group_by(Work.status)
        ).all()
    )
    stale = session.execute(
        select(Work.status, func.count())
        .where(
            condition,
            Work.status.in_(OPEN_STATUSES),
            Work.updated_at < now - STATUS_UNKNOWN_AFTER,
        )
        .group_by(Work.status)
    )
    for status, count in stale:
        counts[status] -= count
        counts["unknown"] = counts.get("unknown", 0) + count
    return {status: count for status, count in counts.items() if count}


def latest_works(
    session: Session, *, shown: Sequence[str] = (), now: datetime, limit: int = WORKS_PAGE_SIZE
) -> tuple[list[Work], int]:
    """The most recently updated works, of statuses as `shown` at `now` if given, and how
    many there are."""
    condition = shown_as(shown, now)
    total = session.scalar(select(func.count()).select_from(Work).where(condition))
    works = session.scalars(
        select(Work).where(condition).order_by(Work.updated_at.desc(), Work.id).limit(limit)
    )
    return list(works), total


def works_by_agency_and_status(session: Session) -> dict[str, dict[str, int]]:
    """{agency: {status: number of works}} over every stored work."""
    counts: dict[str, dict[str, int]] = {}
    for agency_id, status, count in session.execute(
        select(Work.agency_id, Work.status, func.count()).group_by(Work.agency_id, Work.status)
    ):
        counts.setdefault(agency_id, {})[status] = count
    return counts


# --- one work, and one agency's works ------------------------------------------------------


@dataclass(frozen=True)
class StatusChange:
    """One change of a work's status: when, from what (None when the work was first
    stored), to what, and through which channel (api, csv, web, feed)."""

    at: datetime
    old: str | None
    new: str
    channel: str


def find_work(session: Session, agency_id: str, ref: str) -> Work:
    """The work AGENCY/REF (works of retired agencies included); NotFound if none."""
    work = session.scalar(select(Work).where(Work.agency_id == agency_id, Work.ref == ref))
    if work is None:
        raise NotFound(f"no work {agency_id}/{ref}")
    return work


def status_history(session: Session, work_id: int) -> list[StatusChange]:
    """Every status the work has had, newest first, from its WorkStatusChange rows."""
    rows = session.execute(
        select(WorkStatusChange, Batch.channel)
        .join(Batch, Batch.id == WorkStatusChange.batch_id)
        .where(WorkStatusChange.work_id == work_id)
        .order_by(WorkStatusChange.changed_at.desc(), WorkStatusChange.id.desc())
    )
    return [
        StatusChange(change.changed_at, change.old_status, change.new_status, channel)
        for change, channel in rows
    ]


def work_places(session: Session, work_id: int) -> list[tuple[Place, float]]:
    """The neighbourhoods the work lies in, each with its share of the work, largest first."""
    return [
        (place, share)
        for place, share in session.execute(
            select(Place, WorkPlace.share)
            .join(WorkPlace, WorkPlace.place_id == Place.id)
            .where(WorkPlace.work_id == work_id)
            .order_by(WorkPlace.share.desc(), Place.name)
        )
    ]


def work_streets(session: Session, work: Work) -> list[Street]:
    """The streets the work lies on: the one it was filed under first, then the others
    within NEAR_STREET_M, nearest first."""
    streets = list(
        session.scalars(
            select(Street)
            .join(WorkStreet, WorkStreet.street_id == Street.id)
            .where(WorkStreet.work_id == work.id)
            .order_by((Street.id == work.street_id).desc(), WorkStreet.distance_m, Street.name)
        )
    )
    if work.street_id and all(s.id != work.street_id for s in streets):
        filed = session.get(Street, work.street_id)
        if filed is not None:
            streets.insert(0, filed)
    return streets


def point_on_work(work: Work) -> tuple[float, float]:
    """(lon, lat) of a point on the work (`geometry.point_on`), to about 1 m."""
    point = point_on(shapely.geometry.shape(json.loads(work.geometry)))
    return round(point.x, 5), round(point.y, 5)


def agency_works(
    session: Session, agency_id: str, *, after: str | None = None, limit: int = WORKS_PAGE_SIZE
) -> WorksPage:
    """One page of the agency's works, most recently updated first; the cursor is the REF
    of the last work shown (a page starts after it). An unknown cursor is a TrackerError."""
    mine = Work.agency_id == agency_id
    last = None
    if after is not None:
        last = session.execute(select(Work.updated_at, Work.id).where(mine, Work.ref == after))
        last = last.first()
        if last is None:
            raise TrackerError(f"after must be the id of one of {agency_id}'s works")
    return _newest_page(session, mine, last, limit, cursor=lambda work: work.ref)


# --- a street's works, newest first ------------------------------------------------------


def works_on_street_newest(
    session: Session, street_id: str, *, after: str | None = None, limit: int = WORKS_PAGE_SIZE
) -> WorksPage:
    """The works of `works_on_street`, most recently updated first (ties by id), paged in
    SQL: a page starts after the work AGENCY/REF named by `after` (TrackerError if none)."""
    if session.get(Street, street_id) is None:
        raise NotFound(f"no street {street_id!r}")
    on = Work.id.in_(select(WorkStreet.work_id).where(WorkStreet.street_id == street_id))
    last = None
    if after is not None:
        agency_id, ref = _cursor_key(after)
        last = session.execute(
            select(Work.updated_at, Work.id).where(on, Work.agency_id == agency_id, Work.ref == ref)
        ).first()
        if last is None:
            raise TrackerError(f"after={after!r} names no work on this street")
    return _newest_page(
        session, on, last, limit, cursor=lambda work: f"{work.agency_id}/{work.ref}"
    )


def _newest_page(session: Session, condition, last, limit: int, *, cursor) -> WorksPage:
    """A page of the works meeting `condition`, most recently updated first (ties by id),
    starting after the work whose (updated_at, id) is `last`; the next page's cursor is
    `cursor(last work shown)`."""
    total = session.scalar(select(func.count()).select_from(Work).where(condition))
    query = select(Work).where(condition).order_by(Work.updated_at.desc(), Work.id.desc())
    if last is not None:
        updated_at, work_id = last
        query = query.where(
            or_(
                Work.updated_at < updated_at,
                and_(Work.updated_at == updated_at, Work.id < work_id),
            )
        )
    works = list(session.scalars(query.limit(limit + 1)))
    shown = works[:limit]
    return WorksPage(shown, total, cursor(shown[-1]) if len(works) > limit and shown else None)


def street_distances(session: Session, street_id: str, works: Sequence[Work]) -> dict[int, float]:
    """{work id: metres from the street's line} for `works` on the street (0 for a work
    lying on it; a work filed under the street keeps its measured distance)."""
    if not works:
        return {}
    rows = session.execute(
        select(WorkStreet.work_id, WorkStreet.distance_m).where(
            WorkStreet.street_id == street_id, WorkStreet.work_id.in_([w.id for w in works])
        )
    )
    return {work_id: distance for work_id, distance in rows}


def agency_shown_counts(session: Session, agency_id: str, now: datetime) -> dict[str, int]:
    """{status as shown at `now`: number of works} for the agency's works."""
    return _shown_counts(session, Work.agency_id == agency_id, now)


def main_place_names(session: Session, works: Sequence[Work]) -> dict[int, str]:
    """{work id: name of its main neighbourhood} for `works` that have one."""
    ids = {w.main_place_id for w in works if w.main_place_id}
    if not ids:
        return {}
    names = dict(session.execute(select(Place.id, Place.name).where(Place.id.in_(ids))).all())
    return {w.id: names[w.main_place_id] for w in works if w.main_place_id in names}
