"""Public pages served fast: maps and whole pages built once per data stamp.

The stamp (tracker.freshness.data_stamp) moves with every write, tree load or place
change, so nothing cached here is ever stale: a change simply makes new keys.

Maps. A page's map script is not inline in the page: the page loads it from its own
address with `?map=KIND&v=STAMP` added. That request runs the same view, which meets
the same `cached_map` call and answers with the script instead of the page. So the
script is built by the very code that built the page (whichever worker gets the
request), browsers cache it for a year (a new stamp is a new address), and the page
itself holds no inline script at all, which keeps the CSP strict and lets whole pages
be cached and compressed.

Pages. `public_page` keeps the HTML of anonymous GET answers by (address, stamp, day).
Anything personal stops it: a signed-in account, a pending flash, a CSRF token (a form)
— those answers are built fresh each time.

The stamp itself is read at most once every STAMP_SECONDS per process, and again right
after any commit in this process: a cached page view then touches no database at all,
a worker always sees its own writes, and another worker's write reaches the pages
within a second (the API reads the database on every request, as before).
"""

import functools
import hashlib
import time
from collections.abc import Callable
from datetime import date

from flask import Response, abort, current_app, g, request, session, url_for
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tracker.clock import city_timezone, today_in
from tracker.db import get_session, session_engine
from tracker.freshness import data_stamp
from tracker.maps import MapCache, RenderedMap
from tracker.rollup.cache import LRU

MAP_PARAM = "map"  # ?map=KIND asks a page for its map's script
VERSION_PARAM = "v"
YEAR = 365 * 24 * 3600
STAMP_SECONDS = 1.0  # how long another process's write may take to reach the pages


def init_app(app) -> None:
    app.extensions["map_cache"] = MapCache()
    app.extensions["page_cache"] = LRU(512)
    app.extensions["stamp_memo"] = {}  # by engine: the primary's, the replica's
    # By stamp; only `tracker init` changes the timezone, but any write moves the stamp.
    app.extensions["city_timezones"] = LRU(4)


def current_stamp() -> str:
    """This request's data stamp: re-read when this process committed anything since, or
    when the last reading is over STAMP_SECONDS old."""
    if "data_stamp" not in g:
        # One memo per database: the stamp must come from the database the page reads (a
        # replica's lags the primary's), or a page could be kept under a newer stamp
        # than its data.
        memos = current_app.extensions["stamp_memo"]
        memo = memos.setdefault(session_engine(), {})
        commits, now = _commits, time.monotonic()  # taken before reading: a commit meanwhile counts
        if memo.get("commits") != commits or now - memo.get("at", -STAMP_SECONDS) > STAMP_SECONDS:
            session = get_session()
            memo = memos.setdefault(session.get_bind(), {})  # a replica found down: the primary
            memo.update(stamp=data_stamp(session), at=now, commits=commits)
        g.data_stamp = memo["stamp"]
    return g.data_stamp


_commits = 0  # commits in this process, on any engine


@event.listens_for(Engine, "commit")
def _count_commit(_connection) -> None:
    global _commits
    _commits += 1


def cached_map(kind: str, key: tuple, build: Callable[[], RenderedMap], tiles) -> RenderedMap:
    """The page's map `kind` for `key`, built once per stamp; on a `?map=KIND` request,
    answer with its script instead of the page (see the module docstring)."""
    stamp = current_stamp()
    cache: MapCache = current_app.extensions["map_cache"]
    name = "map_" + hashlib.sha256(repr((kind, key)).encode()).hexdigest()[:16]
    # Keyed by the city's day like the page: "status unknown" on the map moves with it.
    entry = (kind, key, stamp, _city_today(), tiles)
    rendered = cache.get_or_build(entry, lambda: build().renamed(name))
    if request.args.get(MAP_PARAM) == kind:
        abort(_script_response(rendered, current=request.args.get(VERSION_PARAM) == stamp))
    args = request.args.to_dict(flat=False) | {MAP_PARAM: kind, VERSION_PARAM: stamp}
    url = url_for(request.endpoint, **(request.view_args or {}), **args)
    return RenderedMap(
        rendered.html, rendered.script, rendered.name, rendered.layers, script_url=url
    )


def _script_response(rendered: RenderedMap, *, current: bool) -> Response:
    # One function scope, so Folium's top-level names stay out of the page's globals.
    body = f"(function () {{\n{rendered.script}\n}})();\n"
    response = Response(body, mimetype="text/javascript")
    # The address names its stamp: a current one never changes. An old one (a page
    # older than the latest write) gets today's map, not to be kept.
    response.cache_control.public = True
    if current:
        response.cache_control.max_age = YEAR
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    return response


def public_page(view):
    """Decorate a public GET view: anonymous answers are kept per (address, stamp, day)."""

    @functools.wraps(view)
    def wrapped(**kwargs):
        if request.method != "GET" or _personal():
            return view(**kwargs)
        cache: LRU = current_app.extensions["page_cache"]
        # The query in a fixed order: ?a=1&b=2 and ?b=2&a=1 are one page.
        query = tuple(sorted(request.args.items(multi=True)))
        key = (request.path, query, current_stamp(), _city_today())
        html = cache.get(key)
        if html is not None:
            return Response(html, mimetype="text/html")
        answer = current_app.make_response(view(**kwargs))
        if answer.status_code == 200 and not answer.is_streamed and not _personal():
            cache.put(key, answer.get_data())
        return answer

    return wrapped


def _city_today() -> date:
    """Today in the city (a page's "status unknown" and expected progress move daily)."""
    zones: LRU = current_app.extensions["city_timezones"]
    timezone = zones.get(current_stamp())
    if timezone is None:
        timezone = city_timezone(get_session())
        zones.put(current_stamp(), timezone)
    return today_in(timezone)


def _personal() -> bool:
    """Whether this answer may carry something of this visitor's own."""
    return bool(session.get("uid") or session.get("_flashes") or session.get("csrf"))
