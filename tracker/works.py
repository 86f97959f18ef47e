"""Reading works back: by place, along a street, or in a box, as GeoJSON features."""

import json
from typing import Any

import shapely
from sqlalchemy import or_, select
from sqlmodel import Session

from tracker.errors import NotFound, TrackerError
from tracker.models import Place, Street, Work, WorkPlace
from tracker.places import nztm_distance_m

NEAR_STREET_M = 25.0  # a work this close to a street is "on" it, whatever it was filed under


def works_in_place(session: Session, place_id: str) -> list[Work]:
    """Works lying (partly) in the place or, for an area or the city, in any neighbourhood
    below it."""
    place = session.get(Place, place_id)
    if place is None:
        raise NotFound(f"no place {place_id!r}")
    leaves = _leaves_below(session, place)
    return list(
        session.scalars(
            select(Work)
            .where(Work.id.in_(select(WorkPlace.work_id).where(WorkPlace.place_id.in_(leaves))))
            .order_by(Work.agency_id, Work.ref)
        )
    )


def works_on_street(session: Session, street_id: str) -> list[Work]:
    """Works filed under the street, and works whose geometry lies within NEAR_STREET_M."""
    street = session.get(Street, street_id)
    if street is None:
        raise NotFound(f"no street {street_id!r}")
    line = shapely.from_geojson(street.geometry)
    pad = 0.001  # about 100 m: a cheap box before the exact distance
    candidates = session.scalars(
        select(Work)
        .where(
            or_(
                Work.street_id == street_id,
                (Work.min_lon <= street.max_lon + pad)
                & (Work.max_lon >= street.min_lon - pad)
                & (Work.min_lat <= street.max_lat + pad)
                & (Work.max_lat >= street.min_lat - pad),
            )
        )
        .order_by(Work.agency_id, Work.ref)
    )
    return [
        work
        for work in candidates
        if work.street_id == street_id
        or nztm_distance_m(line, shapely.from_geojson(work.geometry)) <= NEAR_STREET_M
    ]


def works_in_bbox(session: Session, bbox: str) -> list[Work]:
    """Works whose bounding box meets `bbox` ("west,south,east,north" in degrees)."""
    try:
        west, south, east, north = (float(part) for part in bbox.split(","))
    except ValueError:
        raise TrackerError("bbox must be four numbers: west,south,east,north") from None
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise TrackerError("bbox must be west,south,east,north with west <= east, south <= north")
    return list(
        session.scalars(
            select(Work)
            .where(Work.min_lon <= east, Work.max_lon >= west)
            .where(Work.min_lat <= north, Work.max_lat >= south)
            .order_by(Work.agency_id, Work.ref)
        )
    )


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
