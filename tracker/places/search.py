"""Name search over streets and places, and the list of live places."""

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import String, case, func, literal_column, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from tracker.models import Place, Street, StreetPlace
from tracker.places.locate import _live
from tracker.text import STREET_ABBREVIATIONS, search_key

LEVEL_ORDER = {"city": 0, "area": 1, "neighbourhood": 2}


def list_places(session: Session, *, with_geometry: bool = True) -> list[dict[str, Any]]:
    """Every live place, city first, then areas and neighbourhoods by name.

    With `with_geometry`, each carries its display geometry as a GeoJSON object.
    """
    columns = [
        Place.id,
        Place.name,
        Place.level,
        Place.parent_id,
        Place.label_lon,
        Place.label_lat,
        Place.min_lon,
        Place.min_lat,
        Place.max_lon,
        Place.max_lat,
    ]
    if with_geometry:
        columns.append(Place.display_geometry)
    places = []
    for row in session.exec(sa_select(*columns).where(_live)):
        place = {
            "id": row.id,
            "name": row.name,
            "level": row.level,
            "parent_id": row.parent_id,
            "label": [row.label_lon, row.label_lat],
            "bbox": [row.min_lon, row.min_lat, row.max_lon, row.max_lat],
        }
        if with_geometry:
            place["geometry"] = json.loads(row.display_geometry)
        places.append(place)
    return sorted(places, key=lambda p: (LEVEL_ORDER.get(p["level"], 3), search_key(p["name"])))


def place_geometry(session: Session, place_id: str) -> dict[str, Any] | None:
    """The display geometry (GeoJSON, simplified to about 10 m) of one live place; None
    when there is no such place."""
    text = session.exec(
        sa_select(Place.display_geometry).where(Place.id == place_id, _live)
    ).scalar_one_or_none()
    return json.loads(text) if text is not None else None


def search_streets(
    session: Session, q: str, limit: int = 20, *, abbreviations: bool = False
) -> list[dict[str, Any]]:
    """Streets whose name has a word starting with each word of `q`, best first. With
    `abbreviations` (residents' pages), "rd" also matches "Road" and the like; the API
    keeps the contract's rule, word starts only."""
    query = _matching(Street, q, limit, abbreviations)
    if query is None:
        return []
    rows = session.exec(query.add_columns(Street.main_place_id)).all()
    places: dict[str, list[str]] = defaultdict(list)
    if rows:
        # A street kept without a gazetteer update may still name a retired place.
        pairs = session.exec(
            select(StreetPlace.street_id, StreetPlace.place_id)
            .join(Place, Place.id == StreetPlace.place_id)
            .where(StreetPlace.street_id.in_([r.id for r in rows]), _live)
            .order_by(StreetPlace.place_id)
        )
        for street_id, place_id in pairs:
            places[street_id].append(place_id)
    return [
        {
            "id": r.id,
            "name": r.name,
            "places": sorted(places[r.id], key=lambda p: p != r.main_place_id),
        }
        for r in rows
    ]


def search_places(
    session: Session, q: str, limit: int = 20, *, abbreviations: bool = False
) -> list[dict[str, Any]]:
    """Live places whose name has a word starting with each word of `q`, best first
    (`abbreviations` as for search_streets: "mt" for "Mount")."""
    query = _matching(Place, q, limit, abbreviations)
    if query is None:
        return []
    rows = session.exec(query.add_columns(Place.level, Place.parent_id).where(_live))
    return [{"id": r.id, "name": r.name, "level": r.level, "parent": r.parent_id} for r in rows]


def _matching(model: type[Place] | type[Street], q: str, limit: int, abbreviations: bool):
    """SELECT id, name of `model` rows matching `q` in rank order; None for no words.

    Each word must start a word of the name: `(' ' || search_key) LIKE '% word%'`, which
    runs alike on SQLite and PostgreSQL; with `abbreviations`, an abbreviation's full word
    may start it instead. Rank: exact name, name starting with the query, shorter names,
    then alphabetical.
    """
    folded = search_key(q)
    if not folded or limit <= 0:
        return None
    words = folded.split()
    full = {w: STREET_ABBREVIATIONS.get(w, w) if abbreviations else w for w in words}
    exact = sorted({folded, " ".join(full[w] for w in words)})  # "opawa rd", "opawa road"
    key = model.search_key
    spaced = literal_column("' '", String) + key
    rank = case(
        (key.in_(exact), 0),
        (or_(*(key.like(_like_escape(e) + "%", escape="\\") for e in exact)), 1),
        else_=2,
    )
    query = sa_select(model.id, model.name)
    for word in words:
        starts = sorted({word, full[word]})
        query = query.where(
            or_(*(spaced.like(f"% {_like_escape(start)}%", escape="\\") for start in starts))
        )
    return query.order_by(rank, func.length(key), key, model.id).limit(limit)


def _like_escape(text: str) -> str:
    """`text` with LIKE wildcards escaped, to match literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- streets as their pages read them ----------------------------------------------------


def street_names(session: Session) -> list[str]:
    """Every street name once (several streets may share one), for "did you mean"."""
    return list(session.exec(sa_select(Street.name).distinct().order_by(Street.name)).scalars())


def street_detail(session: Session, street_id: str) -> dict[str, Any] | None:
    """One street for its page: id, name, GeoJSON geometry, length and the live
    neighbourhoods it lies in (StreetPlace), its main one first; None for no such street."""
    street = session.get(Street, street_id)
    if street is None:
        return None
    places = session.exec(
        select(StreetPlace.place_id)
        .join(Place, Place.id == StreetPlace.place_id)
        .where(StreetPlace.street_id == street_id, _live)
        .order_by(StreetPlace.place_id)
    ).all()
    return {
        "id": street.id,
        "name": street.name,
        "geometry": json.loads(street.geometry),
        "length_m": street.length_m,
        "main_place_id": street.main_place_id,
        "places": sorted(places, key=lambda p: p != street.main_place_id),
    }
