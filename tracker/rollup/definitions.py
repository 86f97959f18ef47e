"""What the roll-up knows besides observations: places, measures and nodes, read from the
database into immutable objects and reused while no definition version moves.
"""

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from sqlalchemy import (
    select,
)
from sqlmodel import Session

from tracker.clock import city_timezone, today_in
from tracker.errors import NotFound, TrackerError
from tracker.models import (
    Dimension,
    MeasurePlace,
    Node,
    Place,
)
from tracker.rollup.cache import RollupCache

Filters = tuple[tuple[str, str], ...]  # sorted (dimension, value) pairs; () for none


@dataclass(frozen=True, kw_only=True)
class PlaceInfo:
    """A place of the place tree (no geometry: the roll-up does not need it)."""

    id: str
    name: str
    level: str
    parent_id: str | None

    def to_json(self) -> dict[str, Any]:
        """The place as CONTRACT §4 shows it."""
        return {"id": self.id, "name": self.name, "level": self.level, "parent": self.parent_id}


@dataclass(frozen=True, kw_only=True)
class MeasureDef:
    """A measure as the tree defines it, with its neighbourhoods' (baseline, target)."""

    id: str
    title: str
    unit: str | None
    kind: str  # cumulative | level | flow
    aggregate: str  # sum | mean | min | max
    frequency: str
    start: date
    due: date
    milestones: tuple[tuple[date, float], ...]
    dimensions: tuple[str, ...]
    city_baseline: float | None
    city_target: float | None
    data_version: int  # Node.data_version: moves with every write to the measure
    places: Mapping[str, tuple[float | None, float | None]]
    from_works: bool = False  # `source: works`: derived from completed works (CONTRACT §6)


@dataclass(frozen=True, kw_only=True)
class NodeDef:
    """A result, output or measure with its children's ids, in tree order."""

    id: str
    kind: str  # result | output | measure
    title: str
    weight: float
    agency_id: str | None
    children: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TreeDef:
    """Everything the roll-up needs to know besides observations; immutable once built."""

    key: tuple
    nodes: Mapping[str, NodeDef]
    roots: tuple[str, ...]
    measures: Mapping[str, MeasureDef]
    places: Mapping[str, PlaceInfo]
    leaves_below: Mapping[str, frozenset[str]]
    city_id: str | None
    timezone: str
    dimensions: Mapping[str, frozenset[str]]

    def today(self) -> date:
        """Today in the city's timezone."""
        return today_in(self.timezone)


def load_definitions(session: Session, cache: RollupCache | None = None) -> TreeDef:
    """The current definitions as stored in the database (tracker.tree.load_tree reads the
    YAML file): one cheap query when nothing changed since the last call.

    After a write only data versions move: the definitions are reused and the written
    measures just carry their new version, so no node or place is read again.
    """
    cache = cache or RollupCache()
    key = tuple(
        map(
            tuple,
            session.execute(
                select(Node.id, Node.definition_version, Node.data_version).order_by(Node.id)
            ),
        )
    )
    tree = cache.trees.get(key)
    if tree is None:
        definitions = tuple((node_id, version) for node_id, version, _ in key)
        built = cache.definitions.get(definitions)
        if built is None:
            built = _build_tree(session, cache, definitions)
            cache.definitions.put(definitions, built)
        tree = _with_data_versions(built, key)
        cache.trees.put(key, tree)
    return tree


def _with_data_versions(tree: TreeDef, key: tuple) -> TreeDef:
    """`tree` with each measure's data_version taken from `key`."""
    versions = {node_id: data_version for node_id, _, data_version in key}
    measures = {
        measure_id: measure
        if measure.data_version == versions[measure_id]
        else replace(measure, data_version=versions[measure_id])
        for measure_id, measure in tree.measures.items()
    }
    return replace(tree, key=key, measures=measures)


def _build_tree(session: Session, cache: RollupCache, key: tuple) -> TreeDef:
    """Read nodes, places and dimensions; measure places only for measures that changed."""
    rows = session.scalars(select(Node).where(Node.retired_at.is_(None))).all()
    children: dict[str | None, list[Node]] = defaultdict(list)
    for row in rows:
        children[row.parent_id].append(row)
    # Sub-results come before outputs at equal positions (the tree counts them in that order).
    for siblings in children.values():
        siblings.sort(key=lambda n: (n.position, n.kind != "result", n.id))
    nodes = {
        row.id: NodeDef(
            id=row.id,
            kind=row.kind,
            title=row.title,
            weight=row.weight,
            agency_id=row.agency_id,
            children=tuple(c.id for c in children[row.id]),
        )
        for row in rows
    }
    measure_rows = [row for row in rows if row.kind == "measure"]
    measures = {
        row.id: _measure_def(row, places)
        for row, places in zip(
            measure_rows, _measure_places(session, cache, measure_rows), strict=True
        )
    }
    places = {
        p.id: PlaceInfo(id=p.id, name=p.name, level=p.level, parent_id=p.parent_id)
        for p in session.execute(
            select(Place.id, Place.name, Place.level, Place.parent_id).where(
                Place.retired_at.is_(None)  # a place the boundaries dropped is gone (404)
            )
        )
    }
    city = next((p for p in places.values() if p.level == "city"), None)
    dimensions: dict[str, set[str]] = defaultdict(set)
    for name, value in session.execute(select(Dimension.name, Dimension.value)):
        dimensions[name].add(value)
    return TreeDef(
        key=key,
        nodes=nodes,
        roots=tuple(n.id for n in children[None] if n.kind == "result"),
        measures=measures,
        places=places,
        leaves_below=_leaves_below(places),
        city_id=city.id if city else None,
        timezone=city_timezone(session),
        dimensions={name: frozenset(values) for name, values in dimensions.items()},
    )


def _measure_places(
    session: Session, cache: RollupCache, rows: list[Node]
) -> list[dict[str, tuple[float | None, float | None]]]:
    """Each measure's {place: (baseline, target)}, read only for measures not cached."""
    found = {row.id: cache.places.get((row.id, row.definition_version)) for row in rows}
    missing = [row.id for row in rows if found[row.id] is None]
    if missing:
        fresh: dict[str, dict] = {measure_id: {} for measure_id in missing}
        for measure_id, place_id, baseline, target in session.execute(
            select(
                MeasurePlace.measure_id,
                MeasurePlace.place_id,
                MeasurePlace.baseline,
                MeasurePlace.target,
            ).where(MeasurePlace.measure_id.in_(missing))
        ):
            fresh[measure_id][place_id] = (baseline, target)
        for row in rows:
            if row.id in fresh:
                found[row.id] = fresh[row.id]
                cache.places.put((row.id, row.definition_version), fresh[row.id])
    return [found[row.id] for row in rows]


def _measure_def(row: Node, places: dict) -> MeasureDef:
    """A measure's definition from its Node row and its places."""
    milestones = sorted(
        (date.fromisoformat(m["date"]), float(m["progress"])) for m in row.milestones or []
    )
    return MeasureDef(
        id=row.id,
        title=row.title,
        unit=row.unit,
        kind=row.measure_kind,
        aggregate=row.aggregate,
        frequency=row.frequency,
        start=row.start,
        due=row.due,
        milestones=tuple(milestones),
        dimensions=tuple(row.dimensions or ()),
        city_baseline=row.city_baseline,
        city_target=row.city_target,
        data_version=row.data_version,
        places=places,
        from_works=row.source == "works",
    )


def _leaves_below(places: Mapping[str, PlaceInfo]) -> dict[str, frozenset[str]]:
    """For every place, the neighbourhoods at or below it."""
    below: dict[str, set[str]] = defaultdict(set)
    for place in places.values():
        if place.level != "neighbourhood":
            continue
        current: str | None = place.id
        while current is not None and current in places:
            below[current].add(place.id)
            current = places[current].parent_id
    return {p: frozenset(below[p]) for p in places}


def parse_filters(tree: TreeDef, raw: Mapping[str, str]) -> Filters:
    """`{"age": "65+"}` checked against the declared dimensions; unknown ones are a 400."""
    for name, value in raw.items():
        if name not in tree.dimensions:
            known = ", ".join(sorted(tree.dimensions)) or "none"
            raise TrackerError(f"unknown dimension {name!r} (declared: {known})")
        if value not in tree.dimensions[name]:
            values = ", ".join(sorted(tree.dimensions[name]))
            raise TrackerError(f"{value!r} is not a value of dimension {name!r} ({values})")
    return tuple(sorted(raw.items()))


def get_measure(tree: TreeDef, measure_id: str) -> MeasureDef:
    """The measure, or NotFound (404)."""
    if measure_id not in tree.measures:
        raise NotFound(f"unknown measure {measure_id!r}")
    return tree.measures[measure_id]


def get_place(tree: TreeDef, place_id: str | None) -> PlaceInfo:
    """The place, or NotFound (404)."""
    if place_id not in tree.places:
        raise NotFound(f"unknown place {place_id!r}")
    return tree.places[place_id]
