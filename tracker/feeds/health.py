"""Feed health: each feed's latest run and schedule, as GET /api/v1/feeds and the /feeds
page show them, and the agency names and rejected rows those pages list.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from tracker.clock import city_timezone, utc_iso
from tracker.feeds.schedule import next_due
from tracker.models import Agency, Feed, FeedRejection, FeedRun, utcnow


@dataclass
class FeedHealth:
    """A feed's latest run and schedule, as GET /api/v1/feeds and the /feeds page show it."""

    id: str
    agency: str
    format: str
    provides: str
    schedule: str
    status: str  # never_run | ok | unchanged | failed
    last_run: datetime | None
    rows: int | None
    rejected: int | None
    error: str | None
    next_run: datetime
    last_success: datetime | None
    late: bool | None  # two scheduled runs passed without a successful one; None: never ok
    run_id: int | None

    def to_json(self) -> dict[str, Any]:
        """The contract's fields (CONTRACT §4), times in UTC with Z."""
        return {
            "id": self.id,
            "agency": self.agency,
            "status": self.status,
            "last_run": _utc_text(self.last_run),
            "rows": self.rows,
            "rejected": self.rejected,
            "error": self.error,
            "next_run": _utc_text(self.next_run),
        }


def feed_health(session: Session, *, now: datetime | None = None) -> list[FeedHealth]:
    """Every feed in the tree with its latest finished run, in id order.

    `next_run` is when the schedule next calls for a run, and never earlier than now: a
    feed that has not run yet, or is overdue, runs as soon as the scheduler gets to it.
    """
    now = now or utcnow()
    timezone = city_timezone(session)
    latest = select(func.max(FeedRun.id)).where(FeedRun.status != "running")
    runs = {
        run.feed_id: run
        for run in session.scalars(
            select(FeedRun).where(FeedRun.id.in_(latest.group_by(FeedRun.feed_id)))
        )
    }
    successes = dict(
        session.execute(
            select(FeedRun.feed_id, func.max(FeedRun.started_at))
            .where(FeedRun.status.in_(("ok", "unchanged")))
            .group_by(FeedRun.feed_id)
        ).all()
    )
    feeds = session.scalars(select(Feed).where(Feed.retired_at.is_(None)).order_by(Feed.id))
    return [
        _health(feed, runs.get(feed.id), successes.get(feed.id), now, timezone) for feed in feeds
    ]


def _health(
    feed: Feed, run: FeedRun | None, success: datetime | None, now: datetime, timezone: str
) -> FeedHealth:
    """One feed's health from its latest run and latest success."""
    late = None
    if success is not None:
        late = next_due(feed, next_due(feed, success, timezone), timezone) < now
    return FeedHealth(
        id=feed.id,
        agency=feed.agency_id,
        format=feed.format,
        provides=feed.provides,
        schedule=f"every {feed.every}" if feed.every else f"cron {feed.cron}",
        status=run.status if run else "never_run",
        last_run=run.started_at if run else None,
        rows=run.rows if run else None,
        rejected=run.rejected if run else None,
        error=run.error if run else None,
        next_run=max(next_due(feed, run.started_at, timezone), now) if run else now,
        last_success=success,
        late=late,
        run_id=run.id if run else None,
    )


def agency_names(session: Session, ids: set[str]) -> dict[str, str]:
    """Names of the given agencies, in name order."""
    rows = session.execute(select(Agency.id, Agency.name).where(Agency.id.in_(ids)))
    return dict(sorted(rows.all(), key=lambda row: row[1]))


def run_rejections(session: Session, run_id: int, limit: int = 100) -> list[FeedRejection]:
    """The first rejected rows of a run, in row order."""
    return list(
        session.scalars(
            select(FeedRejection)
            .where(FeedRejection.run_id == run_id)
            .order_by(FeedRejection.id)
            .limit(limit)
        )
    )


def _utc_text(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with Z (CONTRACT §4), or None."""
    return None if moment is None else utc_iso(moment)
