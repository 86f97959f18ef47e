"""Open-data exports under /exports/ (CONTRACT §8): streamed files, open to any origin.

Every file is keyed by the data stamp (tracker.freshness): its ETag moves with every
write, tree or place change, so a client or cache can revalidate cheaply and gets a 304
while nothing changed.

The two files whose size is bounded by the tree and the places, not by the rows stored
(rollup.csv, places.geojson), are also kept whole in each process once built, and served
as they were for as long as a page would be (tracker.web.page_cache: the data moved
less than TRACKER_PAGE_STALE_SECONDS ago), with the ETag they were built under: built
afresh after every write, they took a quarter of a web worker under a write a second.
The others stream from the database every time, in memory that does not grow with them.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request, url_for
from werkzeug.http import http_date

from tracker import exports
from tracker.clock import city_today
from tracker.db import get_engine, get_session
from tracker.demo import has_demo_data
from tracker.freshness import data_stamp, last_received
from tracker.rollup import app_cache
from tracker.rollup.cache import LRU
from tracker.web.page_cache import current_stamp, public_page, within_allowance
from tracker.web.pages import query_date, render_page

bp = Blueprint("exports", __name__, url_prefix="/exports")

CSV = "text/csv"  # Flask adds "; charset=utf-8" to text types
GEOJSON = "application/geo+json"
JSON = "application/json"
MAX_AGE = 300  # seconds a cache may keep a file before revalidating it


@dataclass(frozen=True)
class KeptFile:
    stamp: str  # the data stamp it was built under
    received: datetime | None  # the latest batch's arrival then (Last-Modified)
    body: bytes


def init_app(app) -> None:
    app.extensions["kept_exports"] = LRU(8)  # by (filename, variant): a KeptFile


@bp.get("/")
@public_page
def index():
    """What each file holds, its licence and how to cite it."""
    return render_page("public/exports.html", day=city_today(get_session()))


@bp.get("/observations.csv")
def observations():
    """Every current value, with its revision count, agency, channel and time received."""
    return _export("observations.csv", CSV, exports.observations_csv)


@bp.get("/revisions.csv")
def revisions():
    """The change history: every value sent, with the one it replaced."""
    return _export("revisions.csv", CSV, exports.revisions_csv)


@bp.get("/rollup.csv")
def rollup():
    """Every node at every place on ?date= (default today in the city)."""
    session = get_session()
    on = query_date(request.args.get("date")) or city_today(session)
    cache = app_cache(current_app)
    return _export(
        f"rollup-{on.isoformat()}.csv",
        CSV,
        lambda s: exports.rollup_csv(s, on=on, cache=cache),
        variant=on.isoformat(),
        keep=True,
    )


@bp.get("/places.geojson")
def places():
    """The city, its areas and neighbourhoods (RFC 7946)."""
    return _export("places.geojson", GEOJSON, exports.places_geojson, keep=True)


@bp.get("/works.geojson")
def works():
    """Every located work (RFC 7946)."""
    return _export("works.geojson", GEOJSON, exports.works_geojson)


@bp.get("/datapackage.json")
def datapackage():
    """The Frictionless data package describing every export."""
    base_url = url_for("exports.index", _external=True)
    demo = has_demo_data(get_session())
    # The generator runs after the request, where url_for cannot: build the addresses here.
    agencies = url_for("agencies.agency", agency_id="-", _external=True).removesuffix("/-")

    def agency_url(agency_id: str) -> str:
        return f"{agencies}/{quote(agency_id, safe='')}"

    def build(session) -> Iterator[str]:
        package = exports.datapackage(session, base_url=base_url, agency_url=agency_url, demo=demo)
        yield exports.to_json(package) + "\n"

    return _export("datapackage.json", JSON, build)


def _export(
    filename: str, mimetype: str, produce: Callable, *, variant: str = "", keep: bool = False
) -> Response:
    """Stream `produce(session)` as `filename`, or answer 304 when the client's copy is
    current. The generator gets a session of its own, closed when streaming ends, and
    needs nothing of the request (which has ended by then). With `keep`, the whole file
    is kept once streamed, and served while within the allowance (see the docstring)."""
    session = get_session()
    kept_files: LRU = current_app.extensions["kept_exports"]
    key = (filename, variant)
    kept: KeptFile | None = kept_files.get(key) if keep else None
    if kept is not None and not within_allowance(kept.stamp):
        kept = None
    if kept is not None:
        stamp, received = kept.stamp, kept.received
    else:  # read before building: a write meanwhile leaves the file under the older stamp
        stamp = current_stamp() if keep else data_stamp(session)
        received = last_received(session)
    etag = f"{stamp}{'-' + variant if variant else ''}"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Access-Control-Allow-Origin": "*",
        "Cache-Control": f"public, max-age={MAX_AGE}",
    }
    if received is not None:
        headers["Last-Modified"] = http_date(received)
    # Flask-Compress appends ":br" (or another algorithm) to a strong ETag it compresses.
    known = request.if_none_match.as_set(include_weak=True)
    if any(tag == etag or tag.startswith(etag + ":") for tag in known):
        response = Response(status=304, headers=headers)
        response.set_etag(etag)
        return response
    if kept is not None:
        response = Response(kept.body, mimetype=mimetype, headers=headers)
        response.set_etag(etag)
        return response
    engine = get_engine()

    def body() -> Iterator[str]:
        own = exports.export_session(engine)
        chunks: list[str] | None = [] if keep else None
        try:
            for chunk in produce(own):
                if chunks is not None:
                    chunks.append(chunk)
                yield chunk
        finally:
            own.close()
        if chunks is not None:  # streamed to the end: whole
            kept_files.put(key, KeptFile(stamp, received, "".join(chunks).encode()))

    response = Response(body(), mimetype=mimetype, headers=headers)
    response.set_etag(etag)
    return response
