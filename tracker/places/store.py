"""Storing the place tree and streets: bulk upserts, retiring places, re-locating works
and measuring again the streets they lie on.

The caller commits; storing the same files twice changes nothing.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, select

from tracker.models import Place, Street, StreetPlace, Work, WorkPlace, WorkStreet, utcnow
from tracker.places.boundaries import Boundary, _rounded, place_rows
from tracker.places.locate import _IN_CHUNK, _NEAR_PAD, shares_by_place, streets_near
from tracker.places.streets import StreetRecord
from tracker.text import search_key

Box = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat


@dataclass(frozen=True)
class PlaceChanges:
    """What store_places changed in the place tree."""

    retired: tuple[str, ...] = ()  # live before, missing from the file now (sorted)
    changed: bool = False  # any place added, retired, back, renamed or redrawn; any street
    # Where a neighbourhood's boundary appeared, moved or went (old and new boxes): works
    # there may lie in another neighbourhood now.
    redrawn: tuple[Box, ...] = ()


def store_places(
    session: Session,
    *,
    city_id: str,
    city_name: str,
    boundaries: list[Boundary],
    streets: list[StreetRecord] | None = None,
) -> PlaceChanges:
    """Write the place tree and, when given, the streets; idempotent, the caller commits.

    Places missing from the file are retired, never deleted (observations, works and
    comments refer to them), and come back when a later file has them. Streets are
    replaced by the new set, except old ones that other rows (works …) still refer to.
    """
    rows = [row | {"retired_at": None} for row in place_rows(city_id, city_name, boundaries)]
    stored = _stored_places(session)
    new, changed = _upsert(session, Place, rows)
    retired = sorted(set(stored) - {row["id"] for row in rows} - _retired(stored))
    for chunk in _chunks(retired):
        session.exec(update(Place).where(Place.id.in_(chunk)).values(retired_at=utcnow()))
    streets_changed = streets is not None and _store_streets(session, streets)
    return PlaceChanges(
        retired=tuple(retired),
        changed=bool(new or changed or retired or streets_changed),
        redrawn=_redrawn_boxes(stored, new, changed, retired),
    )


def _stored_places(session: Session) -> dict[str, dict[str, Any]]:
    """Each stored place's level, box, geometry and retirement, by id."""
    columns = (Place.id, Place.level, Place.geometry, Place.retired_at, *_BOX_COLUMNS)
    return {row.id: dict(row._mapping) for row in session.exec(sa_select(*columns))}


_BOX_COLUMNS = (Place.min_lon, Place.min_lat, Place.max_lon, Place.max_lat)


def _retired(stored: dict[str, dict[str, Any]]) -> set[str]:
    """The ids among `stored` that are retired already."""
    return {place_id for place_id, row in stored.items() if row["retired_at"] is not None}


def _redrawn_boxes(
    stored: dict[str, dict[str, Any]], new: list[dict], changed: list[dict], retired: list[str]
) -> tuple[Box, ...]:
    """Boxes of the neighbourhoods that appeared, came back, moved or went, old and new."""
    boxes: list[Box] = []
    for row in new + changed:
        old = stored.get(row["id"])
        if row["level"] != "neighbourhood":
            continue
        if old is None or old["retired_at"] is not None or old["geometry"] != row["geometry"]:
            boxes.append(_box(row))
            if old is not None:
                boxes.append(_box(old))
    boxes += [_box(stored[place_id]) for place_id in retired]
    return tuple(boxes)


def _box(row: dict[str, Any]) -> Box:
    return (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"])


def _upsert(
    session: Session, model: type[SQLModel], rows: list[dict[str, Any]]
) -> tuple[list[dict], list[dict]]:
    """Insert new rows and update changed ones, matched on `id`, in bulk; (new, changed)."""
    if not rows:
        return [], []
    columns = [getattr(model, name) for name in rows[0]]
    stored = {row.id: dict(row._mapping) for row in session.exec(sa_select(*columns))}
    new = [row for row in rows if row["id"] not in stored]
    changed = [row for row in rows if row["id"] in stored and stored[row["id"]] != row]
    if new:
        session.exec(insert(model), params=new)
    if changed:
        session.exec(update(model), params=changed)
    return new, changed


def _store_streets(session: Session, streets: list[StreetRecord]) -> bool:
    """Make the Street and StreetPlace tables hold `streets`, keeping referenced old ones;
    then measure again the works near any street that appeared, moved or went. Whether
    anything changed (pages showing streets are then built again)."""
    before = {
        row.id: _box(row._mapping) for row in session.exec(sa_select(Street.id, *_STREET_BOX))
    }
    new, changed = _upsert(session, Street, [_street_row(s) for s in streets])
    current = {s.id for s in streets}
    old = set(before) - current
    removed = old - _referenced_streets(session, old)
    # Kept old streets move nowhere: only the new file's streets and the removed ones count.
    moved = [_box(row) for row in new + changed]
    moved += [before[row["id"]] for row in changed] + [before[s] for s in sorted(removed)]
    wanted = {(s.id, p) for s in streets for p in s.place_ids}
    stored = {
        tuple(r) for r in session.exec(sa_select(StreetPlace.street_id, StreetPlace.place_id))
    }
    stale = [
        {"s": s, "p": p}
        for s, p in stored
        if (s in current and (s, p) not in wanted) or s in removed
    ]
    table = StreetPlace.__table__
    if stale:
        session.exec(
            delete(table).where(
                table.c.street_id == bindparam("s"), table.c.place_id == bindparam("p")
            ),
            params=stale,
        )
    for chunk in _chunks(sorted(removed)):
        session.exec(delete(WorkStreet).where(WorkStreet.street_id.in_(chunk)))
        session.exec(delete(Street).where(Street.id.in_(chunk)))
    added = [{"street_id": s, "place_id": p} for s, p in sorted(wanted - stored)]
    if added:
        session.exec(insert(StreetPlace), params=added)
    if moved:
        measure_work_streets(session, _works_near(session, moved))
    return bool(moved or stale or added)


def _referenced_streets(session: Session, street_ids: set[str]) -> set[str]:
    """The streets among `street_ids` that a row of another table refers to."""
    referenced: set[str] = set()
    if not street_ids:
        return referenced
    street_table = Street.__table__
    for table in SQLModel.metadata.sorted_tables:
        # Both follow the gazetteer: they go with the street.
        if table in (StreetPlace.__table__, WorkStreet.__table__):
            continue
        for fk in table.foreign_keys:
            if fk.column.table is street_table:
                for chunk in _chunks(sorted(street_ids)):
                    query = sa_select(fk.parent).where(fk.parent.in_(chunk)).distinct()
                    referenced.update(session.exec(query).scalars())
    return referenced


def _street_row(street: StreetRecord) -> dict[str, Any]:
    """One Street row."""
    minx, miny, maxx, maxy = street.geometry.bounds
    return {
        "id": street.id,
        "name": street.name,
        "search_key": search_key(street.name),
        "main_place_id": street.main_place_id,
        "geometry": shapely.to_geojson(_rounded(street.geometry)),
        "length_m": street.length_m,
        "min_lon": minx,
        "min_lat": miny,
        "max_lon": maxx,
        "max_lat": maxy,
    }


_STREET_BOX = (Street.min_lon, Street.min_lat, Street.max_lon, Street.max_lat)


# --- measuring works against the streets ---------------------------------------------------


def measure_work_streets(connection, work_ids: list[int] | None = None) -> int:
    """Replace the WorkStreet rows of `work_ids` (None: every work) by the streets each
    lies on now, in chunks, as the write path measures them; how many works were measured.

    `connection` is a session or a connection (migration 0009 fills the table with it).
    """
    if work_ids is None:
        work_ids = list(connection.execute(sa_select(Work.id).order_by(Work.id)).scalars())
    for start in range(0, len(work_ids), _IN_CHUNK):
        chunk = work_ids[start : start + _IN_CHUNK]
        works = connection.execute(
            sa_select(Work.id, Work.geometry, Work.street_id).where(Work.id.in_(chunk))
        ).all()
        near = streets_near(
            connection,
            list(shapely.from_geojson([work.geometry for work in works])),
            [work.street_id for work in works],
        )
        connection.execute(delete(WorkStreet).where(WorkStreet.work_id.in_(chunk)))
        rows = [
            {"work_id": work.id, "street_id": street, "distance_m": distance}
            for work, streets in zip(works, near, strict=True)
            for street, distance in streets.items()
        ]
        if rows:
            connection.execute(insert(WorkStreet), rows)
    return len(work_ids)


def _works_near(session: Session, boxes: list[Box]) -> list[int]:
    """Ids of the works whose box comes within the near-street pad of any of `boxes`."""
    padded = np.array(boxes, dtype=float) + np.array([-1, -1, 1, 1]) * _NEAR_PAD
    tree = shapely.STRtree(shapely.box(*padded.T))
    works = session.exec(sa_select(Work.id, *_WORK_BOX).order_by(Work.id)).all()
    if not works:
        return []
    found, _ = tree.query(shapely.box(*np.array([work[1:] for work in works], dtype=float).T))
    return [works[i].id for i in sorted(set(found.tolist()))]


# --- re-locating works -------------------------------------------------------------------


def relocate_works(session: Session, boxes: Iterable[Box]) -> dict[int, str | None]:
    """Locate again the works whose box meets `boxes` (where boundaries appeared, moved or
    went); {work id: its measure} for those whose places changed, for the caller to bump."""
    boxes = list(boxes)
    if not boxes:
        return {}
    works = session.exec(
        select(Work.id, Work.geometry, Work.measure_id, *_WORK_BOX).order_by(Work.id)
    ).all()
    near = [work for work in works if any(_meets(work[3:], box) for box in boxes)]
    stored: dict[int, dict[str, float]] = defaultdict(dict)
    for chunk in _chunks([work.id for work in near]):
        query = select(WorkPlace.work_id, WorkPlace.place_id, WorkPlace.share)
        for work_id, place_id, share in session.exec(query.where(WorkPlace.work_id.in_(chunk))):
            stored[work_id][place_id] = share
    moved: dict[int, str | None] = {}
    located = shares_by_place(session, [shapely.from_geojson(work.geometry) for work in near])
    for work, shares in zip(near, located, strict=True):
        if shares != stored[work.id]:
            _store_work_places(session, work.id, shares)
            moved[work.id] = work.measure_id
    return moved


_WORK_BOX = (Work.min_lon, Work.min_lat, Work.max_lon, Work.max_lat)


def _meets(a: Iterable[float], b: Box) -> bool:
    """Whether two boxes (min_lon, min_lat, max_lon, max_lat) overlap or touch."""
    a_min_lon, a_min_lat, a_max_lon, a_max_lat = a
    return a_min_lon <= b[2] and a_max_lon >= b[0] and a_min_lat <= b[3] and a_max_lat >= b[1]


def _store_work_places(session: Session, work_id: int, shares: dict[str, float]) -> None:
    """Replace a work's places and main place by `shares` (CONTRACT §6: the largest)."""
    session.exec(delete(WorkPlace).where(WorkPlace.work_id == work_id))
    session.add_all(WorkPlace(work_id=work_id, place_id=p, share=s) for p, s in shares.items())
    main = min(shares, key=lambda p: (-shares[p], p)) if shares else None
    session.exec(update(Work).where(Work.id == work_id).values(main_place_id=main))


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    """Slices of `items`, keeping IN lists short."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
