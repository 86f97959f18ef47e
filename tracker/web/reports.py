"""Reporting a problem (`/report`), the reports' public pages (`/reports`, `/reports/ID`)
and the agency's tab (`/agency/reports`: status, notes, hiding and showing again). Every
write goes through tracker.reports; hidden reports are on no public page.

`/report` works without JavaScript, in two steps of plain forms:
1. where: a GET form searching streets by name (the matches come back as radio buttons)
   or one giving a latitude and longitude (`/report?lat=&lon=` from a map link, and
   `/report?place=ID` starting from a place's middle);
2. what: the category (radio buttons in a fieldset per group), a description, a name and
   an email, POSTed with the CSRF token and the `website` honeypot, at most REPORT_LIMIT
   an hour from one client. A refused field is shown again next to its input
   (aria-describedby) with what the resident typed.
"""

from flask import Blueprint, current_app, flash, redirect, request, url_for

from tracker import reports
from tracker.clock import local_time
from tracker.db import get_session
from tracker.errors import NotFound, TrackerError
from tracker.maps import ReportMark
from tracker.models import Report, ReportCategory
from tracker.places import search_streets
from tracker.places.search import street_detail
from tracker.ratelimit import enforce, request_client
from tracker.web.auth import current_user, login_required
from tracker.web.page_cache import public_page
from tracker.web.pages import agency_names, city_zone, render_page, tree

bp = Blueprint("reports", __name__)

REPORT_LIMIT = 5  # reports per client …
REPORT_PER_SECONDS = 3600  # … per hour, across every worker (tracker.ratelimit)
HONEYPOT = "website"  # a field people never see and bots fill in
MAX_QUERY = 100  # characters of a street search
MATCHES = 20  # streets offered for one search
PAGE_SIZE = 50  # reports per page of /reports
AGENCY_PAGE_SIZE = 200  # reports on the agency's tab
FORM_FIELDS = ("category_code", "description", "name", "email")


def _settings():
    return current_app.config["SETTINGS"]


# --- reporting ------------------------------------------------------------------------


@bp.get("/report")
def report():
    """Step 1 (where) until a street or a point is chosen, then step 2 (what)."""
    session = get_session()
    args = request.args
    q = " ".join(args.get("q", "").split())[:MAX_QUERY]
    street_id = args.get("street", "").strip() or None
    lat, lon = args.get("lat", "").strip(), args.get("lon", "").strip()
    place = _place(args.get("place", ""))
    if street_id or lat or lon:
        try:
            location = reports.locate_report(
                session, lon=lon or None, lat=lat or None, street_id=street_id
            )
        except TrackerError as exc:
            return _where_page(q=q, lat=lat, lon=lon, place=place, error=exc), exc.status
        return _what_page(location, street_id=street_id)
    point = reports.place_point(session, place.id) if place is not None and not q else None
    if point is not None:
        lon, lat = f"{point[0]:.5f}", f"{point[1]:.5f}"
    return _where_page(q=q, lat=lat, lon=lon, place=place)


def _place(place_id: str):
    if not place_id:
        return None
    info = tree().places.get(place_id)
    return info if info is not None and info.level != "city" else None


def _where_page(*, q="", lat="", lon="", place=None, error: TrackerError | None = None):
    session = get_session()
    matches = search_streets(session, q, MATCHES + 1, abbreviations=True) if q else []
    places = tree().places
    streets = [
        {
            "id": s["id"],
            "name": s["name"],
            "suburbs": [places[p].name for p in s["places"] if p in places],
        }
        for s in matches[:MATCHES]
    ]
    return render_page(
        "public/report_where.html",
        q=q,
        lat=lat,
        lon=lon,
        place=place,
        streets=streets,
        searched=bool(q),
        more=len(matches) > MATCHES,
        error=error,
    )


def _what_page(location, *, street_id=None, form=None, error=None, status=200):
    """Step 2: the category, description, name and email for a chosen location."""
    session = get_session()
    places = tree().places
    where = {
        "street_id": street_id,
        "street": location.street_name,
        "lat": f"{location.lat:.6f}",
        "lon": f"{location.lon:.6f}",
        "place": places.get(location.place_id) if location.place_id else None,
    }
    if street_id:
        detail = street_detail(session, street_id)
        where["street_id"] = detail["id"] if detail else street_id
        # A street through several neighbourhoods: the resident says which part.
        parts = [places[p] for p in (detail["places"] if detail else []) if p in places]
        if len(parts) > 1:
            where["parts"] = parts
            where["part"] = location.place_id  # the midpoint's, or the one chosen
    page = render_page(
        "public/report_what.html",
        where=where,
        groups=_groups(reports.categories(session)),
        form=form or {},
        error=error,
        limits={"description": reports.DESCRIPTION_MAX, "name": reports.NAME_MAX},
    )
    return page, status


def _groups(categories: list[ReportCategory]) -> list[tuple[str, list[ReportCategory]]]:
    """Categories by group, groups in the order of their first category."""
    groups: dict[str, list[ReportCategory]] = {}
    for category in categories:
        groups.setdefault(category.group_name or "Other problems", []).append(category)
    return list(groups.items())


@bp.post("/report")
def submit():
    """Store the report (tracker.reports.submit_report) and say where it went."""
    session = get_session()
    form = {name: request.form.get(name, "") for name in FORM_FIELDS}
    street_id = request.form.get("street", "").strip() or None
    street_part = (request.form.get("street_part", "").strip() or None) if street_id else None
    lat = request.form.get("lat", "").strip() or None
    lon = request.form.get("lon", "").strip() or None
    if request.form.get(HONEYPOT):  # a bot: answer as if sent, store nothing
        return render_page("public/report_sent.html", report=None, agency=None)
    try:
        location = reports.locate_report(
            session, lon=lon, lat=lat, street_id=street_id, street_part=street_part
        )
    except TrackerError as exc:
        session.rollback()
        return _where_page(lat=lat or "", lon=lon or "", error=exc), exc.status
    try:
        enforce(session, bucket="report", client=request_client(), what="reports",
                limit=REPORT_LIMIT, per_seconds=REPORT_PER_SECONDS)  # fmt: skip
        if street_id:
            point = {"street_id": street_id, "street_part": street_part}
        else:
            point = {"lon": location.lon, "lat": location.lat}
        saved = reports.submit_report(
            session,
            category_code=form["category_code"],
            description=form["description"],
            name=form["name"],
            email=form["email"],
            source="web",
            settings=_settings(),
            **point,
        )
    except TrackerError as exc:
        session.rollback()
        page, _ = _what_page(location, street_id=street_id, form=form, error=exc)
        return page, exc.status, exc.headers()
    session.commit()
    agency = agency_names().get(saved.agency_id, saved.agency_id)
    return render_page("public/report_sent.html", report=saved, agency=agency)


# --- public pages ---------------------------------------------------------------------


@bp.get("/reports")
@public_page
def index():
    """Recent reports, newest first, PAGE_SIZE a page (`?page=N`)."""
    session = get_session()
    raw = request.args.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise TrackerError("page must be a whole number from 1", status=400)
    number = int(raw)
    total = reports.count_reports(session)
    rows = reports.search_reports(session, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    if number > 1 and not rows:
        raise NotFound(f"There is no page {number} of reports.")
    return render_page(
        "public/reports.html",
        rows=_rows(session, rows),
        page=number,
        total=total,
        pages=max(1, -(-total // PAGE_SIZE)),
    )


@bp.get("/reports/<int:report_id>")
@public_page
def detail(report_id: int):
    """One report: what, where, its status and the agency's notes (never who sent it)."""
    session = get_session()
    row = _rows(session, [reports.get_report(session, report_id)])[0]
    return render_page("public/report.html", r=row)


def _rows(session, found: list[Report]) -> list[dict]:
    """Reports as pages show them: names for codes and ids, local times; no email."""
    timezone = city_zone()
    names = agency_names()
    categories = reports.category_names(session) if found else {}
    places = tree().places
    rows = []
    for report in found:
        rows.append(
            {
                "id": report.id,
                "category": categories.get(report.category_code, report.category_code),
                "status": report.status,
                "status_label": reports.STATUS_LABELS.get(report.status, report.status),
                "status_notes": report.status_notes,
                "description": report.description,
                "address": report.address,
                "place": places.get(report.place_id) if report.place_id else None,
                "lat": report.lat,
                "lon": report.lon,
                "agency_id": report.agency_id,
                "agency": names.get(report.agency_id, report.agency_id),
                "created": local_time(report.created_at, timezone),
                "updated": local_time(report.updated_at, timezone),
                "changed": report.updated_at != report.created_at,
                "name": report.name,  # the agency's tab shows it; public pages do not
            }
        )
    return rows


# --- the agency's tab -------------------------------------------------------------------


@bp.get("/agency/reports")
@login_required("agency")
def agency_reports():
    """The agency's reports, open ones first, newest first, each with a status form."""
    return _agency_page()


def _agency_page(*, failed=None, error=None, form=None, status=200):
    session, user = get_session(), current_user()
    found = reports.search_reports(
        session, agency_id=user.agency_id, open_first=True, limit=AGENCY_PAGE_SIZE, hidden=True
    )
    page = render_page(
        "agency/reports.html",
        rows=_rows(session, found),
        open_count=reports.count_reports(session, agency_id=user.agency_id, statuses=["open"]),
        total=reports.count_reports(session, agency_id=user.agency_id, hidden=True),
        shown=AGENCY_PAGE_SIZE,
        failed=failed,
        error=error,
        form=form or {},
        statuses={status: reports.STATUS_LABELS[status] for status in reports.STATUSES},
        limit=reports.NOTES_MAX,
        reason_limit=reports.REASON_MAX,
    )
    return page, status


@bp.post("/agency/reports/<int:report_id>")
@login_required("agency")
def update(report_id: int):
    """Set one of the agency's reports open or closed, with notes; the reporter is mailed."""
    session, user = get_session(), current_user()
    form = {"status": request.form.get("status", ""), "notes": request.form.get("notes", "")}
    try:
        reports.update_report(session, report_id, agency_id=user.agency_id, user_id=user.id,
                              status=form["status"], status_notes=form["notes"],
                              settings=_settings())  # fmt: skip
    except TrackerError as exc:
        session.rollback()
        if exc.status in (403, 404):
            raise
        return _agency_page(failed=report_id, error=exc.message, form=form, status=exc.status)
    session.commit()
    flash(f"Report {report_id} saved: its page shows the status and notes.", "info")
    return redirect(url_for(".agency_reports") + f"#report-{report_id}", 303)


@bp.post("/agency/reports/<int:report_id>/hide")
@login_required("agency")
def hide(report_id: int):
    """Take one of the agency's reports down, with a reason (tracker.reports.hide_report)."""
    session, user = get_session(), current_user()
    form = {"reason": request.form.get("reason", "")}
    try:
        reports.hide_report(session, report_id, reason=form["reason"], user_id=user.id,
                            agency_id=user.agency_id)  # fmt: skip
    except TrackerError as exc:
        session.rollback()
        if exc.status in (403, 404):
            raise
        stored = reports.get_report(session, report_id, hidden=True)
        form |= {"status": stored.status, "notes": stored.status_notes or ""}
        return _agency_page(failed=report_id, error=exc.message, form=form, status=exc.status)
    session.commit()
    flash(f"Report {report_id} is hidden: no public page, map or list shows it.", "info")
    return redirect(url_for(".agency_reports") + f"#report-{report_id}", 303)


@bp.post("/agency/reports/<int:report_id>/unhide")
@login_required("agency")
def unhide(report_id: int):
    """Show one of the agency's hidden reports again, with the status it had."""
    session, user = get_session(), current_user()
    reports.unhide_report(session, report_id, user_id=user.id, agency_id=user.agency_id)
    session.commit()
    flash(f"Report {report_id} is shown again.", "info")
    return redirect(url_for(".agency_reports") + f"#report-{report_id}", 303)


# --- on a place's page ----------------------------------------------------------------------

PLACE_MAP_REPORTS = 500  # the newest reports a place's map shows
PLACE_LIST_REPORTS = 10  # listed under it, with a link to all of them


def _leaves(definitions, place_id: str) -> list[str]:
    """The neighbourhoods at or below `place_id` (reports are located in neighbourhoods)."""
    below = [p.id for p in definitions.places.values() if p.parent_id == place_id]
    if not below:
        return [place_id]
    return [leaf for child in below for leaf in _leaves(definitions, child)]


def place_report_marks(session, definitions, place_id: str) -> list[ReportMark]:
    """The place's newest reports as map marks (the map is cached per data stamp)."""
    found = reports.search_reports(
        session, places=_leaves(definitions, place_id), limit=PLACE_MAP_REPORTS
    )
    names = reports.category_names(session) if found else {}
    return [
        ReportMark(id=r.id, title=names.get(r.category_code, r.category_code), status=r.status,
                   lon=r.lon, lat=r.lat)
        for r in found
    ]  # fmt: skip


def place_reports(session, definitions, place_id: str) -> dict:
    """The place's newest reports for the list beside its map, and how many there are."""
    leaves = _leaves(definitions, place_id)
    found = reports.search_reports(session, places=leaves, limit=PLACE_LIST_REPORTS)
    return {
        "rows": _rows(session, found),
        "total": reports.count_reports(session, places=leaves),
        "open": reports.count_reports(session, places=leaves, statuses=["open"]),
    }
