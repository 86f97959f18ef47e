"""Changes between the stored tree and a new one: what `tracker init` retires, moves or refuses.

The tree is edited for the life of the rebuild. Storing a new one never deletes: ids it
drops are retired and their rows stay. But a change that would stop showing stored
observations must be meant, so it is refused unless the file says so (`retired:`); a
renamed measure or place keeps its history (`was:`, `places.renamed`); and a measure
handed to another agency's output, with its history and the right to write it, needs
`moved_from:` (docs/results-tree.md, "Changing the tree safely").
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import aliased
from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.models import (
    Agency,
    ApiToken,
    Comment,
    Dimension,
    Feed,
    Node,
    Observation,
    Subscription,
    User,
    Work,
)
from tracker.places import Box, relocate_works

if TYPE_CHECKING:
    from tracker.tree.specs import MeasureSpec, Tree

# How init names each kind of retired id, in the order it prints them.
KINDS = {
    "agency": "agencies",
    "feed": "feeds",
    "place": "places",
    "result": "results",
    "output": "outputs",
    "measure": "measures",
    "dimension value": "dimension values",
}


@dataclass
class TreeChanges:
    """What storing a tree retired, moved and left unshown; refusals stop the store."""

    retired: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids
    notes: list[str] = field(default_factory=list)  # one sentence each
    refusals: list[str] = field(default_factory=list)

    def retire(self, kind: str, ids: Iterable[str]) -> None:
        """Note ids of one kind as retired."""
        ids = sorted(ids)
        if ids:
            self.retired.setdefault(kind, []).extend(ids)

    def lines(self) -> list[str]:
        """What init prints: a line per kind retired, then each note."""
        lines = [
            f"Retired {KINDS[kind]}: {', '.join(self.retired[kind])}"
            for kind in KINDS
            if kind in self.retired
        ]
        return lines + self.notes


class TreeChangeRefused(TrackerError):
    """A new tree that would stop showing stored data, or hand it over, without saying so."""

    def __init__(self, refusals: list[str]):
        self.refusals = refusals
        super().__init__(
            "the tree would stop showing or hand over stored data without saying so; "
            "nothing was changed:\n" + "\n".join(f"  - {refusal}" for refusal in refusals),
            status=409,
        )


@dataclass(frozen=True)
class StoredTree:
    """The live part of the stored tree, read before a new tree is stored."""

    agencies: frozenset[str]
    feeds: frozenset[str]
    nodes: dict[str, str]  # id -> kind
    measure_agency: dict[str, str | None]  # measure id -> its output's agency
    dimension_values: frozenset[tuple[str, str]]
    measure_dimensions: dict[str, tuple[str, ...]]  # measure id -> its declared dimensions


def read_stored(session: Session) -> StoredTree:
    """The stored tree's live agencies, feeds, nodes and declared dimension values."""
    output = aliased(Node)
    nodes = session.execute(
        select(Node.id, Node.kind, output.agency_id, Node.dimensions)
        .outerjoin(output, output.id == Node.parent_id)
        .where(Node.retired_at.is_(None))
    ).all()
    return StoredTree(
        agencies=frozenset(session.scalars(select(Agency.id).where(Agency.retired_at.is_(None)))),
        feeds=frozenset(session.scalars(select(Feed.id).where(Feed.retired_at.is_(None)))),
        nodes={node_id: kind for node_id, kind, _, _ in nodes},
        measure_agency={node_id: agency for node_id, kind, agency, _ in nodes if kind == "measure"},
        measure_dimensions={
            node_id: tuple(dims or ()) for node_id, kind, _, dims in nodes if kind == "measure"
        },
        dimension_values=frozenset(
            (name, value)
            for name, value in session.execute(select(Dimension.name, Dimension.value))
        ),
    )


# --- reviewing a new tree against the stored one --------------------------------------------


def review_changes(
    session: Session, tree: "Tree", stored: StoredTree, retired_places: Iterable[str]
) -> TreeChanges:
    """What storing `tree` over `stored` retires and leaves unshown, and what it must refuse.

    `retired_places` are the places the new boundaries dropped (already retired).
    """
    changes = TreeChanges()
    _review_agencies(session, tree, stored, changes)
    _review_nodes(session, tree, stored, changes)
    _review_moves(session, tree, stored, changes)
    _review_places(session, tree, set(retired_places), changes)
    _review_dimension_values(session, tree, stored, changes)
    _review_measure_dimensions(session, tree, stored, changes)
    _review_renames(session, tree, changes)
    return changes


def _review_agencies(session: Session, tree: "Tree", stored: StoredTree, changes: TreeChanges):
    """Agencies and feeds the file dropped, with the credentials that stop working."""
    gone = stored.agencies - {agency.id for agency in tree.agencies}
    changes.retire("agency", gone)
    changes.retire("feed", stored.feeds - {feed.id for feed in tree.feeds()})
    tokens = _counts(session, ApiToken.agency_id, gone, ApiToken.revoked_at.is_(None))
    users = _counts(session, User.agency_id, gone, User.disabled_at.is_(None))
    works = _counts(session, Work.agency_id, gone)
    for agency in sorted(gone):
        changes.notes.append(
            f"Agency {agency!r}: {_many(tokens.get(agency, 0), 'API token')} and "
            f"{_many(users.get(agency, 0), 'staff account')} stop working until it is back "
            f"in the tree; its works ({works.get(agency, 0)}) stay shown, read-only."
        )


def _review_nodes(session: Session, tree: "Tree", stored: StoredTree, changes: TreeChanges):
    """Results, outputs and measures the file dropped; refused where observations would
    stop showing unless `retired.measures` lists the measure or a measure's `was` names it."""
    in_tree = {node.id for node, *_ in tree.iter_nodes()}
    renamed = {measure.was for measure in tree.measures() if measure.was}
    gone = {node_id: kind for node_id, kind in stored.nodes.items() if node_id not in in_tree}
    for kind in ("result", "output", "measure"):
        changes.retire(kind, [node_id for node_id, k in gone.items() if k == kind])
    measures = [node_id for node_id, kind in gone.items() if kind == "measure"]
    _stop_showing(
        changes,
        ("measure", "tree"),
        _counts(session, Observation.measure_id, set(measures) - renamed),
        tree.retired.measures,
        lambda measure: (
            f"list it under `retired: {{measures: [{measure}]}}` to stop showing them, give "
            f"the measure that replaces it `was: {measure}` to move them there, or put it back"
        ),
    )


def _stop_showing(
    changes: TreeChanges,
    what: tuple[str, str],
    counts: dict[str, int],
    retired: Iterable[str],
    remedy: Callable[[str], str],
) -> None:
    """Note the observations each id the file retired leaves unshown; refuse the ids whose
    observations it would hide without retiring them. `what` is (kind, where it was)."""
    kind, source = what
    for ident in sorted(counts):
        rows = _many(counts[ident], "stored observation")
        if ident in retired:
            changes.notes.append(
                f"{kind.capitalize()} {ident!r}: {rows} no longer shown (retired)."
            )
        else:
            changes.refusals.append(
                f"{kind} {ident!r} is gone from the {source} but has {rows}: {remedy(ident)}"
            )


def _review_moves(session: Session, tree: "Tree", stored: StoredTree, changes: TreeChanges):
    """Measures now under another agency's output: refused unless `moved_from` says so."""
    for measure, agency in _measure_agencies(tree):
        source = _stored_id(measure, stored)
        before = stored.measure_agency.get(source) if source else None
        if before is None or before == agency:
            continue
        rows = _many(
            _counts(session, Observation.measure_id, {source}).get(source, 0), "observation"
        )
        if measure.moved_from == before:
            changes.notes.append(
                f"Warning: measure {measure.id!r} moved from agency {before!r} to {agency!r}: "
                f"its {rows} are now {agency!r}'s, and only {agency!r} may write it."
            )
        else:
            changes.refusals.append(
                f"measure {measure.id!r} moves from agency {before!r} to {agency!r}, handing "
                f"it {rows} and the right to write the measure: add `moved_from: {before}` "
                "to the measure to confirm"
            )


def _measure_agencies(tree: "Tree") -> list[tuple["MeasureSpec", str]]:
    """Each measure of the tree with the agency of its output."""
    from tracker.tree.specs import OutputSpec

    return [
        (measure, node.agency)
        for node, *_ in tree.iter_nodes()
        if isinstance(node, OutputSpec)
        for measure in node.measures
    ]


def _stored_id(measure: "MeasureSpec", stored: StoredTree) -> str | None:
    """The live stored measure this one continues: itself, else the one its `was` names."""
    for candidate in (measure.id, measure.was):
        if candidate in stored.measure_agency:
            return candidate
    return None


def _review_places(session: Session, tree: "Tree", gone: set[str], changes: TreeChanges):
    """Places the boundaries dropped; refused where observations would stop showing unless
    `retired.places` lists the place or `places.renamed` moves it."""
    changes.retire("place", gone)
    renamed = set(tree.places.renamed.values())
    _stop_showing(
        changes,
        ("place", "boundaries"),
        _counts(session, Observation.place_id, gone - renamed),
        tree.retired.places,
        lambda place: (
            f"list it under `retired: {{places: [{place}]}}` to stop showing them, map its "
            f"new id to it under `places: {{renamed: {{NEW-ID: {place}}}}}` to move them "
            "there, or put it back"
        ),
    )


def _review_dimension_values(
    session: Session, tree: "Tree", stored: StoredTree, changes: TreeChanges
):
    """Dimension values the file dropped; refused where cells holding observations would
    silently leave every total unless `retired.dimension_values` lists them."""
    declared = {(name, value) for name, values in tree.dimensions.items() for value in values}
    gone = sorted(stored.dimension_values - declared)
    changes.retire("dimension value", [f"{name}={value}" for name, value in gone])
    for name, value in gone:
        count = session.scalar(
            select(func.count()).select_from(Observation).where(_in_cell(name, value))
        )
        if not count:
            continue
        rows = _many(count, "stored observation")
        if value in tree.retired.dimension_values.get(name, ()):
            changes.notes.append(
                f"Dimension value {name}={value}: {rows} no longer counted (retired)."
            )
        else:
            changes.refusals.append(
                f"dimension value {name}={value} is gone from the tree but {rows} give it, "
                f"and would drop out of every total: list it under "
                f'`retired: {{dimension_values: {{{name}: ["{value}"]}}}}` to stop counting '
                "them, or put it back"
            )


def _review_measure_dimensions(
    session: Session, tree: "Tree", stored: StoredTree, changes: TreeChanges
):
    """Measures whose `dimensions` list changed. Stored cells name the old dimensions, so
    those observations would fit no cell of the new list and silently leave every total:
    refused unless `retired.measure_dimensions` lists the measure."""
    for measure in tree.measures():
        before = stored.measure_dimensions.get(measure.id)
        if before is None or set(before) == set(measure.dimensions):
            continue
        keys = session.execute(
            select(Observation.dims_key, func.count())
            .where(Observation.measure_id == measure.id)
            .group_by(Observation.dims_key)
        ).all()
        wanted = set(measure.dimensions)
        count = sum(n for key, n in keys if _cell_names(key) != wanted)
        if not count:
            continue
        rows = _many(count, "stored observation")
        change = f"dimensions [{', '.join(before)}] → [{', '.join(measure.dimensions)}]"
        if measure.id in tree.retired.measure_dimensions:
            changes.notes.append(
                f"Measure {measure.id} ({change}): {rows} no longer counted (retired)."
            )
        else:
            changes.refusals.append(
                f"measure {measure.id!r} changes its {change}, but {rows} were stored under "
                f"the old cells and would drop out of every total: list it under "
                f"`retired: {{measure_dimensions: [{measure.id}]}}` to stop counting them, "
                "or keep its dimensions"
            )


def _cell_names(key: str) -> set[str]:
    """The dimension names a stored cell key gives ("age=65+|sex=male" -> {age, sex})."""
    return {part.partition("=")[0] for part in key.split("|") if part}


def _review_renames(session: Session, tree: "Tree", changes: TreeChanges):
    """A rename gives a series a new name; it cannot merge it into one the new id already
    has (two neighbourhoods' running totals are not one running total)."""
    renames = [(Observation.measure_id, m.was, m.id) for m in tree.measures() if m.was]
    renames += [(Observation.place_id, old, new) for new, old in tree.places.renamed.items()]
    for column, old, new in renames:
        clashes = _clashes(session, column, old, new)
        if clashes:
            changes.refusals.append(
                f"{old!r} cannot be renamed {new!r}: {new!r} already holds observations of "
                f"the same series as {_many(clashes, 'observation')} of {old!r}, and a rename "
                "does not merge series; retire one of them instead"
            )


def _in_cell(name: str, value: str):
    """Observations whose cell gives `name` = `value` (keys look like "age=65+|sex=male")."""
    part = f"{name}={value}"
    key, escaped = Observation.dims_key, _like_escape(part)
    return or_(
        key == part,
        key.like(f"{escaped}|%", escape="\\"),
        key.like(f"%|{escaped}", escape="\\"),
        key.like(f"%|{escaped}|%", escape="\\"),
    )


def _like_escape(text: str) -> str:
    """`text` with LIKE wildcards escaped, to match literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _counts(session: Session, column, ids: Iterable[str], *conditions) -> dict[str, int]:
    """Rows per id in `column`, for the ids that have any."""
    ids = sorted(ids)
    if not ids:
        return {}
    query = select(column, func.count()).where(column.in_(ids), *conditions).group_by(column)
    return dict(session.execute(query).all())


def _many(count: int, noun: str) -> str:
    """'1 work', '3 works'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- moving history to a new id ---------------------------------------------------------------


def move_measure_history(session: Session, tree: "Tree", changes: TreeChanges) -> set[str]:
    """Give each measure with `was` the observations and works of the measure it was; the
    measures whose figures changed. The audit trail keeps the ids it recorded."""
    touched: set[str] = set()
    for measure in tree.measures():
        if not measure.was:
            continue
        moved = _move_rows(session, Observation.measure_id, measure.was, measure.id)
        works = session.execute(
            update(Work).where(Work.measure_id == measure.was).values(measure_id=measure.id)
        ).rowcount
        if moved or works:
            touched |= {measure.was, measure.id}
            changes.notes.append(
                f"Measure {measure.was!r} renamed {measure.id!r}: {_many(moved, 'observation')} "
                f"and {_many(works, 'work')} moved."
            )
    return touched


def move_place_history(session: Session, tree: "Tree", changes: TreeChanges) -> set[str]:
    """Give each renamed neighbourhood the observations, comments and subscriptions of the
    id it had (its works are located again from their geometry like any others); the
    measures whose observations moved."""
    touched: set[str] = set()
    for new, old in sorted(tree.places.renamed.items()):
        touched.update(
            session.scalars(
                select(Observation.measure_id).where(Observation.place_id == old).distinct()
            )
        )
        moved = _move_rows(session, Observation.place_id, old, new)
        for model in (Comment, Subscription):
            session.execute(update(model).where(model.place_id == old).values(place_id=new))
        if moved:
            changes.notes.append(
                f"Place {old!r} renamed {new!r}: {_many(moved, 'observation')} moved."
            )
    return touched


def _move_rows(session: Session, column, old: str, new: str) -> int:
    """Re-point observations from `old` to `new` in `column` (review_changes refused any
    clash); how many moved."""
    return session.execute(update(Observation).where(column == old).values({column: new})).rowcount


def _clashes(session: Session, column, old: str, new: str) -> int:
    """Observations under `old` in a series (measure, place, cell) that `new` also has."""
    other = aliased(Observation)
    same = [
        getattr(other, name) == getattr(Observation, name)
        for name in ("measure_id", "place_id", "dims_key")
        if name != column.key
    ]
    series = select(other.id).where(getattr(other, column.key) == new, *same).exists()
    return session.scalar(
        select(func.count()).select_from(Observation).where(column == old, series)
    )


def locate_works_again(session: Session, boxes: Iterable[Box], changes: TreeChanges) -> set[str]:
    """Locate again the works near boundaries that appeared, moved or went (a retired place
    holds none after this); the measures their figures feed."""
    relocated = relocate_works(session, boxes)
    if relocated:
        changes.notes.append(
            f"{_many(len(relocated), 'work')} located again in the new boundaries."
        )
    return {measure for measure in relocated.values() if measure}


def bump_data_versions(session: Session, measure_ids: Iterable[str]) -> None:
    """Move the data version of measures whose figures changed, so caches recompute them."""
    ids = sorted(set(measure_ids))
    if ids:
        session.execute(
            update(Node).where(Node.id.in_(ids)).values(data_version=Node.data_version + 1)
        )
