"""The trail behind one figure (explain): the neighbourhood values and the observations or
works they rest on, or a node's children and whether each counted.
"""

import math
from collections import defaultdict
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import (
    and_,
    func,
    select,
)
from sqlmodel import Session

from tracker.clock import utc_iso
from tracker.errors import NotFound
from tracker.models import (
    Batch,
    Observation,
    Work,
)
from tracker.rollup.cache import RollupCache
from tracker.rollup.definitions import MeasureDef, PlaceInfo, TreeDef, get_place, load_definitions
from tracker.rollup.figures import as_float, rollup
from tracker.rollup.leaves import UNUSABLE, LeafFacts, counted_works, in_window, leaf_facts


def explain(
    session: Session,
    *,
    node_id: str,
    place_id: str | None = None,
    on: date | None = None,
    cache: RollupCache | None = None,
) -> dict[str, Any]:
    """The trail behind one figure: neighbourhood values with their sources, or children."""
    cache = cache or RollupCache()
    tree = load_definitions(session, cache)
    if node_id not in tree.nodes:
        raise NotFound(f"unknown node {node_id!r}")
    place = get_place(tree, place_id or tree.city_id)
    answer = rollup(session, place_id=place.id, on=on, cache=cache)
    figures = answer.find(node_id)
    trail: dict[str, Any] = {
        "node": {**figures.to_json(), "weight": figures.weight},
        "place": place.to_json(),
        "date": answer.date.isoformat(),
        "leaves": None,
        "children": None,
    }
    trail["node"].pop("children")
    if figures.kind == "measure":
        measure = tree.measures[node_id]
        facts = leaf_facts(session, cache, tree, [measure], answer.date)[measure.id]
        trail["leaves"] = _leaf_trail(session, tree, measure, place, answer.date, facts)
    else:
        trail["children"] = [
            {
                "id": c.id,
                "kind": c.kind,
                "title": c.title,
                "weight": c.weight,
                "progress": as_float(c.progress),
                "expected": as_float(c.expected),
                "status": c.status,
                "counted": c.progress is not None,
            }
            for c in figures.children
            if c.takes_part
        ]
    return trail


def _leaf_trail(
    session: Session,
    tree: TreeDef,
    measure: MeasureDef,
    place: PlaceInfo,
    on: date,
    facts: Mapping[str, LeafFacts],
) -> list[dict[str, Any]]:
    """Each neighbourhood of the measure here: its value and the observations behind it."""
    leaves = sorted(tree.leaves_below[place.id] & measure.places.keys())
    sources = _sources(session, measure, leaves, on) if not measure.from_works else {}
    works = _works_behind(session, measure, leaves, on) if measure.from_works else {}
    usable = {leaf for leaf, fact in facts.items() if not math.isnan(fact.value)}
    return [
        {
            "place": leaf,
            "value": facts[leaf].value if leaf in usable else None,
            "counted": leaf in usable,
            "problem": UNUSABLE if leaf in facts and leaf not in usable else None,
            "baseline": measure.places[leaf][0],
            "target": measure.places[leaf][1],
            "observations": sources.get(leaf, []),
            "works": works.get(leaf, []),
        }
        for leaf in leaves
    ]


def _sources(
    session: Session, measure: MeasureDef, leaves: list[str], on: date
) -> dict[str, list[dict[str, Any]]]:
    """The observations a measure's values rest on, with who sent them and how."""
    obs = Observation
    columns = (
        obs.place_id,
        obs.dims_key,
        obs.date,
        obs.value,
        obs.revisions,
        obs.received_at,
        Batch.agency_id,
        Batch.channel,
        Batch.feed_run_id,
    )
    where = and_(obs.measure_id == measure.id, obs.place_id.in_(leaves), in_window([measure], on))
    if measure.kind == "flow":
        query = select(*columns).join(Batch, Batch.id == obs.batch_id).where(where)
    else:
        rank = func.row_number().over(
            partition_by=(obs.place_id, obs.dims_key), order_by=obs.date.desc()
        )
        ranked = (
            select(*columns, rank.label("rank"))
            .join(Batch, Batch.id == obs.batch_id)
            .where(where)
            .subquery()
        )
        query = select(*(ranked.c[c.key] for c in columns)).where(ranked.c.rank == 1)
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(session.execute(query), key=lambda r: (r[0], r[2], r[1])):
        place_id, key, day, value, revisions, received, agency, channel, run = row
        found[place_id].append(
            {
                "date": day.isoformat(),
                "dims": dict(part.partition("=")[::2] for part in key.split("|") if part),
                "value": value,
                "revisions": revisions,
                "agency": agency,
                "channel": channel,
                "feed_run": run,
                "received": utc_iso(received),
            }
        )
    return found


def _works_behind(
    session: Session, measure: MeasureDef, leaves: list[str], on: date
) -> dict[str, list[dict[str, Any]]]:
    """The completed works a works-derived measure's values rest on (CONTRACT §6)."""
    counted = counted_works([measure.id], on).subquery("counted")
    query = (
        select(Work, counted.c.place_id, counted.c.share, counted.c.amount, Batch)
        .join(counted, counted.c.work_id == Work.id)
        .join(Batch, Batch.id == Work.batch_id)
        .where(counted.c.place_id.in_(leaves))
        .order_by(counted.c.place_id, Work.actual_end, Work.agency_id, Work.ref)
    )
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for work, place_id, share, amount, batch in session.execute(query):
        found[place_id].append(
            {
                "id": f"{work.agency_id}/{work.ref}",
                "title": work.title,
                "actual_end": work.actual_end.isoformat(),
                "quantity": work.quantity,
                "share": share,
                "amount": amount,
                "agency": work.agency_id,
                "channel": batch.channel,
                "feed_run": batch.feed_run_id,
                "received": utc_iso(work.updated_at),
            }
        )
    return found
