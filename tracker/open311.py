"""Open311 GeoReport v2 (CONTRACT §8): problem reports for other programs, in JSON.

Routes under `/open311/v2/`: `services.json`, `services/CODE.json`, `requests.json` (GET
with the spec's filters; POST with an `api_key`) and `requests/ID.json`. Field names are
the spec's; datetimes are ISO 8601 in the city's timezone with its offset. Every refusal
is the spec's error body, an array of `{"code", "description"}`, never an HTML page. Only
JSON is served: a `.xml` (or other) extension is a 400 that says so.

Reports are read and written through tracker.reports (the one write path for reports, as
the web form uses); this module maps the spec's fields onto it and keeps the client
applications' api_keys, which are stored as SHA-256 hashes only (like agency tokens) and
issued, listed and revoked by `tracker open311 key|keys|revoke`.
"""

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlmodel import Session
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from tracker import csrf, reports
from tracker.auth import hash_token
from tracker.clock import city_timezone, local_time
from tracker.db import get_session, transaction
from tracker.errors import NotFound, TrackerError
from tracker.limits import date_problem
from tracker.mail import link
from tracker.models import Agency, AuditEvent, Open311Key, Place, Report, ReportCategory, utcnow
from tracker.places import resolve_street, search_streets
from tracker.ratelimit import enforce
from tracker.web.errors import database_failure, retry_after

KEY_PREFIX = "o311_"
NAME_MAX = 100  # Open311Key.name
WINDOW = timedelta(days=90)  # the spec's default and largest span of requests.json
MAX_REQUESTS = 1000  # … and its most requests in one answer
POST_LIMIT = 120  # requests a key may POST …
POST_PER_SECONDS = 600  # … per ten minutes, across every worker (tracker.ratelimit)
FORMAT = "json"
ONLY_JSON = "Only JSON is served here: use the .json extension (for example services.json)."
STATUSES = ("open", "closed")
CHANGESET = "2026-12-02T00:00:00Z"  # when this endpoint's shape last changed
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

bp = Blueprint("open311", __name__, url_prefix="/open311")


class _AnyPath(PathConverter):
    """A path that may hold any character: werkzeug's own stops at a line break (a %0A in
    the URL), and a path that no rule matches would get the site's HTML 404 page."""

    regex = r"[^/][\s\S]*?"


bp.record_once(lambda state: state.app.url_map.converters.setdefault("anypath", _AnyPath))


# --- api keys (data functions: they take a session and never commit) ------------------------


def issue_key(session: Session, name: str) -> str:
    """Create an api_key for the client application `name` and return it; only its hash
    is stored, so it is never shown again."""
    name = name.strip()
    if not name:
        raise TrackerError("the key needs a name: the client application it is for")
    if len(name) > NAME_MAX:
        raise TrackerError(f"the name is longer than {NAME_MAX} characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = Open311Key(name=name, key_hash=hash_token(key))
    session.add(row)
    session.flush()
    _audit(session, "open311key.issue", row, new=name)
    return key


def list_keys(session: Session) -> list[Open311Key]:
    """Every api_key row, oldest first; revoked ones included."""
    return list(session.scalars(select(Open311Key).order_by(Open311Key.id)))


def revoke_key(session: Session, key_id: int) -> Open311Key:
    """Revoke an api_key at once (its next POST gets 403); NotFound for an unknown id.
    Revoking it again keeps the first revocation time."""
    row = session.get(Open311Key, key_id)
    if row is None:
        raise NotFound(f"no Open311 key {key_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        _audit(session, "open311key.revoke", row, old=row.name)
    return row


def _audit(session: Session, action: str, row: Open311Key, **change: Any) -> None:
    """Issuing and revoking a key are in the audit trail, as agency tokens' are (the CLI
    is their only channel)."""
    session.add(
        AuditEvent(channel="cli", action=action, entity_id=f"open311key/{row.id}", **change)
    )


def key_for(session: Session, key: str) -> Open311Key:
    """The live row of `key`, its last use recorded; TrackerError 403 when the key is
    missing, unknown or revoked (the spec's status for a bad api_key)."""
    if not key:
        raise TrackerError("api_key is required to submit a request", status=403)
    row = session.scalars(select(Open311Key).where(Open311Key.key_hash == hash_token(key))).first()
    if row is None or row.revoked_at is not None:
        raise TrackerError("api_key is unknown or revoked", status=403)
    row.last_used_at = utcnow()
    return row


# --- the spec's shapes ----------------------------------------------------------------------


def service_json(category: ReportCategory) -> dict[str, Any]:
    """One entry of services.json."""
    return {
        "service_code": category.code,
        "service_name": category.name,
        "description": category.description,
        "metadata": False,  # no extra attributes: services/CODE.json lists none
        "type": "realtime",  # a POST answers with the request's id at once
        "keywords": ",".join(category.keywords or []),
        "group": category.group_name or "",
    }


def service_definition(category: ReportCategory) -> dict[str, Any]:
    """services/CODE.json: no attributes beyond the spec's standard fields."""
    return {"service_code": category.code, "attributes": []}


def open311_time(moment: datetime | None, timezone: str) -> str | None:
    """A stored time as ISO 8601 in the city's timezone with its offset, to the second
    (2026-12-02T09:14:00+13:00), as the spec asks; None stays None."""
    if moment is None:
        return None
    return local_time(moment, timezone).isoformat(timespec="seconds")


def service_notice(agency_name: str) -> str:
    """What happens next, for the POST answer and each request."""
    return f"Sent to {agency_name}, who will look at it."


def request_json(
    report: Report, *, category: ReportCategory | None, agency: Agency | None, timezone: str
) -> dict[str, Any]:
    """One service request in the spec's fields. Never the reporter's name or email."""
    agency_name = agency.name if agency is not None else report.agency_id
    return {
        "service_request_id": str(report.id),
        "status": report.status,
        "status_notes": report.status_notes,
        "service_name": category.name if category is not None else report.category_code,
        "service_code": report.category_code,
        "description": report.description,
        "agency_responsible": agency_name,
        "service_notice": service_notice(agency_name),
        "requested_datetime": open311_time(report.created_at, timezone),
        "updated_datetime": open311_time(report.updated_at, timezone),
        "expected_datetime": None,
        "address": report.address,
        "address_id": None,
        "zipcode": None,
        "lat": report.lat,
        "long": report.lon,
        "media_url": None,
    }


def requests_json(session: Session, reports: list[Report]) -> list[dict[str, Any]]:
    """Reports in the spec's fields, with their categories' and agencies' names."""
    categories = {c.code: c for c in session.scalars(select(ReportCategory))}
    agencies = {a.id: a for a in session.scalars(select(Agency))}
    timezone = city_timezone(session)
    return [
        request_json(
            r,
            category=categories.get(r.category_code),
            agency=agencies.get(r.agency_id),
            timezone=timezone,
        )
        for r in reports
    ]


def error_body(status: int, description: str) -> list[dict[str, Any]]:
    """The spec's error answer: an array of {code, description}."""
    return [{"code": status, "description": description}]


# --- reading the spec's parameters --------------------------------------------------------


def parse_datetime(name: str, text: str, timezone: str) -> datetime:
    """A W3C / ISO 8601 date or datetime (2026-12-01, 2026-12-01T09:00:00+13:00, …Z); one
    without an offset is in the city's time. TrackerError naming `name` otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TrackerError(
            f"{name} must be an ISO 8601 datetime such as 2026-12-01T09:00:00+13:00, "
            f"not {shown(text)}"
        ) from None
    problem = date_problem(moment.date())
    if problem:
        raise TrackerError(f"{name} {problem}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment.astimezone(UTC)


def shown(text: str, limit: int = 60) -> str:
    """`text` quoted for a refusal's message, cut to `limit` characters: a message never
    echoes a whole megabyte back."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def date_window(
    start_text: str | None, end_text: str | None, *, timezone: str, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """(start, end) of a requests.json query: the spec's default is the last 90 days;
    given one end, the other is 90 days from it; a span over 90 days is refused."""
    start = parse_datetime("start_date", start_text, timezone) if start_text else None
    end = parse_datetime("end_date", end_text, timezone) if end_text else None
    if start is None and end is None:
        end = now or utcnow()
    if start is None:
        start = end - WINDOW
    if end is None:
        end = start + WINDOW
    if end < start:
        raise TrackerError("end_date is before start_date")
    if end - start > WINDOW:
        raise TrackerError(
            "start_date and end_date are more than 90 days apart: ask for 90 days at most"
        )
    return start, end


def comma_list(name: str, text: str | None) -> list[str] | None:
    """A comma-separated parameter as a list (None when absent); an empty one, or one of
    more than MAX_REQUESTS values, is refused."""
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise TrackerError(f"{name} is empty: give one or more values separated by commas")
    if len(values) > MAX_REQUESTS:
        raise TrackerError(f"{name} lists more than {MAX_REQUESTS:,} values")
    return values


def request_ids(text: str | None) -> list[int] | None:
    ids = comma_list("service_request_id", text)
    if ids is None:
        return None
    if not all(v.isascii() and v.isdigit() and len(v) <= 18 for v in ids):
        raise TrackerError("service_request_id must be request ids (numbers) separated by commas")
    return [int(v) for v in ids]


def statuses(text: str | None) -> list[str] | None:
    values = comma_list("status", text)
    for value in values or ():
        if value not in STATUSES:
            raise TrackerError(f"status must be open or closed (or both), not {shown(value)}")
    return values


def number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TrackerError(
            f"{name} must be a number in degrees (WGS84), not {shown(text)}"
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise TrackerError(f"{name} must be a number in degrees (WGS84), not {shown(text)}")
    return value


def street_for_address(session: Session, text: str) -> str:
    """The street id that `address_string` names: a street's id or name, else the one
    street a name search finds (a leading house number and anything after a comma are
    dropped: "12 Ōpāwa Road, Opawa" finds Ōpāwa Road). TrackerError naming the field."""
    if len(text) > reports.ADDRESS_MAX:
        raise TrackerError(f"address_string is longer than {reports.ADDRESS_MAX} characters")
    street_id, _geometry, why = resolve_street(session, text)
    if street_id is not None:
        return street_id
    if "several streets" in why:
        raise TrackerError(f"address_string: {why}")
    words = text.split(",")[0].split()
    while words and any(ch.isdigit() for ch in words[0]):
        words.pop(0)
    found = search_streets(session, " ".join(words), limit=6, abbreviations=True) if words else []
    if len(found) == 1:
        return found[0]["id"]
    if found:
        ids = ", ".join(s["id"] for s in found[:5])
        raise TrackerError(
            f"address_string {shown(text)} matches several streets; send one of their ids as "
            f"address_id: {ids}"
        )
    raise TrackerError(f"address_string {shown(text)} matches no street in the gazetteer")


def _check_jurisdiction(session: Session, given: str | None) -> None:
    """One jurisdiction is served: jurisdiction_id is optional, and must be the city's id."""
    if not given:
        return
    city = session.scalar(select(Place.id).where(Place.level == "city", Place.retired_at.is_(None)))
    if given != city:
        raise TrackerError(f"jurisdiction_id {shown(given)} is not served here (this is {city!r})")


@bp.before_request
def _jurisdiction_in_query() -> None:
    """GET requests may name the jurisdiction in the query (a POST, in its body)."""
    _check_jurisdiction(get_session(), request.args.get("jurisdiction_id"))


def _json_only(fmt: str) -> None:
    if fmt != FORMAT:
        raise TrackerError(ONLY_JSON)


# --- views ----------------------------------------------------------------------------------


def _answer(body: Any, status: int = 200) -> Response:
    """JSON in the spec's field order (the app's JSON provider would sort the keys).

    Reading is open to pages on other sites (a map of reports), as the exports are: GET
    answers hold nothing private. A POST answer is not, so a browser page elsewhere cannot
    read what a key it holds was told."""
    response = Response(json.dumps(body, ensure_ascii=False), status, mimetype="application/json")
    if request.method in ("GET", "HEAD"):
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/v2/services.<fmt>")
def services(fmt: str):
    """Every live report category, as the spec's services."""
    _json_only(fmt)
    return _answer([service_json(c) for c in reports.categories(get_session())])


@bp.get("/v2/services/<code>.<fmt>")
def service(code: str, fmt: str):
    """One service's definition; 404 for an unknown or retired code."""
    _json_only(fmt)
    for category in reports.categories(get_session()):
        if category.code == code:
            return _answer(service_definition(category))
    raise NotFound(f"no service {shown(code)}")


@bp.get("/v2/requests.<fmt>")
def list_requests(fmt: str):
    """Service requests by the spec's filters; service_request_id, when given, wins over
    the others (as the spec says), else a date window of at most 90 days."""
    _json_only(fmt)
    session = get_session()
    args = request.args
    ids = request_ids(args.get("service_request_id"))
    if ids is not None:
        found = reports.search_reports(session, ids=ids, limit=MAX_REQUESTS)
    else:
        codes = comma_list("service_code", args.get("service_code"))
        wanted = statuses(args.get("status"))
        start, end = date_window(
            args.get("start_date"), args.get("end_date"), timezone=city_timezone(session)
        )
        found = reports.search_reports(
            session, codes=codes, statuses=wanted, start=start, end=end, limit=MAX_REQUESTS
        )
    return _answer(requests_json(session, list(found)))


@bp.get("/v2/requests/<request_id>.<fmt>")
def one_request(request_id: str, fmt: str):
    """One service request, as a one-element array; 404 for an unknown id."""
    _json_only(fmt)
    if not (request_id.isascii() and request_id.isdigit() and len(request_id) <= 18):
        raise NotFound(f"no request {shown(request_id)}")
    session = get_session()
    report = reports.get_report(session, int(request_id))
    return _answer(requests_json(session, [report]))


@bp.post("/v2/requests.<fmt>")
@csrf.exempt  # a program's POST, authenticated by its api_key, never a browser's form
def create_request(fmt: str):
    """Submit a problem report for a client application holding an api_key; 201 with the
    spec's answer `[{service_request_id, service_notice, account_id}]`."""
    _json_only(fmt)
    fields = _posted_fields()
    with transaction() as session:
        # In the body only, as the spec has it: a key in the URL would land in access logs.
        key = key_for(session, fields.get("api_key") or "")
        enforce(
            session,
            bucket="open311-post",
            client=f"open311-key/{key.id}",
            limit=POST_LIMIT,
            per_seconds=POST_PER_SECONDS,
            what="requests with this api_key",
        )
        _check_jurisdiction(session, fields.get("jurisdiction_id"))
        location, where = _location(session, fields)
        name = " ".join(
            part.strip() for part in (fields.get("first_name"), fields.get("last_name")) if part
        ).strip()
        code = _required(fields, "service_code")
        if code not in {c.code for c in reports.categories(session)}:
            raise NotFound(f"service_code {shown(code)} is not a service here: see services.json")
        try:
            report = reports.submit_report(
                session,
                category_code=code,
                description=fields.get("description") or "",
                name=name,
                email=fields.get("email") or None,
                source="open311",
                open311_key_id=key.id,
                settings=current_app.config["SETTINGS"],
                **location,
            )
        except TrackerError as refusal:
            raise _in_open311_words(refusal, where) from None
        agency = session.get(Agency, report.agency_id)
        answer = [
            {
                "service_request_id": str(report.id),
                "service_notice": service_notice(agency.name if agency else report.agency_id),
                "account_id": None,
            }
        ]
    return _answer(answer, 201)


def _posted_fields() -> dict[str, str]:
    """The POST's fields: form-encoded as the spec has it, or a JSON object."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise TrackerError("the JSON body must be an object of the spec's fields")
        fields = {k: v if isinstance(v, str) else _scalar_text(k, v) for k, v in body.items()}
        for name, value in fields.items():
            if "\x00" in name or "\x00" in value:
                raise TrackerError(f"{name.replace(chr(0), '')!r} holds a NUL character")
        return fields
    return request.form.to_dict()


def _scalar_text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrackerError(f"{name} must be a string or a number")
    return str(value)


def _required(fields: dict[str, str], name: str) -> str:
    value = (fields.get(name) or "").strip()
    if not value:
        raise TrackerError(f"{name} is required")
    return value


# The names reports.submit_report gives its refusals' fields, as this API's fields.
_FIELDS = {
    "category_code": "service_code",
    "description": "description",
    "name": "first_name/last_name",
    "email": "email",
    "lat": "lat/long",
    "lon": "lat/long",
    "location": "lat/long, address_string or address_id",
    "address": "address_string",
}


def _in_open311_words(refusal: TrackerError, where: str) -> TrackerError:
    """The write path's refusal, its field named as this API names it (`where`: the
    field the location came from)."""
    field = refusal.field
    field = where if field == "street_id" else _FIELDS.get(field or "", field)
    message = f"{field}: {refusal.message}" if field else refusal.message
    return TrackerError(message, status=refusal.status, field=field)


def _location(session: Session, fields: dict[str, str]) -> tuple[dict[str, Any], str]:
    """(submit_report's location arguments, the field they came from): lat and long, else
    address_id (a street id), else address_string (a street found by its name)."""
    lat, lon = (fields.get("lat") or "").strip(), (fields.get("long") or "").strip()
    address = (fields.get("address_string") or "").strip() or None
    if lat or lon:
        if not (lat and lon):
            raise TrackerError("lat and long go together: send both, or an address_string")
        point = {"lat": number("lat", lat), "lon": number("long", lon), "address": address}
        return point, "lat/long"
    street_id = (fields.get("address_id") or "").strip()
    if street_id:
        return {"street_id": street_id, "address": address}, "address_id"
    if address:
        street = street_for_address(session, address)
        return {"street_id": street, "address": address}, "address_string"
    raise TrackerError("a location is required: lat and long, address_string or address_id")


@bp.get("/discovery.<fmt>")
def discovery(fmt: str):
    """The spec's service discovery document: one production GeoReport v2 endpoint, JSON."""
    _json_only(fmt)
    return _answer(
        {
            "changeset": CHANGESET,
            "contact": "See the tracker's API documentation at /api/docs.",
            "key_service": "Ask the city's officials for an api_key (tracker open311 key).",
            "endpoints": [
                {
                    "specification": "http://wiki.open311.org/GeoReport_v2",
                    "url": link("/open311/v2"),
                    "changeset": CHANGESET,
                    "type": "production",
                    "formats": ["application/json"],
                }
            ],
        }
    )


_KNOWN = re.compile(r"(discovery|v2/services(/[^/]+)?|v2/requests(/[^/]+)?)\.json")


@bp.route("/", defaults={"rest": ""}, methods=_METHODS, endpoint="root")
@bp.route("/<anypath:rest>", methods=_METHODS, endpoint="not_found")
@csrf.exempt
def not_found(rest: str):
    """Anything else under /open311/: the spec's error body, never an HTML page."""
    last = rest.rsplit("/", 1)[-1]
    if "." in last and last.rsplit(".", 1)[1] != FORMAT:
        raise TrackerError(ONLY_JSON)
    if _KNOWN.fullmatch(rest):
        allowed = "GET or POST" if rest == "v2/requests.json" else "GET"
        raise TrackerError(f"/open311/{rest} answers {allowed} only", status=405)
    raise NotFound(
        f"no Open311 resource {request.method} /open311/{rest}: see /open311/discovery.json"
    )


@bp.errorhandler(TrackerError)
def _refused(exc: TrackerError):
    response = _answer(error_body(exc.status, exc.message), exc.status)
    response.headers.update(exc.headers())
    return response


@bp.errorhandler(DBAPIError)
@bp.errorhandler(DisconnectionError)
def _database(exc: DBAPIError | DisconnectionError):
    """A database that is busy, unreachable, read-only or full, as tracker.web.errors
    answers it (503 with Retry-After, or 507), in the spec's error array; else a 500."""
    answer = database_failure(exc)
    if answer is None:
        raise exc
    status, message = answer
    response = _answer(error_body(status, message), status)
    response.headers.update(retry_after(status, message))
    return response


@bp.errorhandler(HTTPException)
def _http_refused(exc: HTTPException):
    message = exc.description or exc.name
    if exc.code == 413:
        message = "The request body is larger than this server accepts."
    return _answer(error_body(exc.code or 500, message), exc.code or 500)
