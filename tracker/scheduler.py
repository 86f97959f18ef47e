"""`tracker scheduler`: the one process that runs feeds on their schedules.

It is a process of its own because a scheduler started inside gunicorn runs every job
once per worker. Even so, two schedulers can overlap (a deploy starting the new one
before the old one stops, two hosts), so jobs run only while this process holds the
lease: the SchedulerLease row named "scheduler" (tracker.leases), taken atomically and
renewed by a heartbeat. A second scheduler polls until the lease expires, then takes over.

Jobs call what `tracker import FEED` calls (tracker.feeds.run_feeds); the mail job what
`tracker mail send` calls (tracker.mail.deliver, every minute) and the alerts job what
`tracker alerts digest` calls (tracker.alerts.run_digests, every five minutes). The tree is
followed without a restart: a sync job re-reads the Feed rows, which `tracker init`
stores from the tree, and adds, removes or reschedules jobs to match.
"""

import logging
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.feeds import city_timezone, every_interval, feed_trigger, next_due, run_feeds
from tracker.leases import live_lease, release_lease, take_lease
from tracker.models import Feed, FeedRun, SchedulerLease, utcnow
from tracker.settings import Settings

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
JOB_PREFIX = "feed:"


@dataclass(frozen=True)
class Timing:
    """How the scheduler paces itself, in seconds."""

    lease: float = 60  # how long a lease lasts unless renewed
    sync: float = 60  # how often the Feed rows are re-read
    max_jitter: float = 120  # runs start up to this much late, so feeds due together spread
    misfire_grace: float = 600  # a run delayed longer than this (a stalled host) is skipped
    mail: float = 60  # how often the outbox is sent (`tracker mail send`)
    alerts: float = 300  # how often due alert digests are built (`tracker alerts digest`)

    @property
    def heartbeat(self) -> float:
        """Renew three times a lease, so one slow renewal does not lose it."""
        return self.lease / 3

    def jitter(self, feed: Feed) -> int | None:
        """A tenth of the feed's interval, at most max_jitter; max_jitter for cron feeds."""
        spread = self.max_jitter
        if feed.every:
            spread = min(spread, every_interval(feed.every).total_seconds() / 10)
        return int(spread) or None


# --- the lease ------------------------------------------------------------------------


def lease_holder(session: Session, *, now: datetime | None = None) -> SchedulerLease | None:
    """The lease while a scheduler holds it; None when no scheduler is running."""
    return live_lease(session, LEASE_NAME, now=now)


# --- the scheduler ----------------------------------------------------------------------


class FeedScheduler:
    """Waits for the lease, then runs feed jobs until stopped or the lease is lost."""

    def __init__(
        self,
        engine: Engine,
        *,
        holder: str | None = None,
        timing: Timing = Timing(),
        settings: Settings | None = None,
    ):
        self.engine = engine
        self.settings = settings or Settings()
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.timing = timing
        self._stop = threading.Event()  # stop() was called
        self._lost = threading.Event()  # the lease went to another scheduler
        self._wake = threading.Event()  # either happened: _serve() looks again
        # APScheduler's shutdown(wait=True) holds its job-store lock while it waits for
        # running jobs, so a sync job still calling get_jobs()/add_job() then would wait
        # for shutdown and shutdown for it. _serve() sets _closing and waits for a running
        # sync before shutting down; a sync starting after that does nothing.
        self._closing = threading.Event()
        self._sync_lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None
        self._schedules: dict[str, tuple] = {}  # job id -> the schedule it was added with

    def run(self) -> None:
        """Serve while holding the lease, wait for it otherwise; return once stopped."""
        log.info("scheduler %s started", self.holder)
        while not self._stop.is_set():
            if take_lease(self.engine, LEASE_NAME, self.holder, self.timing.lease):
                log.info("scheduler %s holds the lease", self.holder)
                self._serve()
            else:
                self._stop.wait(self.timing.heartbeat)
        release_lease(self.engine, LEASE_NAME, self.holder)
        log.info("scheduler %s stopped", self.holder)

    def run_until_signalled(self) -> None:
        """run(), stopping cleanly on SIGTERM or SIGINT (from the main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())
        self.run()

    def stop(self) -> None:
        """Ask run() to return once the running jobs finish.

        Only sets events, so it is safe in a signal handler: the thread in _serve() owns
        the APScheduler instance and shuts it down itself.
        """
        self._stop.set()
        self._wake.set()

    def _serve(self) -> None:
        """Run jobs until stop() or a lost lease; then shut them down, waiting for each."""
        with Session(self.engine) as session:
            timezone = city_timezone(session)
        sqlite = self.engine.dialect.name == "sqlite"
        scheduler = BackgroundScheduler(
            timezone=timezone,
            executors={
                # SQLite has one writer at a time: feeds wait for each other, not fail.
                "default": ThreadPoolExecutor(1 if sqlite else 4),
                # The heartbeat never queues behind a long feed run.
                "control": ThreadPoolExecutor(1),
                # Mail waits on SMTP servers; neither feeds nor the heartbeat wait for it.
                "mail": ThreadPoolExecutor(1),
            },
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(self.timing.misfire_grace),
            },
        )
        self._scheduler, self._schedules = scheduler, {}
        self._lost.clear()
        self._closing.clear()
        scheduler.add_job(
            self._heartbeat,
            "interval",
            seconds=self.timing.heartbeat,
            id="heartbeat",
            executor="control",
        )
        scheduler.add_job(
            self.sync, "interval", seconds=self.timing.sync, id="sync", executor="control",
            next_run_time=utcnow(),
        )  # fmt: skip
        scheduler.add_job(
            self._run_mail, "interval", seconds=self.timing.mail, id="mail", executor="mail"
        )
        scheduler.add_job(
            self._run_alerts, "interval", seconds=self.timing.alerts, id="alerts",
            executor="mail",
        )  # fmt: skip
        scheduler.start()
        while not (self._stop.is_set() or self._lost.is_set()):
            self._wake.wait()
            self._wake.clear()
        self._closing.set()
        with self._sync_lock:
            pass  # a sync under way has finished
        scheduler.shutdown(wait=True)
        self._scheduler = None

    def sync(self) -> None:
        """Make the feed jobs match the Feed rows: add, remove and reschedule."""
        with self._sync_lock:
            if not self._closing.is_set():
                self._sync()

    def _sync(self) -> None:
        now = utcnow()
        with Session(self.engine) as session:
            timezone = city_timezone(session)
            feeds = session.scalars(select(Feed).where(Feed.retired_at.is_(None))).all()
            last_runs = dict(
                session.execute(
                    select(FeedRun.feed_id, func.max(FeedRun.started_at)).group_by(FeedRun.feed_id)
                ).all()
            )
        wanted = {JOB_PREFIX + feed.id: feed for feed in feeds}
        for job in self._scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
                job.remove()
                self._schedules.pop(job.id, None)
                log.info("feed %s left the tree: unscheduled", job.id[len(JOB_PREFIX) :])
        for job_id, feed in wanted.items():
            schedule = (feed.every, feed.cron, timezone)
            if self._schedules.get(job_id) == schedule:
                continue
            last = last_runs.get(feed.id)
            # Due now if it never ran or a run was missed while no scheduler was up.
            first = max(next_due(feed, last, timezone), now) if last else now
            self._scheduler.add_job(
                self._run_feed,
                feed_trigger(feed, timezone, self.timing.jitter(feed)),
                args=[feed.id],
                id=job_id,
                name=f"feed {feed.id}",
                replace_existing=True,
                next_run_time=first,
            )
            self._schedules[job_id] = schedule
            log.info("feed %s scheduled (%s), next run %s", feed.id, schedule[:2], first)

    def _run_feed(self, feed_id: str) -> None:
        """A feed job: `tracker import FEED`, if this process still holds the lease."""
        # Renewing here, not only in the heartbeat, closes the gap in which another
        # scheduler could have taken an expired lease over.
        if not take_lease(self.engine, LEASE_NAME, self.holder, self.timing.lease):
            self._lost_lease()
            return
        try:
            run_feeds(self.engine, [feed_id])
        except TrackerError as exc:  # the feed left the tree since the last sync
            log.warning("feed %s: %s", feed_id, exc.message)

    def _run_mail(self) -> None:
        """The mail job: `tracker mail send`, if this process still holds the lease."""
        from tracker.mail import deliver

        if not take_lease(self.engine, LEASE_NAME, self.holder, self.timing.lease):
            self._lost_lease()
            return
        try:
            deliver(self.engine, self.settings)
        except Exception:  # a database hiccup: the rows stay queued for the next run
            log.exception("sending mail failed")

    def _run_alerts(self) -> None:
        """The alerts job: `tracker alerts digest`, then old rate counters pruned, if this
        process still holds the lease."""
        from tracker.alerts import run_digests
        from tracker.ratelimit import prune as prune_rate_counters

        if not take_lease(self.engine, LEASE_NAME, self.holder, self.timing.lease):
            self._lost_lease()
            return
        try:
            run_digests(self.engine, self.settings)
        except Exception:
            log.exception("building alert digests failed")
        try:  # rate counters of windows long closed: a quiet site prunes them too
            with Session(self.engine) as session:
                prune_rate_counters(session)
                session.commit()
        except Exception:
            log.exception("pruning rate counters failed")

    def _heartbeat(self) -> None:
        """Renew the lease; wake _serve() when it is lost."""
        if not take_lease(self.engine, LEASE_NAME, self.holder, self.timing.lease):
            self._lost_lease()

    def _lost_lease(self) -> None:
        """Another scheduler took over: stop running jobs and go back to waiting."""
        log.warning("scheduler %s lost the lease; waiting again", self.holder)
        self._lost.set()
        self._wake.set()
