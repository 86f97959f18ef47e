"""Feed runs (CONTRACT §7): fetch an agency's published file, read it with the importer
for its format, map its fields, and store the rows through tracker.submissions as the
feed's agency, recording a FeedRun whatever happens.

A run has a fixed lifecycle, after DemocracyClub's importers:
1. record the run in a transaction of its own, so even a crash leaves a row;
2. fetch and parse outside any transaction (network time holds no database locks);
3. store the valid rows, the reasons for the rejected ones, the run's outcome and the
   feed's conditional-GET state in one transaction;
4. on any failure roll that back and mark the run failed with a readable error, so the
   data from earlier runs stays exactly as it was.

`tracker import` and the scheduler's jobs both call `run_feed`; docs/feeds.md is the
agencies' guide to what is read and why a row is rejected.
"""

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import requests
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from requests.adapters import HTTPAdapter
from shapely.geometry import mapping
from sqlalchemy import Engine, func, select, true, update
from sqlmodel import Session

from importers import Importer, ParseError, SourceRow, SourceTable, get_importer
from tracker import __version__
from tracker.clock import city_timezone, utc_iso
from tracker.errors import NotFound, TrackerError
from tracker.geometry import lon_lat, parse_geometry
from tracker.leases import HOLDER_LENGTH, NAME_LENGTH, LeaseHeartbeat, live_lease
from tracker.models import Agency, Feed, FeedRejection, FeedRun, Place, SchedulerLease, utcnow
from tracker.settings import Settings
from tracker.submissions import RowError, submit_observations, submit_works
from tracker.text import search_key

log = logging.getLogger(__name__)

ATTEMPTS = 3  # tries per request when the connection fails or the server answers 5xx
BACKOFF_SECONDS = 0.5  # wait before the second try, doubled before each later one
MAX_RESPONSE_BYTES = 50 * 1024 * 1024  # per answer (per page for paged formats)
# A paged source that never stops saying "more" must not fill memory or hold a run (and,
# on SQLite, the scheduler's one feed thread) for hours: a budget for the whole run.
MAX_RUN_BYTES = 500 * 1024 * 1024
MAX_RUN_SECONDS = 20 * 60  # well inside INTERRUPTED_AFTER
CHUNK_BYTES = 16 * 1024
MAX_REDIRECTS = 5  # per request; each one checked by redirect_allowed first
REJECTIONS_KEPT = 1000  # reasons stored per run; the run's `rejected` count is exact
FIELD_NAME_KEPT = 100  # FeedRejection.field holds this much of a (source-named) field
INTERRUPTED_AFTER = timedelta(hours=1)  # a run still "running" this long is stuck
# A run's lease lasts this long unless renewed (every third of it): how soon a run whose
# process was killed stops holding its feed back.
RUN_LEASE_SECONDS = 60.0
USER_AGENT = f"rebuild-tracker/{__version__} (feed reader)"

# The row fields a feed's field map fills in (a work's geometry comes from the record).
FEED_OBSERVATION_FIELDS = ("measure", "place", "date", "value", "note")
FEED_WORK_FIELDS = (
    "id",
    "title",
    "status",
    "street",
    "planned_start",
    "planned_end",
    "actual_start",
    "actual_end",
    "measure",
    "quantity",
)
# Fields that hold ids or words: a number there (an ArcGIS OBJECTID, a CKAN integer
# column) is meant as text.
TEXT_FIELDS = {"measure", "place", "id", "title", "status", "street"}
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
EVERY = re.compile(r"([0-9]+)([mhd])")

SessionSource = Engine | Callable[[], Session]


class FeedError(TrackerError):
    """A run that fails as a whole; the message becomes the run's error."""


class Unchanged(Exception):
    """The source is as it was at the last successful run (HTTP 304, or the same file)."""


class _Retry(Exception):
    """A failure worth another try: a broken connection or a 5xx answer."""


# --- running -------------------------------------------------------------------------


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


def _read(feed: Feed, fetcher: "Fetcher", timezone: str) -> SourceTable:
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
    fetcher: "Fetcher",
    today: date,
) -> None:
    """Store the rows, rejections, run outcome and conditional-GET state; no commit."""
    feed = session.get(Feed, feed_id)
    run = session.get(FeedRun, run_id)
    rows, numbers, errors = _submission_rows(session, feed, table)
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


def _submission_rows(
    session: Session, feed: Feed, table: SourceTable
) -> tuple[list[dict[str, Any]], list[int], list[RowError]]:
    """The rows to submit with their source numbers, and the rows refused before that."""
    names = place_names(session) if feed.place_match == "name" else None
    build = work_row if feed.provides == "works" else observation_row
    rows, numbers, errors = [], [], []
    for source in table.rows:
        row, row_errors = build(source, feed, names)
        if row_errors:
            errors.extend(row_errors)
        else:
            rows.append(row)
            numbers.append(source.number)
    return rows, numbers, errors


# --- fetching ------------------------------------------------------------------------


class Fetcher:
    """The GETs of one run: the feed's timeout on each whole answer, retries with back-off,
    only the redirects redirect_allowed accepts, size limits, and conditional headers on the
    first request. Called as `fetch(url, params)` by importers.

    `file:` URLs are read like HTTP answers, from inside the configured tree's folder only:
    the file's modification time and size stand in for an ETag, so an untouched file gives
    an `unchanged` run.
    """

    def __init__(self, feed: Feed):
        self.feed = feed
        self.requests = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.status: int | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.http = requests.Session()
        self.http.headers["User-Agent"] = USER_AGENT
        self.adapter = _CuttableAdapter()
        for prefix in ("http://", "https://"):
            self.http.mount(prefix, self.adapter)

    def __call__(self, url: str, params: dict[str, Any] | None = None) -> bytes:
        """The body at `url` with query `params`; Unchanged or FeedError otherwise."""
        first = self.requests == 0
        self.requests += 1
        body = self._fetch(url, params, first)
        self.bytes += len(body)
        if self.bytes > MAX_RUN_BYTES:
            raise FeedError(
                f"the source sent over {MAX_RUN_BYTES:,} bytes in {self.requests} answers; "
                "stopped reading"
            )
        if self._run_left() <= 0:
            raise self._over_run_time()
        return body

    def close(self) -> None:
        """Close the run's HTTP connections."""
        self.http.close()

    def _fetch(self, url: str, params: dict[str, Any] | None, first: bool) -> bytes:
        """One answer, with retries inside the run's time; Unchanged or FeedError otherwise."""
        if url.startswith("file:"):
            return self._read_file(Path(url[5:]), first)
        headers = {}
        if first and self.feed.etag:
            headers["If-None-Match"] = self.feed.etag
        if first and self.feed.last_modified:
            headers["If-Modified-Since"] = self.feed.last_modified
        attempt = 1
        while True:
            try:
                return self._get(url, params, headers, first)
            except _Retry as exc:
                if attempt == ATTEMPTS:
                    raise FeedError(f"{exc} (tried {ATTEMPTS} times)") from None
            pause = BACKOFF_SECONDS * 2 ** (attempt - 1)
            if pause >= self._run_left():
                raise self._over_run_time()
            time.sleep(pause)
            attempt += 1

    def _run_left(self) -> float:
        """Seconds left of the run's MAX_RUN_SECONDS."""
        return self.started + MAX_RUN_SECONDS - time.monotonic()

    def _over_run_time(self) -> FeedError:
        return FeedError(
            f"reading the source took over {_duration(MAX_RUN_SECONDS)} "
            f"({self.requests} answers); stopped reading"
        )

    def _get(self, url: str, params: dict | None, headers: dict, first: bool) -> bytes:
        """One try, redirects included, all within the feed's timeout (and the run's time
        left); _Retry for failures worth another."""
        allowed = min(self.feed.timeout, self._run_left())
        if allowed <= 0:
            raise self._over_run_time()
        shown = public_url(url)
        with _Watchdog(self.adapter, allowed) as watchdog:
            try:
                body = self._follow(url, params, headers, first, allowed)
            except requests.RequestException as exc:
                # A connection that never opened is worth another try, however slow.
                if watchdog.fired and not isinstance(exc, requests.ConnectTimeout):
                    raise self._too_slow(shown, allowed) from None
                raise _failure(exc, shown, allowed) from None
            if watchdog.fired:  # a body of no declared length just ends when cut
                raise self._too_slow(shown, allowed)
        return body

    def _too_slow(self, shown: str, allowed: float) -> FeedError:
        """The error of an answer cut off by the watchdog."""
        if allowed < self.feed.timeout:
            return self._over_run_time()
        return FeedError(f"no complete answer from {shown} within {self.feed.timeout:g} s")

    def _follow(
        self, url: str, params: dict | None, headers: dict, first: bool, timeout: float
    ) -> bytes:
        """GET `url`, following at most MAX_REDIRECTS redirects, each one checked first."""
        shown = public_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            with self.http.get(
                url,
                params=params,
                headers=headers,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
            ) as answer:
                self.status = answer.status_code
                target = self.http.get_redirect_target(answer)
                if target is None:
                    return self._answer(answer, shown, first)
            target = urljoin(answer.url, target)
            self._check_redirect(shown, answer.url, target)
            url, params = target, None
        raise FeedError(f"too many redirects from {shown} (over {MAX_REDIRECTS}); not followed")

    def _check_redirect(self, shown: str, from_url: str, to_url: str) -> None:
        """FeedError for a redirect not to follow; the target is the source's, so only the
        operator's log names it."""
        if urlsplit(to_url).scheme not in ("http", "https"):
            problem = "a non-http URL"
        elif not redirect_allowed(from_url, to_url):
            problem = "a private address"
        else:
            return
        log.warning(
            "feed %s: redirect from %s to %s not followed",
            self.feed.id,
            public_url(from_url),
            public_url(to_url),
        )
        raise FeedError(f"{shown} redirected to {problem}; not followed")

    def _answer(self, answer: requests.Response, shown: str, first: bool) -> bytes:
        """The body of an answer that is not a redirect; Unchanged, _Retry or FeedError."""
        if answer.status_code == 304 and first:
            raise Unchanged
        if answer.status_code >= 500:
            raise _Retry(f"{_status_text(answer.status_code)} from {shown}")
        if answer.status_code != 200:
            raise FeedError(f"{_status_text(answer.status_code)} from {shown}")
        body = self._body(answer)
        if first:
            self.etag = self._validator(answer, "ETag", "etag")
            self.last_modified = self._validator(answer, "Last-Modified", "last_modified")
        return body

    def _validator(self, answer: requests.Response, header: str, column: str) -> str | None:
        """A validator to send back next time; None when it is longer than the Feed column
        that would keep it (PostgreSQL would refuse the whole run's transaction)."""
        value = answer.headers.get(header)
        limit = Feed.__table__.c[column].type.length
        if value is not None and len(value) > limit:
            log.warning(
                "feed %s: %s of %d characters is over the %d kept; not kept, so the next run "
                "reads the whole answer again (no conditional GET)",
                self.feed.id,
                header,
                len(value),
                limit,
            )
            return None
        return value

    def _body(self, answer: requests.Response) -> bytes:
        """The whole body within the size limit (the _Watchdog bounds its time)."""
        declared = answer.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise FeedError(_too_large(int(declared)))
        chunks, size = [], 0
        for chunk in answer.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise FeedError(_too_large(size))
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_file(self, path: Path, first: bool) -> bytes:
        """A local file inside the tree's folder, answered like HTTP (200, or Unchanged for
        the same file)."""
        real, folder = path.resolve(), tree_folder()
        if not real.is_relative_to(folder):
            # `tracker check` refuses such a URL; this stops a link or a row changed since.
            log.warning("feed %s: %s is outside %s; not read", self.feed.id, real, folder)
            raise FeedError(f"{path.name} is outside the tree's folder; not read")
        try:
            stat = path.stat()
            etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
            if first and etag == self.feed.etag:
                self.status = 304
                raise Unchanged
            if stat.st_size > MAX_RESPONSE_BYTES:
                raise FeedError(_too_large(stat.st_size))
            body = path.read_bytes()
        except OSError as exc:
            self.status = 404
            raise FeedError(f"cannot read {path.name}: {exc.strerror}") from None
        self.status = 200
        if first:
            self.etag = etag
        return body


def tree_folder() -> Path:
    """The folder `file:` feeds must stay inside: the configured tree's (TRACKER_TREE)."""
    return Settings().tree.resolve().parent


def _failure(exc: requests.RequestException, shown: str, timeout: float) -> Exception:
    """The run's error for a request that failed, or _Retry when another try may do better."""
    if isinstance(exc, requests.ConnectTimeout):
        return _Retry(f"could not connect to {shown} within {timeout:g} s")
    if isinstance(exc, requests.Timeout):
        return FeedError(f"no answer from {shown} within {timeout:g} s")
    if isinstance(exc, requests.ConnectionError):
        # requests reports a read timeout in the middle of a body as a ConnectionError.
        if "timed out" in str(exc):
            return FeedError(f"no answer from {shown} within {timeout:g} s")
        return _Retry(f"could not connect to {shown}")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return _Retry(f"the connection to {shown} broke before the whole answer came")
    return FeedError(f"could not fetch {shown}: {type(exc).__name__}")


def _status_text(code: int) -> str:
    """The status with its standard phrase, "HTTP 404 Not Found": the server's own is its
    content."""
    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def _duration(seconds: float) -> str:
    """20 minutes, or 1.5 s."""
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} s"


class _CuttableAdapter(HTTPAdapter):
    """requests' adapter, remembering the socket of the request under way so that a
    _Watchdog can cut it.

    The socket is taken when its connection connects or is reused, not when it is cut: an
    HTTP/1.0 answer or a `Connection: close` one detaches it from its connection.
    """

    def __init__(self) -> None:
        self.sock: Any = None
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._remember_sockets(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        self._remember_sockets(manager)
        return manager

    def _remember_sockets(self, manager: Any) -> None:
        """Make the manager's pools and connections tell this adapter the socket in use."""
        adapter = self

        def remembering(pool_class: type) -> type:
            if getattr(pool_class, "remembers", False):  # a proxy manager is reused
                return pool_class

            class Connection(pool_class.ConnectionCls):
                def connect(self) -> None:
                    super().connect()
                    adapter.sock = self.sock

            class Pool(pool_class):
                remembers = True
                ConnectionCls = Connection

                def _get_conn(self, timeout: float | None = None) -> Any:
                    connection = super()._get_conn(timeout)
                    adapter.sock = connection.sock  # None until a new one connects
                    return connection

            return Pool

        manager.pool_classes_by_scheme = {
            scheme: remembering(pool) for scheme, pool in manager.pool_classes_by_scheme.items()
        }


class _Watchdog:
    """Cuts the adapter's connection once `seconds` pass, so that no read waits past them.

    A socket timeout bounds each wait for bytes, not the whole answer: a server sending a
    byte a second could otherwise hold a run with a 30 s timeout for as long as it likes
    (and, on SQLite, every feed behind it).
    """

    def __init__(self, adapter: _CuttableAdapter, seconds: float):
        self.adapter = adapter
        self.fired = False
        self._done = threading.Event()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._timer.cancel()

    def _cut(self) -> None:
        """Shut the connection's socket down, which ends a read blocked on it at once."""
        self.fired = True
        while not self._done.is_set():
            sock = self.adapter.sock
            if sock is not None:
                # The plain socket's shutdown: a TLS socket's own would tear down its state
                # under the thread reading it. A TLS-in-TLS transport wraps a `socket`.
                with contextlib.suppress(OSError, TypeError):
                    socket.socket.shutdown(getattr(sock, "socket", sock), socket.SHUT_RDWR)
                return
            self._done.wait(0.05)  # still connecting: its own timeout ends that


def redirect_allowed(
    from_url: str, to_url: str, resolve: Callable[[str], list[str]] | None = None
) -> bool:
    """Whether a run may follow a redirect: never from a public host to a non-public one.

    A feed configured on a loopback or private address (a test server, an intranet) may
    redirect within such addresses; a public server must not point the tracker at the
    host's own services, its network or a cloud metadata address. The source is public
    when any of its addresses is (or none is known); the target is not when any of its
    addresses is not. `resolve(host)` lists a name's addresses (default: host_addresses).
    """
    resolve = resolve or host_addresses
    source = _addresses(urlsplit(from_url).hostname, resolve)
    target = _addresses(urlsplit(to_url).hostname, resolve)
    from_public = not source or any(_is_public(address) for address in source)
    return not from_public or all(_is_public(address) for address in target)


def host_addresses(host: str) -> list[str]:
    """The addresses a host name resolves to; none when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({info[4][0] for info in found})


def _addresses(host: str | None, resolve: Callable[[str], list[str]]) -> list[str]:
    """A URL host's addresses: itself when it is an address, else what `resolve` gives."""
    if not host:
        return []
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return resolve(host)


def _is_public(address: str) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local,
    shared (carrier NAT), reserved or multicast."""
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone: fe80::1%eth0
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def public_url(url: str) -> str:
    """`url` fit for a public error message: no user, password or query (they may hold keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _too_large(size: int) -> str:
    return (
        f"the answer is {size / 1024 / 1024:.1f} MB, over the "
        f"{MAX_RESPONSE_BYTES // 1024 // 1024} MB limit"
    )


# --- mapping source rows to submission rows --------------------------------------------


def source_column(feed: Feed, target: str) -> str:
    """The source column a feed reads a field from: its `fields` entry, else the same name."""
    return feed.fields.get(target, target)


def missing_columns(feed: Feed, importer: Importer, columns: frozenset[str] | None) -> list[str]:
    """Required columns the source lacks, each with the field it is for; none when unknown."""
    if columns is None:
        return []
    if feed.provides == "works":
        required = ["id", "title", "status"]
    else:
        required = ["place", "date", "value"] + ([] if feed.measure_id else ["measure"])
    missing = [
        f"{source_column(feed, t)!r} (for {t})"
        for t in required
        if source_column(feed, t) not in columns
    ]
    if feed.provides == "works" and not (importer.geometry or _locatable(feed, columns)):
        missing.append(
            f"{source_column(feed, 'geometry')!r} or {source_column(feed, 'street')!r} or "
            f"{source_column(feed, 'lon')!r} and {source_column(feed, 'lat')!r} "
            "(for where the work is)"
        )
    return missing


def _locatable(feed: Feed, columns: frozenset[str]) -> bool:
    """Whether the columns can place a work: a geometry, a street, or lon and lat."""
    return (
        source_column(feed, "geometry") in columns
        or source_column(feed, "street") in columns
        or {source_column(feed, "lon"), source_column(feed, "lat")} <= columns
    )


def _cell(target: str, value: Any) -> Any:
    """A source value as submissions expects it.

    Spreadsheet exports pad cells with spaces, and number-typed id columns give numbers.
    """
    if isinstance(value, str):
        return value.strip()
    if target in TEXT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _mapped(source: SourceRow, feed: Feed, targets: tuple[str, ...]) -> dict[str, Any]:
    """The targets the source row has a value for (a cell it lacks stays out of the row)."""
    row = {}
    for target in targets:
        column = source_column(feed, target)
        if column in source.fields:
            row[target] = _cell(target, source.fields[column])
    return row


def observation_row(
    source: SourceRow, feed: Feed, names: dict[str, list[str]] | None
) -> tuple[dict[str, Any], list[RowError]]:
    """An observation row shaped like the API body, or the reasons it cannot be one."""
    if source.problem:
        return {}, [RowError(source.number, None, source.problem)]
    row = _mapped(source, feed, FEED_OBSERVATION_FIELDS)
    if feed.measure_id:
        row["measure"] = feed.measure_id
    if row.get("note") in (None, ""):
        row.pop("note", None)
    dims = {}
    targets = {t for t in feed.fields if t.startswith("dim.")}
    targets |= {c for c in source.fields if c.startswith("dim.")}
    for target in sorted(targets):
        value = _cell(target, source.fields.get(source_column(feed, target)))
        if value not in (None, ""):
            dims[target[4:]] = value
    if dims:
        row["dims"] = dims
    if names is not None and isinstance(row.get("place"), str):
        ids = names.get(search_key(row["place"]), [])
        if len(ids) != 1:
            problem = "no neighbourhood is named" if not ids else "several neighbourhoods are named"
            return {}, [RowError(source.number, "place", f"{problem} {row['place']!r}")]
        row["place"] = ids[0]
    return row, []


def work_row(
    source: SourceRow, feed: Feed, _names: dict[str, list[str]] | None
) -> tuple[dict[str, Any], list[RowError]]:
    """A work row shaped like the API body, or the reasons it cannot be one."""
    if source.problem:
        return {}, [RowError(source.number, None, source.problem)]
    row = {k: v for k, v in _mapped(source, feed, FEED_WORK_FIELDS).items() if v not in (None, "")}
    if feed.measure_id:
        row["measure"] = feed.measure_id
    geometry, error = _work_geometry(source, feed)
    if error:
        return {}, [error]
    if geometry is not None:
        row["geometry"] = geometry
    return row, []


def _work_geometry(source: SourceRow, feed: Feed) -> tuple[dict | None, RowError | None]:
    """A work's GeoJSON geometry: the importer's, a geometry column, or lon and lat."""
    if source.geometry is not None:
        return source.geometry, None
    value = source.fields.get(source_column(feed, "geometry"))
    if isinstance(value, dict):
        return value, None
    if isinstance(value, str) and value.strip():
        geometry, problem = parse_geometry(value)
        if problem:
            return None, RowError(source.number, "geometry", problem)
        return mapping(geometry), None
    lon = source.fields.get(source_column(feed, "lon"))
    lat = source.fields.get(source_column(feed, "lat"))
    if lon in (None, "") or lat in (None, ""):
        return None, None
    point, problem = lon_lat(lon, lat)
    if problem:
        return None, RowError(source.number, "lon", problem)
    return mapping(point), None


def place_names(session: Session) -> dict[str, list[str]]:
    """Neighbourhood ids by folded name, for `place_match: name` (case and macrons ignored)."""
    names: dict[str, list[str]] = {}
    for place_id, name in session.execute(
        select(Place.id, Place.name).where(Place.level == "neighbourhood").order_by(Place.id)
    ):
        names.setdefault(search_key(name), []).append(place_id)
    return names


# --- schedules --------------------------------------------------------------------------


def every_interval(every: str) -> timedelta:
    """The interval an `every` value names: 30m, 6h, 1d."""
    number, unit = EVERY.fullmatch(every).groups()
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: int(number)})


def feed_trigger(feed: Feed, timezone: str, jitter: int | None = None) -> BaseTrigger:
    """The APScheduler trigger of a feed's `every` or `cron`, in the city's timezone."""
    if feed.every:
        seconds = every_interval(feed.every).total_seconds()
        return IntervalTrigger(seconds=seconds, timezone=timezone, jitter=jitter)
    minute, hour, day, month, weekday = feed.cron.split()
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_cron_weekdays(weekday),
        timezone=timezone,
        jitter=jitter,
    )


def _cron_weekdays(field: str) -> str:
    """A cron weekday field (0 or 7 = Sunday) in APScheduler's numbering (0 = Monday).

    APScheduler's own from_crontab keeps the numbers as they are, so "1-5" would run
    Tuesday to Saturday; ranges and steps are expanded to a list of days first.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            low, high = (_weekday(side) for side in base.split("-"))
        else:
            low = _weekday(base)
            high = 6 if step else low  # "5/2": from Friday on, every second day
        days.update(range(low, high + 1, int(step or 1)))
    return ",".join(str((day - 1) % 7) for day in sorted(days))


def _weekday(text: str) -> int:
    """A cron weekday, number (0-7) or name (sun-sat), as 0-7."""
    return WEEKDAYS.index(text.lower()) if text.lower() in WEEKDAYS else int(text)


def next_due(feed: Feed, after: datetime, timezone: str) -> datetime:
    """When a feed whose last run started at `after` is next due (jitter aside), in UTC."""
    if feed.every:
        return (after + every_interval(feed.every)).astimezone(UTC)
    trigger = feed_trigger(feed, timezone)
    return trigger.get_next_fire_time(None, after + timedelta(seconds=1)).astimezone(UTC)


# --- health: what the API and the /feeds page show ----------------------------------------


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


__all__ = [
    "FeedError",
    "FeedHealth",
    "Fetcher",
    "Unchanged",
    "agency_names",
    "city_timezone",
    "every_interval",
    "feed_health",
    "feed_trigger",
    "host_addresses",
    "live_feeds",
    "missing_columns",
    "next_due",
    "observation_row",
    "place_names",
    "redirect_allowed",
    "run_feed",
    "run_feeds",
    "run_lease_name",
    "run_rejections",
    "tree_folder",
    "work_row",
]
