"""Following an area: Atom feeds, email alerts and the resident's own data.

Routes: `/places/ID.atom` and `/streets/ID.atom` (cached per data stamp);
`/places/ID/follow`, `/streets/ID/follow` (the alert form); `/alerts/confirm/TOKEN`,
`/alerts/unsubscribe/TOKEN` (a page with a button; the POST is RFC 8058's one-click
unsubscribe, authenticated by its token and therefore the one POST exempt from CSRF);
`/me/KEY` (what the tracker holds for an email) and `/me/KEY/delete`.
"""

from flask import Blueprint, Response, current_app, request

from tracker import alerts, csrf, residents
from tracker.atom import FEED_SIZE, area_changes, atom_feed, find_area
from tracker.clock import city_timezone, local_time
from tracker.db import get_session
from tracker.errors import TrackerError
from tracker.rollup.cache import LRU
from tracker.web.page_cache import current_stamp
from tracker.web.pages import render_page

bp = Blueprint("follow", __name__)

FOLLOW_LIMIT = 5  # alert requests per client …
FOLLOW_PER_SECONDS = 3600  # … per hour, across every worker (tracker.ratelimit)
HONEYPOT = "website"  # a field people never see and bots fill in


def _settings():
    return current_app.config["SETTINGS"]


# --- feeds ----------------------------------------------------------------------------


@bp.get("/places/<place_id>.atom")
def place_feed(place_id: str):
    return _feed("place", place_id)


@bp.get("/streets/<street_id>.atom")
def street_feed(street_id: str):
    return _feed("street", street_id)


def _feed(kind: str, area_id: str) -> Response:
    cache: LRU = current_app.extensions.setdefault("atom_cache", LRU(256))
    key = (kind, area_id, current_stamp())
    body = cache.get(key)
    if body is None:
        session = get_session()
        area = find_area(session, kind, area_id)
        changes = area_changes(session, area, limit=FEED_SIZE)
        body = atom_feed(area, changes, settings=_settings(), self_path=request.path)
        cache.put(key, body)
    response = Response(body, mimetype="application/atom+xml")
    response.cache_control.public = True
    response.cache_control.max_age = 300
    return response


# --- alerts ---------------------------------------------------------------------------


@bp.route("/places/<place_id>/follow", methods=["GET", "POST"])
def follow_place(place_id: str):
    return _follow("place", place_id)


@bp.route("/streets/<street_id>/follow", methods=["GET", "POST"])
def follow_street(street_id: str):
    return _follow("street", street_id)


def _follow(kind: str, area_id: str):
    session = get_session()
    area = find_area(session, kind, area_id)
    feed = f"{area.path}.atom"
    if request.method == "GET":
        return render_page("public/follow.html", area=area, feed=feed, email="", error=None)
    email = request.form.get("email", "")
    if request.form.get(HONEYPOT):  # a bot: answer as if sent, send nothing
        return render_page("public/follow_sent.html", area=area)
    try:
        _rate_limit(session)
        alerts.request_alert(session, area, email, settings=_settings())
    except TrackerError as exc:
        session.rollback()
        page = render_page("public/follow.html", area=area, feed=feed, email=email,
                           error=exc.message)  # fmt: skip
        return page, exc.status, exc.headers()
    session.commit()
    return render_page("public/follow_sent.html", area=area)


def _rate_limit(session) -> None:
    """At most FOLLOW_LIMIT requests per client per hour, counted in the database."""
    try:
        from tracker.ratelimit import enforce, request_client
    except ImportError:  # the shared limiter is not in this tree yet
        return
    enforce(session, bucket="follow", client=request_client(), what="alert requests",
            limit=FOLLOW_LIMIT, per_seconds=FOLLOW_PER_SECONDS)  # fmt: skip


@bp.route("/alerts/confirm/<sent>", methods=["GET", "POST"])
def confirm(sent: str):
    session = get_session()
    subscription = alerts.subscription_for(session, sent, "confirm", settings=_settings())
    area = alerts.area_of(session, subscription)
    if request.method == "GET" and subscription.confirmed_at is None:
        # A button, not the link itself: mail scanners that open links confirm nothing.
        return render_page("public/follow_confirm.html", area=area, done=False)
    alerts.confirm(session, sent, settings=_settings())
    session.commit()
    hours = _settings().alert_digest_hours
    return render_page("public/follow_confirm.html", area=area, done=True, hours=hours)


@bp.get("/alerts/unsubscribe/<sent>")
def unsubscribe_page(sent: str):
    session = get_session()
    subscription = alerts.subscription_for(session, sent, "unsubscribe", settings=_settings())
    area = alerts.area_of(session, subscription)
    return render_page("public/follow_unsubscribe.html", area=area, done=False)


@bp.post("/alerts/unsubscribe/<sent>")
@csrf.exempt
def unsubscribe(sent: str):
    """RFC 8058 one-click unsubscribe (and the page's button): the token is the proof."""
    session = get_session()
    subscription = alerts.unsubscribe(session, sent, settings=_settings())
    try:
        area = alerts.area_of(session, subscription)
    except TrackerError:
        area = None
    session.commit()
    return render_page("public/follow_unsubscribe.html", area=area, done=True)


# --- the resident's data ----------------------------------------------------------------


@bp.get("/me/<key>")
def me(key: str):
    session = get_session()
    email = residents.email_for_key(session, key)
    timezone = city_timezone(session)
    held = [
        (item, local_time(item.created_at, timezone) if item.created_at else None)
        for item in residents.held_for(session, email)
    ]
    response = current_app.make_response(render_page("public/me.html", key=key, held=held))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the key stays off other sites
    return response


@bp.post("/me/<key>/delete")
def me_delete(key: str):
    session = get_session()
    email = residents.email_for_key(session, key)
    item = request.form.get("item") or None
    if item is None and request.form.get("everything") != "yes":
        raise TrackerError("Choose something to delete.", status=400)
    count = residents.forget(session, email, item=item)
    session.commit()
    page = render_page("public/me_deleted.html", key=key, count=count, everything=item is None)
    response = current_app.make_response(page)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
