"""Public pages served fast: maps and whole pages built once per data stamp, and rebuilt
out of the visitor's way after a write.

The stamp (tracker.freshness.data_stamp) moves with every write, tree load or place
change. Every page and map kept here is kept with the stamp it was built under.

Maps. A page's map script is not inline in the page: the page loads it from its own
address with `?map=KIND&v=VERSION` added (the stamp and the city's day). That request
finds the script kept under its address, or runs the same view, which meets the same
`cached_map` call and answers with the script instead of the page. So the script is built
by the very code that built the page, browsers cache it for a year (an address names
one version, whose script never changes), and the page itself holds no inline script at
all, which keeps the CSP strict and lets whole pages be cached and compressed.

Pages. `public_page` keeps the HTML of anonymous GET answers by address and day, with
their stamp. Anything personal stops it: a signed-in account, a pending flash, a CSRF
token (a form) — those answers are built fresh each time, so staff always see the data
as it is. A kept page whose stamp has moved is out of date:

- when the data moved less than PAGE_STALE_SECONDS ago (TRACKER_PAGE_STALE_SECONDS,
  120 s), the visitor gets the page as it was built, which says when its figures
  arrived, and the page is rebuilt in the background (one thread per process, each page
  queued once), so a later visitor gets the new one. A page is rebuilt at most once
  every REBUILD_SHARE of the allowance (40 s of 120): under a write every second, the
  city page would otherwise be rebuilt every second for every visitor's sake;
- otherwise it is built in the request, as on its first view: by one request, which
  others asking for the same page meanwhile wait for.

So under a stream of writes a page trails the data by at most PAGE_STALE_SECONDS and no
visitor waits for a rebuild, while a page after a quiet spell is exactly up to date.
The API always reads the database.

The stamp itself is read at most once every STAMP_SECONDS per process, and again right
after any commit in this process: a cached page view then touches no database at all,
and another worker's write reaches the pages within a second (or, for a page already
kept, PAGE_STALE_SECONDS).
"""

import functools
import hashlib
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import Flask, Response, abort, current_app, g, request, session, url_for
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from tracker.clock import city_timezone, today_in
from tracker.db import get_session, session_engine
from tracker.freshness import data_stamp
from tracker.maps import MapCache, RenderedMap
from tracker.metrics import PAGE_LOOKUPS
from tracker.models import Node, Place
from tracker.rollup.cache import LRU

MAP_PARAM = "map"  # ?map=KIND asks a page for its map's script
VERSION_PARAM = "v"
YEAR = 365 * 24 * 3600
STAMP_SECONDS = 1.0  # how long another process's write may take to reach the pages
REBUILD_SHARE = 1 / 3  # of the allowance: the least time between two builds of a page
BUILD_WAIT_SECONDS = 20  # the longest a request waits for another's build of its page
_BUILDS_LOCK = threading.Lock()  # over app.extensions["page_builds"]

logger = logging.getLogger(__name__)


def init_app(app) -> None:
    app.extensions["map_cache"] = MapCache()
    app.extensions["map_scripts"] = LRU(512)  # by script address: built once, never changes
    app.extensions["page_cache"] = LRU(512)  # by (path, query, day): a KeptPage
    app.extensions["page_rebuilder"] = Rebuilder(app)
    app.extensions["page_builds"] = {}  # by page key: an Event set when its build ends
    app.extensions["stamp_memo"] = {}  # by engine: the primary's, the replica's
    app.extensions["per_stamp"] = LRU(64)  # by (name, stamp): see per_stamp


@dataclass(frozen=True)
class KeptPage:
    stamp: str  # the data stamp it was built under
    html: bytes
    built_at: float  # time.monotonic() when it was built


def current_stamp() -> str:
    """This request's data stamp: re-read when this process committed anything since, or
    when the last reading is over STAMP_SECONDS old."""
    if "data_stamp" not in g:
        # One memo per database: the stamp must come from the database the page reads (a
        # replica's lags the primary's), or a page could be kept under a newer stamp
        # than its data.
        memos = current_app.extensions["stamp_memo"]
        memo = memos.setdefault(session_engine(), _new_memo())
        commits, now = _commits, time.monotonic()  # taken before reading: a commit meanwhile counts
        if memo["commits"] != commits or now - memo["at"] > STAMP_SECONDS:
            session = get_session()
            memo = memos.setdefault(session.get_bind(), _new_memo())  # a replica found down
            stamp = data_stamp(session)
            if memo["stamp"] not in (None, stamp) and memo["superseded"].get(memo["stamp"]) is None:
                # The data moved after the last reading that saw the old stamp: from then,
                # at the latest, its pages are out of date (after an idle hour, an hour).
                memo["superseded"].put(memo["stamp"], memo["at"])
            memo.update(stamp=stamp, at=now, commits=commits)
        g.data_stamp, g.stamp_memo, g.stamp_commits = memo["stamp"], memo, commits
    return g.data_stamp


_MISSING = object()


def per_stamp(name: str, compute: Callable[[], Any]) -> Any:
    """`compute()`, kept per process for the current data stamp: for facts that only a
    change of the stamp can change (the tree, the city's timezone, the agencies' names,
    when data last arrived), which a page would otherwise ask the database for on every
    build. Only for anonymous GETs, which may be a stamp reading (up to STAMP_SECONDS)
    behind: staff, a form and anything that writes see the database as it is, and so
    does a request after a commit in this process since it read the stamp."""
    stamp = current_stamp()
    if request.method != "GET" or _personal() or g.stamp_commits != _commits:
        return compute()
    kept: LRU = current_app.extensions["per_stamp"]
    key = (name, stamp)
    value = kept.get(key)
    if value is None:
        value = compute()
        kept.put(key, _MISSING if value is None else value)
    return None if value is _MISSING else value


def _new_memo() -> dict:
    # "superseded": when this process first read a newer stamp than each one, by stamp.
    return {"stamp": None, "at": -STAMP_SECONDS, "commits": None, "superseded": LRU(1024)}


def _seconds_behind(stamp: str) -> float:
    """How long ago the data moved on from `stamp` (infinity when this process never saw
    it move: a page from before a quiet spell, or from another database)."""
    current_stamp()
    since = g.stamp_memo["superseded"].get(stamp)
    return float("inf") if since is None else time.monotonic() - since


_commits = 0  # commits in this process, on any engine


@event.listens_for(Engine, "commit")
def _count_commit(_connection) -> None:
    global _commits
    _commits += 1


def cached_map(kind: str, key: tuple, build: Callable[[], RenderedMap], tiles) -> RenderedMap:
    """The page's map `kind` for `key`, built once per stamp and day; on a `?map=KIND`
    request, answer with its script instead of the page (see the module docstring)."""
    version = f"{current_stamp()}-{_city_today():%Y%m%d}"
    cache: MapCache = current_app.extensions["map_cache"]
    name = "map_" + hashlib.sha256(repr((kind, key)).encode()).hexdigest()[:16]
    # Keyed by the city's day like the page: "status unknown" on the map moves with it.
    entry = (kind, key, version, tiles)
    rendered = cache.get_or_build(entry, lambda: build().renamed(name))
    if request.args.get(MAP_PARAM) == kind:
        abort(_script_response(rendered, current=request.args.get(VERSION_PARAM) == version))
    args = request.args.to_dict(flat=False) | {MAP_PARAM: [kind], VERSION_PARAM: [version]}
    # Kept by its address, so the page's script request needs no view at all (and a page
    # served out of date still gets the very map it was built with).
    address = (request.path, tuple(sorted((k, v) for k, values in args.items() for v in values)))
    current_app.extensions["map_scripts"].put(address, rendered)
    url = url_for(request.endpoint, **(request.view_args or {}), **args)
    return RenderedMap(
        rendered.html, rendered.script, rendered.name, rendered.layers, script_url=url
    )


def _script_response(rendered: RenderedMap, *, current: bool) -> Response:
    # One function scope, so Folium's top-level names stay out of the page's globals.
    body = f"(function () {{\n{rendered.script}\n}})();\n"
    response = Response(body, mimetype="text/javascript")
    # The address names its version: a current one never changes. An old one no longer
    # kept (a page older than the latest write) gets today's map, not to be kept.
    response.cache_control.public = True
    if current:
        response.cache_control.max_age = YEAR
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    return response


def public_page(view):
    """Decorate a public GET view: anonymous answers are kept per address and day, and
    served out of date for a short while as they are rebuilt (see the module docstring)."""

    @functools.wraps(view)
    def wrapped(**kwargs):
        if request.method != "GET" or _personal():
            return view(**kwargs)
        if MAP_PARAM in request.args:
            script = current_app.extensions["map_scripts"].get(_page_key()[:2])
            if script is not None:
                return _script_response(script, current=True)
            return view(**kwargs)  # it answers with the script (cached_map)
        kept: KeptPage | None = current_app.extensions["page_cache"].get(_page_key())
        rebuilding = g.get("page_rebuild", False)  # the background thread asks
        if kept is not None and kept.stamp == current_stamp():
            if not rebuilding:
                PAGE_LOOKUPS.labels("fresh").inc()
            return Response(kept.html, mimetype="text/html")
        if rebuilding:
            return _build(view, kwargs)
        rebuilder: Rebuilder = current_app.extensions["page_rebuilder"]
        if _stale_seconds() > 0:
            rebuilder.warm()
        if kept is not None and within_allowance(kept.stamp):
            due = kept.built_at + _stale_seconds() * REBUILD_SHARE
            rebuilder.ask(request.path, request.query_string, due=due)
            PAGE_LOOKUPS.labels("stale").inc()
            return Response(kept.html, mimetype="text/html")
        PAGE_LOOKUPS.labels("built").inc()
        return _build(view, kwargs)

    return wrapped


def _page_key() -> tuple:
    # The query in a fixed order: ?a=1&b=2 and ?b=2&a=1 are one page.
    return (request.path, tuple(sorted(request.args.items(multi=True))), _city_today())


def _stale_seconds() -> float:
    return current_app.config["SETTINGS"].page_stale_seconds


def within_allowance(stamp: str) -> bool:
    """Whether what was built under `stamp` may still be served: it is the current stamp,
    or the data moved on from it less than the allowance ago (pages, and the exports
    kept whole)."""
    return stamp == current_stamp() or _seconds_behind(stamp) < _stale_seconds()


def _build(view, kwargs) -> Response:
    """Run the view and keep a plain 200 answer under the stamp read before it ran.

    A page is built by one thread at a time in a process: another that needs it meanwhile
    (a visitor, or the background thread) waits for that build and serves what it kept,
    when that is within the allowance (with none, when it is current). Without this a
    burst of visitors to a page too far out of date built it once each, on cores that
    were already short."""
    key = _page_key()
    builds: dict = current_app.extensions["page_builds"]
    with _BUILDS_LOCK:
        running = builds.get(key)
        if running is None:
            builds[key] = mine = threading.Event()
    if running is not None:
        running.wait(BUILD_WAIT_SECONDS)
        kept: KeptPage | None = current_app.extensions["page_cache"].get(key)
        if kept is not None and within_allowance(kept.stamp):
            return Response(kept.html, mimetype="text/html")
        return _run_and_keep(view, kwargs, key)  # it failed, or was not kept: our own
    try:
        return _run_and_keep(view, kwargs, key)
    finally:
        with _BUILDS_LOCK:
            del builds[key]
        mine.set()


def _run_and_keep(view, kwargs, key: tuple) -> Response:
    stamp = current_stamp()
    answer = current_app.make_response(view(**kwargs))
    if answer.status_code == 200 and not answer.is_streamed and not _personal():
        kept = KeptPage(stamp, answer.get_data(), time.monotonic())
        current_app.extensions["page_cache"].put(key, kept)
    return answer


class Rebuilder:
    """Builds pages in one background thread per process, one at a time (a build is CPU
    work: more threads would only slow the visitors' requests), each address queued at
    most once, in the order they fall due. The thread ends when the queue is empty."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Condition()
        self._pid: int | None = None  # the process these belong to (a fork starts afresh)
        self._thread: threading.Thread | None = None
        self._queued: set = set()
        self._jobs: list = []  # a heap of (due, order, path, query string, url root)
        self._order = itertools.count()  # first asked, first built among jobs due together
        self._warmed = False

    def ask(self, path: str, query_string: bytes = b"", due: float = 0.0) -> None:
        """Queue a build of the page at this address as a new anonymous visitor gets it,
        not before the time `due` (time.monotonic()), unless one is queued already."""
        with self._lock:
            self._adopt_process()
            if (path, query_string) in self._queued:
                return
            self._queued.add((path, query_string))
            job = (due, next(self._order), path, query_string, request.url_root)
            heapq.heappush(self._jobs, job)
            self._lock.notify()  # a sleeping thread may now have an earlier job
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="page-rebuilder", daemon=True
                )
                self._thread.start()

    def warm(self) -> None:
        """Once per process, at its first public page view: queue the pages residents
        open most (the city, every result, output, measure and place), so that after a
        start or a worker's renewal they are kept before anyone asks (streets, thousands
        of them, are built on their first view)."""
        with self._lock:
            self._adopt_process()
            if self._warmed:
                return
            self._warmed = True
        session, root = get_session(), request.script_root
        nodes = session.execute(
            select(Node.kind, Node.id)
            .where(Node.retired_at.is_(None))
            .order_by(Node.kind.desc(), Node.id)  # results, outputs, then measures
        ).all()
        places = session.scalars(
            select(Place.id)
            .where(Place.level != "city", Place.retired_at.is_(None))
            .order_by(Place.id)
        ).all()
        addresses = [url_for("home.index")]
        addresses += [  # an output's page is its result's kind of page
            url_for("results.measure" if kind == "measure" else "results.result", node_id=node_id)
            for kind, node_id in nodes
        ]
        addresses += [url_for("places.place", place_id=place_id) for place_id in places]
        for address in addresses:
            self.ask(address.removeprefix(root))

    def _adopt_process(self) -> None:
        # Under the lock. A forked worker inherits the state but not the thread: start afresh.
        if self._pid != os.getpid():
            self._pid, self._thread, self._warmed = os.getpid(), None, False
            self._queued, self._jobs = set(), []

    def wait(self, timeout: float) -> bool:
        """Build what is queued without waiting for it to fall due, and wait for the queue
        to empty (tests, before their database goes); False if it did not within
        `timeout` seconds."""
        with self._lock:
            self._jobs = [(0.0, *job[1:]) for job in self._jobs]
            heapq.heapify(self._jobs)
            self._lock.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._thread is None

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    return
                wait = self._jobs[0][0] - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                _, _, path, query_string, url_root = heapq.heappop(self._jobs)
            try:
                self._visit(path, query_string, url_root)
            except Exception:
                logger.exception("rebuilding the page %s failed", path)
            finally:
                with self._lock:
                    self._queued.discard((path, query_string))

    def _visit(self, path: str, query_string: bytes, url_root: str) -> None:
        # The address as a new anonymous visitor asks it: no cookie, no account. The view
        # (public_page) sees `page_rebuild`, builds unless its page is current, and keeps it.
        with self.app.test_request_context(path, base_url=url_root, query_string=query_string):
            g.page_rebuild = True
            if self.app.preprocess_request() is not None:
                return  # a before-request check refused it
            try:
                self.app.dispatch_request()
            except HTTPException as refusal:  # the page is gone (a 404): visitors will see
                logger.info("the page %s now answers %s", path, refusal.code)


def _city_today() -> date:
    """Today in the city (a page's "status unknown" and expected progress move daily)."""
    return today_in(per_stamp("timezone", lambda: city_timezone(get_session())))


def _personal() -> bool:
    """Whether this answer may carry something of this visitor's own."""
    return bool(session.get("uid") or session.get("_flashes") or session.get("csrf"))
