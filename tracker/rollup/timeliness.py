"""Reporting timeliness per agency: reports expected, received and received on time."""

from datetime import date, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    case,
    cast,
    extract,
    func,
    select,
)
from sqlmodel import Session

from tracker.errors import NotFound
from tracker.models import (
    Agency,
    Observation,
)
from tracker.rollup.cache import RollupCache
from tracker.rollup.definitions import MeasureDef, NodeDef, TreeDef, load_definitions
from tracker.rollup.rules import FREQUENCY_MONTHS


def timeliness(
    session: Session,
    *,
    agency_id: str,
    today: date | None = None,
    cache: RollupCache | None = None,
) -> list[dict[str, Any]]:
    """Per measure of the agency: reports expected, received, and received on time.

    A report is one neighbourhood's observations for one period: a calendar month, quarter
    or year, or for weekly measures a 7-day block counted from `start`. Periods from the
    one holding `start` to the one holding `due` are expected once over (by `today`). A
    report is on time when its first-received observation arrived (UTC) no later than the
    end of the following period.
    """
    if session.get(Agency, agency_id) is None:
        raise NotFound(f"unknown agency {agency_id!r}")
    cache = cache or RollupCache()
    tree = load_definitions(session, cache)
    today = today or tree.today()
    nodes = _agency_measures(tree, agency_id)
    # Counting reports reads every observation of each measure: kept until one is written.
    versions = tuple((n.id, tree.measures[n.id].data_version) for n in nodes)
    key = ("timeliness", agency_id, today, versions)
    answer = cache.answers.get(key)
    if answer is None:
        answer = _count_reports(session, tree, nodes, today)
        cache.answers.put(key, answer)
    return [dict(row) for row in answer]


def _count_reports(
    session: Session, tree: TreeDef, nodes: list[NodeDef], today: date
) -> list[dict[str, Any]]:
    answer = []
    for node in nodes:
        measure = tree.measures[node.id]
        first, last = _expected_periods(measure, today)
        # A measure derived from works is never reported: listed, but nothing falls due.
        periods = 0 if measure.from_works else max(last - first + 1, 0)
        received, on_time = (0, 0)
        if periods and measure.places:
            received, on_time = _reports(session, measure, first, last)
        answer.append(
            {
                "measure": measure.id,
                "title": measure.title,
                "frequency": measure.frequency,
                "start": measure.start.isoformat(),
                "due": measure.due.isoformat(),
                "places": len(measure.places),
                "periods": periods,
                "expected": periods * len(measure.places),
                "received": received,
                "on_time": on_time,
            }
        )
    return answer


def _agency_measures(tree: TreeDef, agency_id: str) -> list[NodeDef]:
    """The agency's measures in tree order (measures belong to their output's agency)."""
    found: list[NodeDef] = []

    def walk(node_id: str, agency: str | None) -> None:
        node = tree.nodes[node_id]
        agency = node.agency_id or agency
        if node.kind == "measure" and agency == agency_id:
            found.append(node)
        for child in node.children:
            walk(child, agency)

    for root in tree.roots:
        walk(root, None)
    return found


def period_index(frequency: str, day: date, start: date) -> int:
    """The period holding `day`: calendar months/quarters/years, or weeks from `start`."""
    if frequency == "weekly":
        return (day - start).days // 7
    return (day.year * 12 + day.month - 1) // FREQUENCY_MONTHS[frequency]


def _period_end(frequency: str, index: int, start: date) -> date:
    """The first day after period `index`."""
    if frequency == "weekly":
        return start + timedelta(days=7 * (index + 1))
    months = (index + 1) * FREQUENCY_MONTHS[frequency]
    return date(months // 12, months % 12 + 1, 1)


def _expected_periods(measure: MeasureDef, today: date) -> tuple[int, int]:
    """First and last period index a report is due for by `today` (last < first: none)."""
    first = period_index(measure.frequency, measure.start, measure.start)
    last = period_index(measure.frequency, measure.due, measure.start)
    while last >= first and _period_end(measure.frequency, last, measure.start) > today:
        last -= 1
    return first, last


def _reports(session: Session, measure: MeasureDef, first: int, last: int) -> tuple[int, int]:
    """(received, on time) reports of a measure over periods first..last, counted in SQL."""
    obs = Observation
    dialect = session.get_bind().dialect.name
    period = _period_sql(dialect, measure, obs.date, is_time=False).label("period")
    arrived = _period_sql(dialect, measure, obs.first_received_at, is_time=True)
    per_report = (
        select(obs.place_id, period, func.min(arrived).label("arrived"))
        .where(
            obs.measure_id == measure.id,
            obs.value.is_not(None),
            obs.place_id.in_(sorted(measure.places)),
            obs.date >= measure.start,
        )
        .group_by(obs.place_id, period)
        .subquery()
    )
    on_time = func.sum(case((per_report.c.arrived <= per_report.c.period + 1, 1), else_=0))
    row = session.execute(
        select(func.count(), on_time).where(per_report.c.period.between(first, last))
    ).one()
    return row[0], int(row[1] or 0)


def _period_sql(dialect: str, measure: MeasureDef, column, *, is_time: bool):
    """period_index() in SQL, on SQLite and PostgreSQL; times are taken in UTC."""
    if is_time and dialect == "postgresql":
        column = func.timezone("UTC", column)
    if measure.frequency == "weekly":
        if dialect == "postgresql":
            days = cast(column, Date) - measure.start
        else:
            days = cast(
                func.julianday(func.date(column)) - func.julianday(measure.start.isoformat()),
                Integer,
            )
        return days // 7
    months = cast(extract("year", column), Integer) * 12 + cast(extract("month", column), Integer)
    return (months - 1) // FREQUENCY_MONTHS[measure.frequency]
