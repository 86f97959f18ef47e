"""What changed in a place or on a street, as Atom 1.0 feeds and alert digests.

A place's changes: works that lie (partly) in it or in a neighbourhood below it — new
ones and status changes —, figures received for it or a neighbourhood below it (one
entry per batch: "12 new values for 3 measures from AGENCY"), and published comments on
the place or on its works. A street's: works on or near it (the WorkStreet rows), figures
received for the neighbourhoods it crosses, and published comments on the street or on
its works. The newest FEED_SIZE of them, newest first.

Each entry has a stable tag: URI (RFC 4151) under TRACKER_PUBLIC_URL's host, so a feed
reader shows it once however often it polls: `…:status/ID` for a WorkStatusChange row
(a new work is the row with no old status), `…:figures/BATCH/AREA` for a batch's values,
`…:comment/ID` for a comment.

The XML is built with xml.etree: user text is only ever an element's text, escaped by
the serialiser, and characters XML 1.0 cannot carry (control characters) are dropped.
"""

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select
from sqlmodel import Session

from tracker.agencies import agency_names
from tracker.errors import NotFound
from tracker.models import (
    Batch,
    Comment,
    Node,
    Observation,
    Place,
    Street,
    StreetPlace,
    Work,
    WorkPlace,
    WorkStatusChange,
    WorkStreet,
    every_revision,
)
from tracker.settings import Settings

FEED_SIZE = 50  # entries in a feed
TAG_DATE = "2026"  # the tag: URIs' date (RFC 4151): fixed, so ids never change
ATOM = "http://www.w3.org/2005/Atom"
STATUS_WORDS = {
    "planned": "planned",
    "in_progress": "in progress",
    "complete": "complete",
    "cancelled": "cancelled",
}
# Characters XML 1.0 cannot hold: C0 controls but tab, LF, CR; surrogates; U+FFFE/FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Change:
    """One thing that happened in an area: an Atom entry, or a line of a digest."""

    key: str  # the tag: URI's specific part, e.g. "status/12"
    kind: str  # work | status | figures | comment
    title: str
    summary: str
    path: str  # the page it happened on, from the site's root
    updated: datetime


@dataclass(frozen=True)
class Area:
    """A place or a street, as followed."""

    kind: str  # place | street
    id: str
    name: str
    path: str  # its page
    places: list[str]  # the neighbourhoods (and itself, for a place) figures come from


def find_area(session: Session, kind: str, area_id: str) -> Area:
    """The live place or the street; NotFound otherwise."""
    if kind == "place":
        place = session.get(Place, area_id)
        if place is None or place.retired_at is not None or place.parent_id is None:
            raise NotFound(f"no place {area_id!r}")
        return Area(
            "place", place.id, place.name, f"/places/{place.id}", _at_or_below(session, place)
        )
    if kind == "street":
        street = session.get(Street, area_id)
        if street is None:
            raise NotFound(f"no street {area_id!r}")
        places = session.scalars(
            select(StreetPlace.place_id).where(StreetPlace.street_id == area_id)
        ).all()
        return Area("street", street.id, street.name, f"/streets/{street.id}", sorted(places))
    raise NotFound(f"no {kind} {area_id!r}")


def area_changes(
    session: Session, area: Area, *, since: datetime | None = None, limit: int = FEED_SIZE
) -> list[Change]:
    """The newest `limit` changes in the area (after `since`, if given), newest first."""
    works = _works(area)
    names = agency_names(session)
    changes = (
        _status_changes(session, works, since, limit)
        + _figures(session, area, names, since, limit)
        + _comments(session, area, works, since, limit)
    )
    changes.sort(key=lambda change: (change.updated, change.key), reverse=True)
    return changes[:limit]


def atom_feed(area: Area, changes: list[Change], *, settings: Settings, self_path: str) -> bytes:
    """The Atom 1.0 document for the area's changes (UTF-8 bytes)."""
    from tracker.mail import link

    host = urlsplit(settings.public_url).hostname or "localhost"
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    _text(feed, "id", f"tag:{host},{TAG_DATE}:{area.kind}s/{area.id}")
    _text(feed, "title", f"{area.name}: what is changing (Rebuild tracker)")
    _text(feed, "subtitle", "New works, work status changes, new figures and comments.")
    updated = changes[0].updated if changes else datetime(2026, 1, 1, tzinfo=UTC)
    _text(feed, "updated", _when(updated))
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", type="application/atom+xml",
                  href=link(self_path, settings=settings))  # fmt: skip
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="alternate", type="text/html",
                  href=link(area.path, settings=settings))  # fmt: skip
    author = ET.SubElement(feed, f"{{{ATOM}}}author")
    _text(author, "name", "Rebuild tracker")
    _text(feed, "generator", "Rebuild tracker")
    for change in changes:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        _text(entry, "id", f"tag:{host},{TAG_DATE}:{change.key}")
        _text(entry, "title", change.title)
        _text(entry, "updated", _when(change.updated))
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html",
                      href=link(change.path, settings=settings))  # fmt: skip
        ET.SubElement(entry, f"{{{ATOM}}}category", term=change.kind)
        _text(entry, "summary", change.summary, type="text")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


# --- the sources ----------------------------------------------------------------------


def _works(area: Area):
    """SQL: ids of the works in the area."""
    if area.kind == "street":
        return select(WorkStreet.work_id).where(WorkStreet.street_id == area.id)
    return select(WorkPlace.work_id).where(WorkPlace.place_id.in_(area.places))


def _status_changes(session, works, since, limit) -> list[Change]:
    query = (
        select(WorkStatusChange, Work)
        .join(Work, Work.id == WorkStatusChange.work_id)
        .where(WorkStatusChange.work_id.in_(works))
        .order_by(WorkStatusChange.changed_at.desc(), WorkStatusChange.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(WorkStatusChange.changed_at > since)
    changes = []
    for change, work in session.execute(query).all():
        new = STATUS_WORDS.get(change.new_status, change.new_status)
        if change.old_status is None:
            title, summary = (
                f"New work: {work.title}",
                f"{work.title} ({new}), by {work.agency_id}.",
            )
        else:
            old = STATUS_WORDS.get(change.old_status, change.old_status)
            title = f"{work.title}: now {new}"
            summary = f"{work.title} went from {old} to {new}."
        changes.append(
            Change(
                key=f"status/{change.id}",
                kind="work" if change.old_status is None else "status",
                title=title,
                summary=summary,
                path=f"/works/{work.agency_id}/{work.ref}",
                updated=change.changed_at,
            )
        )
    return changes


def _figures(session, area: Area, names, since, limit) -> list[Change]:
    """One change per batch that brought values for the area's places."""
    if not area.places:
        return []
    sent = every_revision()
    query = (
        select(
            sent.c.batch_id,
            func.count(),
            func.count(func.distinct(Observation.measure_id)),
            func.min(Observation.measure_id),
            func.max(sent.c.received_at),
        )
        .join(Observation, Observation.id == sent.c.observation_id)
        .where(Observation.place_id.in_(area.places))
        .group_by(sent.c.batch_id)
        .order_by(func.max(sent.c.received_at).desc(), sent.c.batch_id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(sent.c.received_at > since)
    rows = session.execute(query).all()
    agencies = dict(
        session.execute(
            select(Batch.id, Batch.agency_id).where(Batch.id.in_([row[0] for row in rows]))
        ).all()
    )
    titles = dict(
        session.execute(select(Node.id, Node.title).where(Node.id.in_([r[3] for r in rows]))).all()
    )
    changes = []
    for batch_id, values, measures, first_measure, received in rows:
        agency = names.get(agencies.get(batch_id), agencies.get(batch_id) or "an agency")
        what = titles.get(first_measure, first_measure)
        if measures > 1:
            what += f" and {measures - 1} more measure{'s' if measures > 2 else ''}"
        plural = "s" if values != 1 else ""
        changes.append(
            Change(
                key=f"figures/{batch_id}/{area.kind}s/{area.id}",
                kind="figures",
                title=f"New figures from {agency}",
                summary=f"{values} value{plural} received for {area.name}: {what}.",
                path=area.path,
                updated=received,
            )
        )
    return changes


def _comments(session, area: Area, works, since, limit) -> list[Change]:
    """Published comments on the area itself or on its works (never their emails)."""
    own = Comment.street_id == area.id if area.kind == "street" else Comment.place_id == area.id
    when = getattr(Comment, "published_at", None) or Comment.created_at
    query = (
        select(Comment, Work.agency_id, Work.ref)
        .outerjoin(Work, Work.id == Comment.work_id)
        .where(Comment.status == "published", or_(own, Comment.work_id.in_(works)))
        .order_by(func.coalesce(when, Comment.created_at).desc(), Comment.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(func.coalesce(when, Comment.created_at) > since)
    changes = []
    for comment, agency_id, ref in session.execute(query).all():
        path = f"/works/{agency_id}/{ref}" if ref else area.path
        changes.append(
            Change(
                key=f"comment/{comment.id}",
                kind="comment",
                title=f"Comment from {comment.author_name}",
                summary=comment.body,
                path=f"{path}#comment-{comment.id}",
                updated=getattr(comment, "published_at", None) or comment.created_at,
            )
        )
    return changes


def _at_or_below(session: Session, place: Place) -> list[str]:
    """The place and every place below it (figures may be sent for an area itself)."""
    found, level = [place.id], [place.id]
    while level:
        level = session.scalars(select(Place.id).where(Place.parent_id.in_(level))).all()
        found += level
    return sorted(found)


def _text(parent: ET.Element, tag: str, text: str, **attributes) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", **attributes)
    element.text = _NOT_XML.sub("", text)
    return element


def _when(moment: datetime) -> str:
    """RFC 3339 in UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
