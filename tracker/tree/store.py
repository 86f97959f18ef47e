"""`store_tree`: a checked tree into the database, retiring what the file dropped."""

from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from tracker.models import (
    Agency,
    Dimension,
    Feed,
    MeasurePlace,
    Node,
    Place,
    ReportCategory,
    utcnow,
)
from tracker.places import StreetRecord, store_places
from tracker.tree.changes import (
    TreeChangeRefused,
    TreeChanges,
    bump_data_versions,
    locate_works_again,
    move_measure_history,
    move_place_history,
    read_stored,
    review_changes,
)
from tracker.tree.specs import MeasureSpec, NodeSpec, OutputSpec, Tree

# Node columns that only measures fill in.
_MEASURE_COLUMNS = (
    "measure_type",
    "unit",
    "measure_kind",
    "aggregate",
    "frequency",
    "start",
    "due",
    "city_baseline",
    "city_target",
    "source",
)


def store_tree(
    session: Session, tree: Tree, *, streets: list[StreetRecord] | None = None
) -> TreeChanges:
    """Store the tree's places (and `streets` when given), agencies, nodes, dimensions,
    feeds and report categories, and say what changed; the caller commits.

    Ids the file dropped are retired (never deleted) and un-retired when they come back.
    TreeChangeRefused, before anything is kept, when that would stop showing stored
    observations or hand a measure to another agency without the file saying so
    (tracker.tree.changes). Renamed measures and places take their history along; works
    are located again where boundaries moved. A node's definition_version and
    data_version go up whenever its definition or its places change.
    """
    now = utcnow()
    stored = read_stored(session)
    places = store_places(
        session,
        city_id=tree.city.id,
        city_name=tree.city.name,
        boundaries=tree.boundaries,
        streets=streets,
    )
    session.get(Place, tree.city.id).timezone = tree.city.timezone
    changes = review_changes(session, tree, stored, places.retired)
    if changes.refusals:
        raise TreeChangeRefused(changes.refusals)
    _store_agencies(session, tree, now)
    session.flush()  # nodes and feeds refer to agencies
    _store_nodes(session, tree, now)
    _dimensions_changed(session, _store_dimensions(session, tree))
    _store_feeds(session, tree, now)
    _store_report_categories(session, tree, now)
    session.flush()  # renamed measures and places exist before their history moves
    touched = move_measure_history(session, tree, changes)
    touched |= move_place_history(session, tree, changes)
    touched |= locate_works_again(session, places.redrawn, changes)
    bump_data_versions(session, touched)
    if places.changed:
        _place_tree_changed(session)
    session.flush()
    return changes


def _place_tree_changed(session: Session) -> None:
    """Every result's definition takes in the place tree: a new one rebuilds cached trees."""
    for row in session.exec(select(Node).where(Node.kind == "result", Node.retired_at.is_(None))):
        _definition_changed(row)


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set the attributes that differ; whether any did."""
    changed = {key: value for key, value in values.items() if getattr(row, key) != value}
    for key, value in changed.items():
        setattr(row, key, value)
    return bool(changed)


def _store_agencies(session: Session, tree: Tree, now: datetime) -> None:
    """Upsert agencies by id; retire those the file no longer has."""
    rows = {row.id: row for row in session.exec(select(Agency))}
    for agency in tree.agencies:
        row = rows.pop(agency.id, None) or Agency(id=agency.id, name=agency.name)
        _assign(row, {"name": agency.name, "email": agency.email, "retired_at": None})
        session.add(row)
    for row in rows.values():
        if row.retired_at is None:
            row.retired_at = now


def _store_nodes(session: Session, tree: Tree, now: datetime) -> None:
    """Upsert results, outputs and measures with their places; retire dropped nodes."""
    rows = {row.id: row for row in session.exec(select(Node))}
    place_rows: dict[str, dict[str, MeasurePlace]] = {}
    for place_row in session.exec(select(MeasurePlace)):
        place_rows.setdefault(place_row.measure_id, {})[place_row.place_id] = place_row
    nodes = list(tree.iter_nodes())
    new = {node.id for node, *_ in nodes if node.id not in rows}
    for node, kind, parent_id, position in nodes:
        if node.id in new:
            rows[node.id] = Node(id=node.id, **_node_values(node, kind, parent_id, position))
            session.add(rows[node.id])
    session.flush()  # new parents exist before existing nodes move under them
    for node, kind, parent_id, position in nodes:
        row = rows.pop(node.id)
        changed = _assign(row, _node_values(node, kind, parent_id, position))
        if isinstance(node, MeasureSpec):
            changed |= _store_places(session, node, place_rows.get(node.id, {}))
        if changed and node.id not in new:
            _definition_changed(row)
    for row in rows.values():
        if row.retired_at is None:
            row.retired_at = now
            _definition_changed(row)


def _definition_changed(row: Node) -> None:
    """A changed definition changes the figures too: both versions move."""
    row.definition_version += 1
    row.data_version += 1


def _node_values(node: NodeSpec, kind: str, parent_id: str | None, position: int) -> dict:
    """The Node columns for a node of the tree."""
    values = {
        "kind": kind,
        "parent_id": parent_id,
        "position": position,
        "title": node.title,
        "weight": node.weight,
        "agency_id": node.agency if isinstance(node, OutputSpec) else None,
        "retired_at": None,
    }
    if not isinstance(node, MeasureSpec):
        return values | dict.fromkeys(_MEASURE_COLUMNS) | {"milestones": [], "dimensions": []}
    return values | {
        "measure_type": node.type,
        "unit": node.unit,
        "measure_kind": node.kind,
        "aggregate": node.aggregate,
        "frequency": node.frequency,
        "start": node.start,
        "due": node.due,
        "city_baseline": _city_value(node, node.baseline),
        "city_target": _city_value(node, node.target),
        "milestones": [{"date": d.isoformat(), "progress": p} for d, p in node.milestones],
        "dimensions": list(node.dimensions),
        "source": node.source,
    }


def _city_value(measure: MeasureSpec, value: float | dict | None) -> float | None:
    """A plain number on a sum measure is the city's alone (CONTRACT §3 rule 3)."""
    return value if measure.aggregate == "sum" and isinstance(value, float) else None


def _leaf_baseline(measure: MeasureSpec, place_id: str) -> float | None:
    """A place's own baseline: its map entry, or a number that applies to every place."""
    if isinstance(measure.baseline, dict):
        return measure.baseline[place_id]
    # Zero is zero everywhere, even on a sum measure: a target map needs it at each leaf.
    return measure.baseline if measure.aggregate != "sum" or measure.baseline == 0 else None


def _leaf_target(measure: MeasureSpec, place_id: str) -> float | None:
    """A place's own target: its map entry, or a number on a mean, min or max measure."""
    if isinstance(measure.target, dict):
        return measure.target[place_id]
    return measure.target if measure.aggregate != "sum" else None


def _store_places(session: Session, measure: MeasureSpec, rows: dict[str, MeasurePlace]) -> bool:
    """Make the measure's MeasurePlace rows match the tree; whether anything changed."""
    wanted = {
        place: {"baseline": _leaf_baseline(measure, place), "target": _leaf_target(measure, place)}
        for place in measure.places
    }
    changed = False
    for place, row in rows.items():
        if place not in wanted:
            session.delete(row)  # place rows hold no history
            changed = True
    for place, values in wanted.items():
        if place in rows:
            changed |= _assign(rows[place], values)
        else:
            session.add(MeasurePlace(measure_id=measure.id, place_id=place, **values))
            changed = True
    return changed


def _store_dimensions(session: Session, tree: Tree) -> set[str]:
    """Make the Dimension rows match the tree's declared dimension values; the names of
    stored dimensions that gained or lost a value (a new one changes only the measures
    that now declare it, which store_nodes sees)."""
    rows = {(row.name, row.value): row for row in session.exec(select(Dimension))}
    stored = {name for name, _ in rows}
    changed = set()
    for name, values in tree.dimensions.items():
        for position, value in enumerate(values):
            row = rows.pop((name, value), None)
            if row is None:
                session.add(Dimension(name=name, value=value, position=position))
                changed.add(name)
            else:
                _assign(row, {"position": position})
    for row in rows.values():
        session.delete(row)
        changed.add(row.name)
    return changed & stored


def _dimensions_changed(session: Session, names: set[str]) -> None:
    """A measure's cells are its dimensions' values: new values make new figures."""
    if not names:
        return
    for row in session.exec(select(Node).where(Node.kind == "measure", Node.retired_at.is_(None))):
        if names & set(row.dimensions or ()):
            _definition_changed(row)


# Feed settings that change when it runs, not what a run reads.
_SCHEDULING = {"every", "cron", "timeout", "retired_at"}


def _store_feeds(session: Session, tree: Tree, now: datetime) -> None:
    """Upsert feeds, keeping their conditional-GET state; retire dropped feeds."""
    rows = {row.id: row for row in session.exec(select(Feed))}
    for feed in tree.feeds():
        values = {
            "agency_id": feed.agency,
            "url": feed.url,
            "format": feed.format,
            "every": feed.every,
            "cron": feed.cron,
            "provides": feed.provides,
            "timeout": feed.timeout,
            "measure_id": feed.measure,
            "fields": dict(feed.fields),
            "place_match": feed.place_match,
            "options": dict(feed.options),
            "retired_at": None,
        }
        row = rows.pop(feed.id, None)
        if row is None:
            session.add(Feed(id=feed.id, **values))
            continue
        reading = {k: v for k, v in values.items() if k not in _SCHEDULING}
        if any(getattr(row, key) != value for key, value in reading.items()):
            # A new address or a new way of reading the rows (mapping, measure, places,
            # options): the source must be read again even if it has not changed, so
            # forget its validators rather than earn a 304 that keeps the old result.
            row.etag = row.last_modified = None
        _assign(row, values)
    for row in rows.values():
        if row.retired_at is None:
            row.retired_at = now


def _store_report_categories(session: Session, tree: Tree, now: datetime) -> None:
    """Upsert report categories by code, in file order as `position`; retire dropped ones
    (reports keep pointing at them) and un-retire those that come back."""
    rows = {row.code: row for row in session.exec(select(ReportCategory))}
    for position, spec in enumerate(tree.report_categories):
        values = {
            "name": spec.name,
            "description": spec.description,
            "agency_id": spec.agency,
            "group_name": spec.group,
            "keywords": list(spec.keywords),
            "position": position,
            "retired_at": None,
        }
        row = rows.pop(spec.code, None)
        if row is None:
            session.add(ReportCategory(code=spec.code, **values))
        else:
            _assign(row, values)
    for row in rows.values():
        if row.retired_at is None:
            row.retired_at = now
