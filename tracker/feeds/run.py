"""Running a feed (CONTRACT §7): the run's lifecycle (see tracker.feeds), its lease while
under way, the dead runs a stopped process left "running", and storing a run's rows,
rejections and outcome in one transaction.
"""

import hashlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, true, update
from sqlmodel import Session

from importers import ParseError, SourceTable, get_importer
from tracker.clock import city_timezone
from tracker.errors import NotFound
from tracker.feeds.fetch import FeedError, Fetcher, Unchanged
from tracker.feeds.mapping import missing_columns, submission_rows
from tracker.leases import HOLDER_LENGTH, NAME_LENGTH, LeaseHeartbeat, live_lease
from tracker.models import Feed, FeedRejection, FeedRun, SchedulerLease, utcnow
from tracker.submissions import submit_observations, submit_works

log = logging.getLogger(__name__)

REJECTIONS_KEPT = 1000  # reasons stored per run; the run's `rejected` count is exact
FIELD_NAME_KEPT = 100  # FeedRejection.field holds this much of a (source-named) field
INTERRUPTED_AFTER = timedelta(hours=1)  # a run still "running" this long is stuck
# A run's lease lasts this long unless renewed (every third of it): how soon a run whose
# process was killed stops holding its feed back.
RUN_LEASE_SECONDS = 60.0

SessionSource = Engine | Callable[[], Session]


def run_feed(sessions: SessionSource, feed_id: str, *, now: datetime | None = None) -> FeedRun:
    """Run one feed now and return its recorded run (CONTRACT §7).

    `sessions` is an engine or a callable that opens a session; `now` (default: the
    clock) dates the run and decides which observation dates are "in the future".
    """
    open_session = _session_factory(sessions)
    now = now or utcnow()
    with open_session() as session:
        feed = _live_feed(session, feed_id, lock=True)
        timezone = city_timezone(session)
        run, holder = _start_run(session, feed_id, now)
        session.expunge(feed)  # read after the commit, whatever the session's expiry rule
        session.commit()
        run_id, engine = run.id, session.get_bind()
    if holder is None:
        log.info("feed %s: skipped, another run is under way", feed_id)
        return run
    with LeaseHeartbeat(engine, run_lease_name(feed_id), holder, RUN_LEASE_SECONDS):
        _perform(open_session, feed, run_id, timezone, now)
    with open_session() as session:
        run = session.get(FeedRun, run_id)
    log.info("feed %s: %s, %s rows, %s rejected", feed_id, run.status, run.rows, run.rejected)
    return run


def _start_run(session: Session, feed_id: str, now: datetime) -> tuple[FeedRun, str | None]:
    """Record a run, with its lease unless another run is under way; no commit.

    Returns the run and its lease's holder, or None as the holder of a run refused.
    """
    _close_dead_runs(session, feed_id, now)
    under_way = _running_since(session, feed_id)
    run = FeedRun(feed_id=feed_id, started_at=now)
    session.add(run)
    if under_way is not None:
        # `tracker import` beside the scheduler, or a scheduler that lost its lease
        # mid-run: reading the source twice at once would only repeat the work.
        run.status, run.finished_at = "failed", now
        run.error = f"another run of this feed has been under way since {under_way:%H:%M} UTC"
        return run, None
    session.flush()
    # The run's id first, then where it runs, for the operator.
    holder = f"{run.id} {socket.gethostname()}:{os.getpid()}"[:HOLDER_LENGTH]
    # In the run's own transaction, so no one sees it "running" without its lease.
    expires = utcnow() + timedelta(seconds=RUN_LEASE_SECONDS)
    session.merge(SchedulerLease(name=run_lease_name(feed_id), holder=holder, expires_at=expires))
    return run, holder


def _perform(
    open_session: Callable[[], Session], feed: Feed, run_id: int, timezone: str, now: datetime
) -> None:
    """Fetch, parse and store a run already recorded, and record how it ended."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    fetcher = Fetcher(feed)
    feed_id = feed.id
    try:
        table = _read(feed, fetcher, timezone)
        with open_session() as session:
            _store(session, feed_id, run_id, table, fetcher, today)
            session.commit()
    except Unchanged:
        _finish(open_session, run_id, status="unchanged", http_status=fetcher.status)
    except (FeedError, ParseError) as exc:
        _finish(
            open_session, run_id, status="failed", error=exc.message, http_status=fetcher.status
        )
    except Exception as exc:  # whatever breaks, the run is recorded as failed
        log.exception("feed %s: run %s broke", feed_id, run_id)
        error = f"internal error ({type(exc).__name__}); the operator's log has the details"
        _finish(open_session, run_id, status="failed", error=error, http_status=fetcher.status)
    finally:
        fetcher.close()


def run_feeds(
    sessions: SessionSource, feed_ids: list[str] | None = None, *, now: datetime | None = None
) -> list[FeedRun]:
    """Run the given feeds (default: every feed in the tree) one after another."""
    open_session = _session_factory(sessions)
    with open_session() as session:
        if feed_ids is None:
            feed_ids = list(session.scalars(live_feeds()).all())
        for feed_id in feed_ids:
            _live_feed(session, feed_id)  # refuse an unknown id before running any
    return [run_feed(open_session, feed_id, now=now) for feed_id in feed_ids]


def live_feeds():
    """Query for the ids of the feeds the tree has now, in id order."""
    return select(Feed.id).where(Feed.retired_at.is_(None)).order_by(Feed.id)


def _session_factory(sessions: SessionSource) -> Callable[[], Session]:
    """A callable that opens a session, from an engine or such a callable."""
    if isinstance(sessions, Engine):
        return lambda: Session(sessions, expire_on_commit=False)
    return sessions


def _live_feed(session: Session, feed_id: str, *, lock: bool = False) -> Feed:
    """The feed, or NotFound when the tree has no such feed (now).

    `lock` holds its row (PostgreSQL) until the transaction ends, so two processes
    starting the same feed at once see each other's run.
    """
    feed = session.get(Feed, feed_id, with_for_update=lock)
    if feed is None or feed.retired_at is not None:
        raise NotFound(f"no feed {feed_id!r} in the tree")
    return feed


def _running_since(session: Session, feed_id: str) -> datetime | None:
    """When the feed's run still under way started, or None."""
    return session.scalar(
        select(func.min(FeedRun.started_at)).where(
            FeedRun.feed_id == feed_id, FeedRun.status == "running"
        )
    )


def run_lease_name(feed_id: str) -> str:
    """The lease a run of the feed holds while under way; a digest when the id is too long."""
    name = f"feedrun:{feed_id}"
    if len(name) <= NAME_LENGTH:
        return name
    return f"feedrun#{hashlib.sha256(feed_id.encode()).hexdigest()[:32]}"  # '#': no id has one


def _live_run(session: Session, feed_id: str) -> int | None:
    """The id of the feed's run whose process holds its lease, or None."""
    lease = live_lease(session, run_lease_name(feed_id))
    run_id = lease.holder.partition(" ")[0] if lease else ""
    return int(run_id) if run_id.isdigit() else None


def _close_dead_runs(session: Session, feed_id: str, now: datetime) -> None:
    """Mark as failed the runs left "running" by a process that stopped mid-run.

    A run's process renews the run's lease while it works; once it stops (killed, its host
    gone) the lease expires, so the next run goes ahead within RUN_LEASE_SECONDS instead of
    being refused as "under way". A run still renewing after INTERRUPTED_AFTER is stuck.
    """
    running = (FeedRun.feed_id == feed_id, FeedRun.status == "running")
    stuck = FeedRun.started_at < now - INTERRUPTED_AFTER
    live = _live_run(session, feed_id)
    for condition, error in (
        (stuck, "interrupted: the run never finished"),
        (FeedRun.id != live if live else true(), "interrupted: its process stopped"),
    ):
        session.execute(
            update(FeedRun)
            .where(*running, condition)
            .values(status="failed", finished_at=now, error=error)
        )


def _finish(open_session: Callable[[], Session], run_id: int, **values: Any) -> None:
    """Record how a run ended that stored nothing."""
    with open_session() as session:
        run = session.get(FeedRun, run_id)
        for key, value in values.items():
            setattr(run, key, value)
        run.finished_at = utcnow()
        session.commit()


def _read(feed: Feed, fetcher: Fetcher, timezone: str) -> SourceTable:
    """Fetch and parse the whole source, and check it has the columns the feed needs."""
    importer = get_importer(feed.format)
    table = importer.read(fetcher, feed.url, {"timezone": timezone, **feed.options})
    missing = missing_columns(feed, importer, table.columns)
    if missing:
        # The source's own column names are its content (a file that is not data would
        # publish its text): the public error names only what the tree asks for.
        log.info("feed %s: the source's columns: %s", feed.id, sorted(table.columns)[:30])
        count = len(table.columns)
        raise FeedError(
            f"missing column(s) {', '.join(missing)}; "
            f"the source has {count} column{'' if count == 1 else 's'}"
        )
    return table


def _store(
    session: Session,
    feed_id: str,
    run_id: int,
    table: SourceTable,
    fetcher: Fetcher,
    today: date,
) -> None:
    """Store the rows, rejections, run outcome and conditional-GET state; no commit."""
    feed = session.get(Feed, feed_id)
    run = session.get(FeedRun, run_id)
    rows, numbers, errors = submission_rows(session, feed, table)
    common = {"agency_id": feed.agency_id, "rows": rows, "channel": "feed", "partial": True}
    common |= {"feed_run_id": run.id, "row_numbers": numbers}
    if feed.provides == "works":
        outcome = submit_works(session, **common)
    else:
        outcome = submit_observations(session, **common, today=today)
    errors = sorted(errors + outcome.rejected, key=lambda e: (e.row is None, e.row or 0))
    raw = {source.number: source.fields for source in table.rows}
    session.add_all(
        FeedRejection(
            run_id=run.id,
            row=e.row,
            field=e.field[:FIELD_NAME_KEPT] if e.field else e.field,  # a source names it
            message=e.message,
            raw=raw.get(e.row),
        )
        for e in errors[:REJECTIONS_KEPT]
    )
    run.status, run.rows, run.rejected = "ok", outcome.accepted, len({e.row for e in errors})
    run.http_status, run.finished_at = fetcher.status, utcnow()
    # Validators describe one answer: a paged source read in several has none to keep.
    single = fetcher.requests == 1
    feed.etag = fetcher.etag if single else None
    feed.last_modified = fetcher.last_modified if single else None
