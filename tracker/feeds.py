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

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import requests
import shapely.wkt
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from shapely.errors import ShapelyError
from shapely.geometry import mapping
from sqlalchemy import Engine, func, select, update
from sqlmodel import Session

from importers import Importer, ParseError, SourceRow, SourceTable, get_importer
from tracker import __version__
from tracker.errors import NotFound, TrackerError
from tracker.models import Agency, Feed, FeedRejection, FeedRun, Place, utcnow
from tracker.rollup import utc_iso
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
REJECTIONS_KEPT = 1000  # reasons stored per run; the run's `rejected` count is exact
FIELD_NAME_KEPT = 100  # FeedRejection.field holds this much of a (source-named) field
INTERRUPTED_AFTER = timedelta(hours=1)  # a run still "running" this long died with its process
USER_AGENT = f"rebuild-tracker/{__version__} (feed reader)"
DEFAULT_TIMEZONE = "Pacific/Auckland"

OBSERVATION_FIELDS = ("measure", "place", "date", "value", "note")
WORK_FIELDS = (
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
        _close_interrupted(session, feed_id, now)
        under_way = _running_since(session, feed_id)
        run = FeedRun(feed_id=feed_id, started_at=now)
        if under_way is not None:
            # `tracker import` beside the scheduler, or a scheduler that lost its lease
            # mid-run: reading the source twice at once would only repeat the work.
            run.status, run.finished_at = "failed", now
            run.error = f"another run of this feed has been under way since {under_way:%H:%M} UTC"
        session.add(run)
        session.expunge(feed)  # read after the commit, whatever the session's expiry rule
        session.commit()
        run_id = run.id
    if under_way is not None:
        log.info("feed %s: skipped, another run is under way", feed_id)
        return run
    today = now.astimezone(ZoneInfo(timezone)).date()
    fetcher = Fetcher(feed)
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
    with open_session() as session:
        run = session.get(FeedRun, run_id)
    log.info("feed %s: %s, %s rows, %s rejected", feed_id, run.status, run.rows, run.rejected)
    return run


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


def city_timezone(session: Session) -> str:
    """The city's timezone (CONTRACT §2), which schedules and report dates follow."""
    timezone = session.scalar(select(Place.timezone).where(Place.level == "city"))
    return timezone or DEFAULT_TIMEZONE


def _running_since(session: Session, feed_id: str) -> datetime | None:
    """When the feed's run still under way started, or None."""
    return session.scalar(
        select(func.min(FeedRun.started_at)).where(
            FeedRun.feed_id == feed_id, FeedRun.status == "running"
        )
    )


def _close_interrupted(session: Session, feed_id: str, now: datetime) -> None:
    """Mark runs whose process died mid-run as failed, so none stays "running" forever."""
    session.execute(
        update(FeedRun)
        .where(
            FeedRun.feed_id == feed_id,
            FeedRun.status == "running",
            FeedRun.started_at < now - INTERRUPTED_AFTER,
        )
        .values(status="failed", finished_at=now, error="interrupted: the run never finished")
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
        have = ", ".join(sorted(table.columns or ())[:30]) or "none"
        raise FeedError(f"missing column(s) {', '.join(missing)}; the source has: {have}")
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
    """The GETs of one run: the feed's timeout, retries with back-off, a size limit, and
    conditional headers on the first request. Called as `fetch(url, params)` by importers.

    `file:` URLs are read like HTTP answers: the file's modification time and size stand
    in for an ETag, so an untouched file gives an `unchanged` run.
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
        if time.monotonic() - self.started > MAX_RUN_SECONDS:
            raise FeedError(
                f"reading the source took over {MAX_RUN_SECONDS // 60} minutes "
                f"({self.requests} answers); stopped reading"
            )
        return body

    def _fetch(self, url: str, params: dict[str, Any] | None, first: bool) -> bytes:
        """One answer, with retries; Unchanged or FeedError otherwise."""
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
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            attempt += 1

    def close(self) -> None:
        """Close the run's HTTP connections."""
        self.http.close()

    def _get(self, url: str, params: dict | None, headers: dict, first: bool) -> bytes:
        """One try; _Retry for failures worth another."""
        timeout = self.feed.timeout
        shown = public_url(url)
        started = time.monotonic()
        try:
            with self.http.get(
                url, params=params, headers=headers, timeout=timeout, stream=True
            ) as answer:
                self.status = answer.status_code
                if answer.status_code == 304 and first:
                    raise Unchanged
                if answer.status_code >= 500:
                    raise _Retry(f"HTTP {answer.status_code} {answer.reason} from {shown}")
                if answer.status_code != 200:
                    raise FeedError(f"HTTP {answer.status_code} {answer.reason} from {shown}")
                body = self._body(answer, started)
                if first:
                    self.etag = answer.headers.get("ETag")
                    self.last_modified = answer.headers.get("Last-Modified")
                return body
        except requests.ConnectTimeout:
            raise _Retry(f"could not connect to {shown} within {timeout:g} s") from None
        except requests.Timeout:
            raise FeedError(f"no answer from {shown} within {timeout:g} s") from None
        except requests.ConnectionError as exc:
            # requests reports a read timeout in the middle of a body as a ConnectionError.
            if "timed out" in str(exc):
                raise FeedError(f"no answer from {shown} within {timeout:g} s") from None
            raise _Retry(f"could not connect to {shown}") from None
        except requests.exceptions.ChunkedEncodingError:
            raise _Retry(f"the connection to {shown} broke before the whole answer came") from None
        except requests.RequestException as exc:
            raise FeedError(f"could not fetch {shown}: {type(exc).__name__}") from None

    def _body(self, answer: requests.Response, started: float) -> bytes:
        """The whole body, within the size limit and the feed's timeout."""
        declared = answer.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise FeedError(_too_large(int(declared)))
        chunks, size = [], 0
        for chunk in answer.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise FeedError(_too_large(size))
            # The read timeout bounds each wait; this bounds a server that trickles.
            if time.monotonic() - started > self.feed.timeout:
                raise FeedError(f"the answer took longer than {self.feed.timeout:g} s")
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_file(self, path: Path, first: bool) -> bytes:
        """A local file, answered like HTTP (200, or Unchanged for the same file)."""
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
    row = _mapped(source, feed, OBSERVATION_FIELDS)
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
    row = {k: v for k, v in _mapped(source, feed, WORK_FIELDS).items() if v not in (None, "")}
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
        try:
            if value.lstrip().startswith("{"):
                return json.loads(value), None
            return mapping(shapely.wkt.loads(value)), None
        except (ValueError, ShapelyError):
            return None, RowError(source.number, "geometry", "geometry is neither GeoJSON nor WKT")
    lon = source.fields.get(source_column(feed, "lon"))
    lat = source.fields.get(source_column(feed, "lat"))
    if lon in (None, "") or lat in (None, ""):
        return None, None
    try:
        return {"type": "Point", "coordinates": [float(lon), float(lat)]}, None
    except (TypeError, ValueError):
        return None, RowError(
            source.number, "lon", f"lon and lat must be numbers: {lon!r}, {lat!r}"
        )


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
    "live_feeds",
    "missing_columns",
    "next_due",
    "observation_row",
    "place_names",
    "run_feed",
    "run_feeds",
    "run_rejections",
    "work_row",
]
