"""Problem reports, FixMyStreet-style: the one write path for the web form and Open311.

A resident chooses a category (from the tree's `report_categories`), a place (a point
inside the city, or a street whose midpoint stands for it), and describes the problem.
The report is routed to the category's agency: its staff get a mail (with no resident's
address in it: they answer on the tracker), the reporter an acknowledgement with a link
to the report and the "your data" link. The agency then closes or reopens it with notes,
and the reporter is mailed each update. Its agency or an official can hide a report whose
text should not be public (hide_report, with a reason in the audit trail): searches, counts
and get_report leave hidden ones out unless asked for them (`hidden=True`).

Every refusal is a TrackerError whose `field` names the input it is about, with the
keyword names of submit_report (`category_code`, `description`, `name`, `email`, `lon`,
`lat`, `street_id`, `address`) or `location` for "a point or a street, not both"; the web
form shows it by that field and the Open311 layer maps it to its own names.
"""

import math
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import shapely
from shapely.geometry import Point
from sqlalchemy import case, func, select
from sqlmodel import Session

from tracker.alerts import valid_email
from tracker.errors import NotFound, TrackerError
from tracker.geometry import point_on
from tracker.mail import link, queue_mail
from tracker.models import (
    Agency,
    AuditEvent,
    Place,
    Report,
    ReportCategory,
    Street,
    User,
    utcnow,
)
from tracker.places import street_detail
from tracker.places.locate import city_extent, locate_point, resolve_street
from tracker.residents import me_link
from tracker.settings import Settings

STATUSES = ("open", "closed")  # what an agency sets
HIDDEN = "hidden"  # taken down (hide_report): on no public page, map, count or Open311 answer
STATUS_LABELS = {"open": "Open", "closed": "Closed", HIDDEN: "Hidden"}
SOURCES = ("web", "open311")
DESCRIPTION_MAX = 2000
NAME_MAX = 100
ADDRESS_MAX = 300
NOTES_MAX = 2000
REASON_MAX = 1000
SEARCH_LIMIT = 1000


def categories(session: Session) -> list[ReportCategory]:
    """The categories residents can report under now (not retired), in the tree's order."""
    return list(
        session.scalars(
            select(ReportCategory)
            .where(ReportCategory.retired_at.is_(None))
            .order_by(ReportCategory.position, ReportCategory.code)
        )
    )


def category_names(session: Session) -> dict[str, str]:
    """{code: name} of every category, retired ones too (old reports keep theirs)."""
    return dict(session.execute(select(ReportCategory.code, ReportCategory.name)).all())


def place_point(session: Session, place_id: str) -> tuple[float, float] | None:
    """(lon, lat) of a live place's label point, where a report from its page starts."""
    row = session.execute(
        select(Place.label_lon, Place.label_lat).where(
            Place.id == place_id, Place.retired_at.is_(None)
        )
    ).first()
    return (row[0], row[1]) if row else None


def category(session: Session, code: str) -> ReportCategory:
    """The live category `code`; TrackerError (400, field category_code) if none."""
    found = session.get(ReportCategory, code) if isinstance(code, str) and code else None
    if found is None or found.retired_at is not None:
        raise TrackerError(
            "Choose the kind of problem from the list.", status=400, field="category_code"
        )
    return found


def submit_report(
    session: Session,
    *,
    category_code: str,
    description: str,
    name: str = "",
    email: str | None,
    lon: float | None = None,
    lat: float | None = None,
    street_id: str | None = None,
    street_part: str | None = None,
    address: str | None = None,
    source: str = "web",
    open311_key_id: int | None = None,
    settings: Settings,
) -> Report:
    """Validate and store a report, routed to its category's agency, and queue its mails
    (see the module); not committed: it goes with the caller's transaction."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    found = category(session, category_code)
    description = clean_text(description, field="description", limit=DESCRIPTION_MAX,
                             what="The description")  # fmt: skip
    if not description:
        raise TrackerError("Describe the problem.", status=400, field="description")
    name = clean_line(name or "", field="name", limit=NAME_MAX, what="Your name")
    if email is not None and email.strip():
        try:
            email = valid_email(email)
        except TrackerError as error:
            raise TrackerError(error.message, status=400, field="email") from None
    elif source == "web":
        raise TrackerError(
            "Enter your email address, so we can tell you what happens.",
            status=400,
            field="email",
        )
    else:
        email = None
    address = clean_line(address or "", field="address", limit=ADDRESS_MAX, what="The address")
    lon, lat, place_id, street_address = _location(session, lon, lat, street_id, street_part)
    now = utcnow()  # one moment for both: a new report is not "updated"
    report = Report(
        created_at=now,
        updated_at=now,
        category_code=found.code,
        agency_id=found.agency_id,
        place_id=place_id,
        status="open",
        description=description,
        lon=lon,
        lat=lat,
        address=street_address or address or None,
        name=name,
        email=email,
        source=source,
        open311_key_id=open311_key_id,
    )
    session.add(report)
    session.flush()
    _mail_agency(session, report, found, settings)
    if email:
        _mail_reporter_received(session, report, found, settings)
    return report


class Location(NamedTuple):
    """Where a report is: its point, the neighbourhood holding it, and the street's name
    when it was given as a street."""

    lon: float
    lat: float
    place_id: str | None
    street_name: str | None


def locate_report(
    session: Session,
    *,
    lon=None,
    lat=None,
    street_id: str | None = None,
    street_part: str | None = None,
) -> Location:
    """The Location of exactly one of a point (numbers or their text) and a street id
    (with `street_part`, the neighbourhood of the street it is in); TrackerError (400,
    with its field) as submit_report refuses them."""
    return Location(*_location(session, lon, lat, street_id, street_part))


def _location(
    session, lon, lat, street_id, street_part=None
) -> tuple[float, float, str | None, str | None]:
    """(lon, lat, place id, street name) from exactly one of a point and a street. A
    street stands as its midpoint, or with `street_part` (one of the neighbourhoods it runs
    through) as the middle of its longest stretch there."""
    has_point = lon is not None or lat is not None
    has_street = street_id is not None and str(street_id).strip() != ""
    if has_point and has_street:
        raise TrackerError(
            "Give either a point (latitude and longitude) or a street, not both.",
            status=400,
            field="location",
        )
    if not has_point and not has_street:
        raise TrackerError(
            "Choose where the problem is: a street, or a latitude and longitude.",
            status=400,
            field="location",
        )
    if has_street:
        found, geometry, _why = resolve_street(session, str(street_id).strip())
        street = session.get(Street, found) if found else None
        if street is None or geometry is None:
            raise TrackerError(
                "That street is not one the tracker knows: search for it again.",
                status=400,
                field="street_id",
            )
        if street_part:
            point = _point_in_part(session, street, geometry, street_part)
            return point.x, point.y, street_part, street.name
        point = point_on(geometry)
        place_id = locate_point(session, point.x, point.y) or street.main_place_id
        return point.x, point.y, place_id, street.name
    for value, field in ((lat, "lat"), (lon, "lon")):
        if value is None:
            raise TrackerError("Give both the latitude and the longitude.", status=400, field=field)
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise TrackerError(
            "Latitude and longitude must be numbers, such as -43.53 and 172.63.",
            status=400,
            field="lat",
        ) from None
    if not (math.isfinite(lon) and math.isfinite(lat)) or not (
        -180 <= lon <= 180 and -90 <= lat <= 90
    ):
        raise TrackerError(
            "Latitude and longitude must be numbers, such as -43.53 and 172.63.",
            status=400,
            field="lat",
        )
    extent = city_extent(session)
    if extent is None or not extent.covers(Point(lon, lat)):
        raise TrackerError(
            "That point is outside the city: this tracker takes reports inside it only.",
            status=400,
            field="lat",
        )
    return lon, lat, locate_point(session, lon, lat), None


def _point_in_part(session, street: Street, geometry, place_id: str) -> Point:
    """The middle of the street's longest stretch inside the neighbourhood `place_id`,
    which must be one of the live places it runs through."""
    if place_id not in street_detail(session, street.id)["places"]:
        raise TrackerError(
            f"{street.name} does not run through that neighbourhood: choose one of its parts.",
            status=400,
            field="street_part",
        )
    inside = geometry.intersection(shapely.from_geojson(session.get(Place, place_id).geometry))
    stretches = [g for g in shapely.get_parts(inside) if g.geom_type == "LineString"]
    if not stretches:  # it only touches the border there: its midpoint, as without a part
        return point_on(geometry)
    return point_on(max(stretches, key=lambda line: line.length))


def update_report(
    session: Session,
    report_id: int,
    *,
    agency_id: str,
    user_id: int | None,
    status: str,
    status_notes: str | None,
    settings: Settings | None = None,
) -> Report:
    """Set a report's status and notes, as its agency (another agency: 403); records it in
    the audit trail and mails the reporter (when there is an email) if anything changed."""
    report = get_report(session, report_id, hidden=True)
    session.refresh(report, with_for_update=True)  # two updates at once: one after the other
    if report.agency_id != agency_id:
        raise TrackerError("This report is another agency's to answer.", status=403)
    if report.status == HIDDEN:
        raise TrackerError(
            f"Report {report.id} is hidden: show it again before changing its status.",
            status=409,
            field="status",
        )
    if status not in STATUSES:
        raise TrackerError("Choose open or closed.", status=400, field="status")
    notes = clean_text(status_notes or "", field="status_notes", limit=NOTES_MAX,
                       what="The notes") or None  # fmt: skip
    if report.status == status and report.status_notes == notes:
        return report
    old = {"status": report.status, "status_notes": report.status_notes}
    report.status = status
    report.status_notes = notes
    report.updated_at = utcnow()
    session.add(report)
    session.add(
        AuditEvent(
            agency_id=agency_id,
            user_id=user_id,
            channel="web",
            action="report.update",
            entity_id=f"report/{report.id}",
            place_id=report.place_id,
            old=old,
            new={"status": status, "status_notes": notes},
        )
    )
    session.flush()
    if report.email:
        _mail_reporter_update(session, report, settings)
    return report


def get_report(session: Session, report_id: int, *, hidden: bool = False) -> Report:
    """The report `report_id`; NotFound (404) if there is none, or if it is hidden and
    `hidden` (its agency's and officials' view) is not set."""
    report = session.get(Report, report_id) if isinstance(report_id, int) else None
    if report is None or (report.status == HIDDEN and not hidden):
        raise NotFound(f"There is no report {report_id}.")
    return report


def hide_report(
    session: Session,
    report_id: int,
    *,
    reason: str,
    user_id: int | None,
    agency_id: str | None = None,
) -> Report:
    """Take a report down (status "hidden"), as its agency (`agency_id`; another agency:
    403) or as an official (`agency_id` None), with a reason (required) kept in the audit
    trail. Its text leaves every public page, map, count and Open311 answer; its
    `updated_at` moves, so cached pages go too. Nobody is mailed. Not committed."""
    report = _for_change(session, report_id, agency_id)
    reason = clean_text(reason or "", field="reason", limit=REASON_MAX, what="The reason")
    if not reason:
        raise TrackerError("Say why the report is hidden.", status=400, field="reason")
    if report.status == HIDDEN:
        return report
    _set_status(session, report, HIDDEN, user_id=user_id, action="report.hide",
                extra={"reason": reason})  # fmt: skip
    return report


def unhide_report(
    session: Session, report_id: int, *, user_id: int | None, agency_id: str | None = None
) -> Report:
    """Show a hidden report again with the status it had before (open if unknown), as
    hide_report allows; recorded in the audit trail, nobody mailed. Not committed."""
    report = _for_change(session, report_id, agency_id)
    if report.status != HIDDEN:
        return report
    before = session.scalar(
        select(AuditEvent.old)
        .where(AuditEvent.entity_id == f"report/{report.id}", AuditEvent.action == "report.hide")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    status = (before or {}).get("status")
    _set_status(session, report, status if status in STATUSES else "open", user_id=user_id,
                action="report.unhide")  # fmt: skip
    return report


def _for_change(session: Session, report_id: int, agency_id: str | None) -> Report:
    report = get_report(session, report_id, hidden=True)
    session.refresh(report, with_for_update=True)
    if agency_id is not None and report.agency_id != agency_id:
        raise TrackerError("This report is another agency's to answer.", status=403)
    return report


def _set_status(session, report: Report, status: str, *, user_id, action, extra=None) -> None:
    old = {"status": report.status}
    report.status = status
    report.updated_at = utcnow()
    session.add(report)
    session.add(
        AuditEvent(
            agency_id=report.agency_id,
            user_id=user_id,
            channel="web",
            action=action,
            entity_id=f"report/{report.id}",
            place_id=report.place_id,
            old=old,
            new={"status": status, **(extra or {})},
        )
    )
    session.flush()


def search_reports(
    session: Session,
    *,
    codes: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    ids: Sequence[int] | None = None,
    limit: int = SEARCH_LIMIT,
    offset: int = 0,
    agency_id: str | None = None,
    place_id: str | None = None,
    places: Sequence[str] | None = None,
    open_first: bool = False,
    hidden: bool = False,
) -> list[Report]:
    """Reports matching every filter given, newest first (created in [start, end]);
    `open_first` puts open ones before closed ones (the agency's list). Hidden reports
    only with `hidden` (the agency's tab, officials)."""
    query = _filtered(select(Report), codes, statuses, start, end, ids, agency_id, place_id,
                      hidden)  # fmt: skip
    if places is not None:
        query = query.where(Report.place_id.in_(list(places)))
    order = [Report.created_at.desc(), Report.id.desc()]
    if open_first:
        order.insert(0, case((Report.status == "open", 0), else_=1))
    limit = max(0, min(int(limit), SEARCH_LIMIT))
    return list(session.scalars(query.order_by(*order).offset(max(0, offset)).limit(limit)))


def count_reports(
    session: Session,
    *,
    codes: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    ids: Sequence[int] | None = None,
    agency_id: str | None = None,
    place_id: str | None = None,
    places: Sequence[str] | None = None,
    hidden: bool = False,
) -> int:
    """How many reports search_reports would find without a limit."""
    query = _filtered(
        select(func.count()).select_from(Report),
        codes, statuses, start, end, ids, agency_id, place_id, hidden,
    )  # fmt: skip
    if places is not None:
        query = query.where(Report.place_id.in_(list(places)))
    return int(session.scalar(query) or 0)


def _filtered(query, codes, statuses, start, end, ids, agency_id, place_id, hidden=False):
    if not hidden:
        query = query.where(Report.status != HIDDEN)
    if codes is not None:
        query = query.where(Report.category_code.in_(list(codes)))
    if statuses is not None:
        query = query.where(Report.status.in_(list(statuses)))
    if start is not None:
        query = query.where(Report.created_at >= start)
    if end is not None:
        query = query.where(Report.created_at <= end)
    if ids is not None:
        query = query.where(Report.id.in_(list(ids)))
    if agency_id is not None:
        query = query.where(Report.agency_id == agency_id)
    if place_id is not None:
        query = query.where(Report.place_id == place_id)
    return query


# --- text -----------------------------------------------------------------------------


def clean_text(text: str, *, field: str, limit: int, what: str) -> str:
    """Free text with its line ends made "\\n", trimmed; TrackerError (400, `field`) for
    a control character other than a line end (U+2028 and U+2029 too), or for more than
    `limit` characters."""
    if not isinstance(text, str):
        raise TrackerError(f"{what} must be text.", status=400, field=field)
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if any(c != "\n" and unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise TrackerError(
            f"{what} holds a control character: type it again as plain text.",
            status=400,
            field=field,
        )
    if len(text) > limit:
        raise TrackerError(
            f"{what} is {len(text):,} characters long: keep it to {limit:,}.",
            status=400,
            field=field,
        )
    return text


def clean_line(text: str, *, field: str, limit: int, what: str) -> str:
    """clean_text for a single line: a line break is refused too."""
    text = clean_text(text, field=field, limit=limit, what=what)
    if "\n" in text:
        raise TrackerError(f"{what} must be a single line.", status=400, field=field)
    return text


# --- mail -----------------------------------------------------------------------------


def _where(report: Report) -> str:
    place = f" ({report.place_id})" if report.place_id else ""
    if report.address:
        return f"{report.address}{place}, at {report.lat:.5f}, {report.lon:.5f}"
    return f"{report.lat:.5f}, {report.lon:.5f}{place}"


def _mail_agency(session, report: Report, found: ReportCategory, settings) -> None:
    """One mail to each active staff account of the category's agency: what and where,
    and a link to answer on the tracker (never the reporter's address)."""
    staff = session.scalars(
        select(User.email)
        .where(User.role == "agency", User.agency_id == found.agency_id)
        .where(User.disabled_at.is_(None))
        .order_by(User.id)
    ).all()
    body = (
        f"A resident reported a problem for your agency on the Rebuild tracker.\n\n"
        f"Report {report.id}: {found.name}\n"
        f"Where: {_where(report)}\n\n"
        f"{report.description}\n\n"
        f"The report: {link(f'/reports/{report.id}', settings=settings)}\n"
        f"Answer it (open or closed, with notes) on the tracker, not by replying to this "
        f"mail: {link('/agency/reports', settings=settings)}\n"
    )
    for address in staff:
        queue_mail(
            session,
            kind="report.agency",
            to=address,
            subject=f"New report {report.id}: {found.name}",
            body=body,
            headers={"Auto-Submitted": "auto-generated"},
        )


def _mail_reporter_received(session, report: Report, found: ReportCategory, settings) -> None:
    agency = session.get(Agency, report.agency_id)
    who = agency.name if agency else report.agency_id
    body = (
        f"Thank you: your report of a problem is on the Rebuild tracker, and has been sent "
        f"to {who}.\n\n"
        f"Report {report.id}: {found.name}\n"
        f"Where: {_where(report)}\n\n"
        f"{report.description}\n\n"
        f"Its page, where {who} will say what happens: "
        f"{link(f'/reports/{report.id}', settings=settings)}\n"
        f"We will mail you when its status changes. Your email address is not shown on the "
        f"tracker.\n"
    )
    _mail_reporter(session, report, settings, kind="report.received",
                   subject=f"Your report {report.id}: {found.name}", body=body)  # fmt: skip


def _mail_reporter_update(session, report: Report, settings) -> None:
    found = session.get(ReportCategory, report.category_code)
    agency = session.get(Agency, report.agency_id)
    who = agency.name if agency else report.agency_id
    what = found.name if found else report.category_code
    body = (
        f"{who} updated your report {report.id} ({what}) on the Rebuild tracker.\n\n"
        f"Status: {report.status}\n"
    )
    if report.status_notes:
        body += f"\n{report.status_notes}\n"
    body += f"\nThe report: {link(f'/reports/{report.id}', settings=settings)}\n"
    _mail_reporter(session, report, settings, kind="report.update",
                   subject=f"Your report {report.id} is {report.status}", body=body)  # fmt: skip


def _mail_reporter(session, report: Report, settings, *, kind, subject, body) -> None:
    mine = me_link(session, report.email, settings=settings)
    body += f"\n--\nWhat the tracker holds about you, and deleting it: {mine}\n"
    queue_mail(
        session,
        kind=kind,
        to=report.email,
        subject=subject,
        body=body,
        headers={"Auto-Submitted": "auto-generated"},
    )
