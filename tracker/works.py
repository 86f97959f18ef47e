"""Reading works back: by place, along a street, or in a box, as GeoJSON features."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, true
from sqlmodel import Session

from tracker.errors import NotFound, TrackerError
from tracker.limits import MAX_BBOX_DEGREES, WORKS_PAGE_SIZE
from tracker.models import Place, Street, Work, WorkPlace, WorkStreet
from tracker.places import NEAR_STREET_M  # noqa: F401  (what "on a street" means)


@dataclass(frozen=True)
class WorksPage:
    """One page of works in (agency, ref) order, the number of works in all, and the cursor
    of the next page (the last work's AGENCY/REF; None on the last page)."""

    works: list[Work]
    total: int
    after: str | None


def works_in_place(
    session: Session, place_id: str, *, after: str | None = None, limit: int = WORKS_PAGE_SIZE
) -> WorksPage:
    """Works lying (partly) in the place or, for an area or the city, in any neighbourhood
    below it."""
    place = session.get(Place, place_id)
    if place is None or place.retired_at is not None:
        raise NotFound(f"no place {place_id!r}")
    leaves = _leaves_below(session, place)
    inside = Work.id.in_(select(WorkPlace.work_id).where(WorkPlace.place_id.in_(leaves)))
    return _page(session, inside, after, limit)


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


def latest_works(
    session: Session, *, statuses: Sequence[str] = (), limit: int = WORKS_PAGE_SIZE
) -> tuple[list[Work], int]:
    """The most recently updated works, of `statuses` if given, and how many there are."""
    condition = Work.status.in_(statuses) if statuses else true()
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
