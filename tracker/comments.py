"""Residents' comments on places, works and measures: the one write path, pre-moderated.

1. A resident writes one (submit_comment): a name (shown), an email (never shown) and a
   body. It is stored `pending`, shown nowhere, and the author is mailed that it awaits
   moderation.
2. An official (/admin/comments) publishes it, or rejects it with a reason; either way
   the author is mailed (a rejection says why), and the action is an AuditEvent.
3. Anyone may report a published comment (report): its `reports` count goes up and it
   is back in the moderation queue, still shown until an official rejects it; publishing
   it again sets the count back to 0.

Every mail ends with the author's "your data" link (tracker.residents), where the
comment can be deleted; the email is never on a page, in a feed or in the audit trail.
"""

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlmodel import Session

from tracker.alerts import valid_email
from tracker.errors import NotFound, TrackerError
from tracker.mail import link, queue_mail
from tracker.models import Agency, AuditEvent, Comment, Node, Place, Work, utcnow
from tracker.residents import me_link
from tracker.settings import Settings
from tracker.works import find_work

NAME_MAX = 100
BODY_MAX = 2000
REASON_MAX = 1000
PAGE_MAX = 200  # published comments one page shows at most (newest first)
QUEUE_MAX = 500  # comments the moderation page lists at most (oldest first)
KINDS = ("place", "work", "measure")


@dataclass(frozen=True)
class Target:
    """What a comment is about: a place, a work or a measure, with its public page."""

    kind: str  # place | work | measure
    id: str | int  # Place.id, Work.id (the row's) or Node.id
    name: str
    path: str  # its public page, where published comments show

    def columns(self) -> dict[str, str | int]:
        return {f"{self.kind}_id": self.id}


@dataclass(frozen=True)
class QueueItem:
    """A comment waiting for an official: pending, or published and reported since."""

    comment: Comment
    target: Target | None  # None if what it was about has gone since


def find_target(session: Session, kind: str, *key: str) -> Target:
    """The place (ID), work (AGENCY, REF) or measure (ID) a comment may be about;
    NotFound for one that does not exist, is retired (a work: its agency is), or has no
    page (the city)."""
    if kind == "place":
        place = session.get(Place, key[0])
        if place is None or place.retired_at is not None or place.level == "city":
            raise NotFound(f"no place {key[0]!r}")
        return Target("place", place.id, place.name, f"/places/{place.id}")
    if kind == "work":
        work = find_work(session, *key)
        agency = session.get(Agency, work.agency_id)
        if agency is None or agency.retired_at is not None:  # its page stays, closed
            raise NotFound(f"no work {work.agency_id}/{work.ref} taking comments")
        return Target("work", work.id, work.title, f"/works/{work.agency_id}/{work.ref}")
    if kind == "measure":
        node = session.get(Node, key[0])
        if node is None or node.kind != "measure" or node.retired_at is not None:
            raise NotFound(f"no measure {key[0]!r}")
        return Target("measure", node.id, node.title, f"/measures/{node.id}")
    raise NotFound(f"no kind {kind!r}")


def target_of(session: Session, comment: Comment) -> Target | None:
    """What `comment` is about (retired ones too: the queue still names them)."""
    if comment.place_id:
        place = session.get(Place, comment.place_id)
        return Target("place", place.id, place.name, f"/places/{place.id}") if place else None
    if comment.work_id:
        work = session.get(Work, comment.work_id)
        path = f"/works/{work.agency_id}/{work.ref}" if work else ""
        return Target("work", work.id, work.title, path) if work else None
    if comment.measure_id:
        node = session.get(Node, comment.measure_id)
        return Target("measure", node.id, node.title, f"/measures/{node.id}") if node else None
    return None


# --- validation -------------------------------------------------------------------------


def clean_name(name: str) -> str:
    """The name as shown: runs of whitespace as one space; 1–100 characters."""
    name = " ".join((name or "").split())
    if not name:
        raise TrackerError("Name: enter the name to show with your comment.", field="name")
    if len(name) > NAME_MAX:
        raise TrackerError(
            f"Name: at most {NAME_MAX} characters (this one has {len(name)}).", field="name"
        )
    _no_controls(name, "Name", "name", newlines=False)
    return name


def clean_email(email: str) -> str:
    """The address, normalised; refused unless it looks like one (at most 254 characters)."""
    try:
        return valid_email(email or "")
    except TrackerError:
        raise TrackerError(
            "Email: enter an email address, such as name@example.org (it is never shown).",
            field="email",
        ) from None


def clean_text(text: str, *, label: str, field: str, limit: int) -> str:
    """A body or reason: line breaks as \\n, trimmed, 1–`limit` characters, and no
    control character besides the line break."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise TrackerError(f"{label}: it is empty.", field=field)
    if len(text) > limit:
        raise TrackerError(
            f"{label}: at most {limit:,} characters (this one has {len(text):,}).", field=field
        )
    _no_controls(text, label, field, newlines=True)
    return text


def _no_controls(text: str, label: str, field: str, *, newlines: bool) -> None:
    for char in text:
        if (newlines and char == "\n") or unicodedata.category(char) not in ("Cc", "Zl", "Zp"):
            continue
        raise TrackerError(
            f"{label}: it holds a control character (U+{ord(char):04X}); "
            "only letters, numbers, punctuation and line breaks are allowed.",
            field=field,
        )


# --- writing ----------------------------------------------------------------------------


def submit_comment(
    session: Session,
    *,
    target: Target,
    author_name: str,
    email: str,
    body: str,
    settings: Settings,
    now: datetime | None = None,
) -> Comment:
    """Store a comment as pending and queue the author's acknowledgement (the caller
    commits). TrackerError (400, naming the field) for a bad name, email or body."""
    name = clean_name(author_name)
    address = clean_email(email)
    text = clean_text(body, label="Comment", field="body", limit=BODY_MAX)
    comment = Comment(
        author_name=name,
        email=address,
        body=text,
        status="pending",
        created_at=now or utcnow(),
        **target.columns(),
    )
    session.add(comment)
    session.flush()
    _mail(
        session,
        comment,
        target,
        settings,
        kind="comment.received",
        subject=f"Your comment on {target.name} awaits moderation",
        text=(
            f"Thank you for your comment on {target.name} on the Rebuild tracker.\n\n"
            "Every comment is read by the city's moderators before it is shown. We will "
            "write again when yours is published, or to say why it was not.\n\n"
            f"What you wrote:\n\n{_quoted(text)}\n\n"
            f"{target.name}: {link(target.path, settings=settings)}\n"
        ),
    )
    return comment


def publish(
    session: Session,
    comment_id: int,
    user_id: int,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> Comment:
    """Publish a pending comment, or keep a reported one published (its reports back to
    0). The author is mailed when a comment first goes up. Audited."""
    comment = _get(session, comment_id)
    if comment.status == "rejected":
        raise TrackerError("This comment was rejected; it cannot be published.", status=409)
    if comment.status == "published" and not comment.reports:
        raise TrackerError("This comment is already published.", status=409)
    now = now or utcnow()
    old = {"status": comment.status, "reports": comment.reports}
    first = comment.status == "pending"
    comment.status = "published"
    comment.reports = 0
    comment.moderated_by, comment.moderated_at = user_id, now
    if first:
        comment.published_at = now
    _audit(session, comment, user_id, "comment.publish", old, {"status": "published"}, now)
    target = target_of(session, comment)
    if first and target is not None:
        settings = settings or _settings()
        _mail(
            session,
            comment,
            target,
            settings,
            kind="comment.published",
            subject=f"Your comment on {target.name} is published",
            text=(
                f"Your comment on {target.name} is now on the Rebuild tracker:\n"
                f"{link(f'{target.path}#comment-{comment.id}', settings=settings)}\n\n"
                f"What you wrote:\n\n{_quoted(comment.body)}\n"
            ),
        )
    return comment


def reject(
    session: Session,
    comment_id: int,
    user_id: int,
    reason: str,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> Comment:
    """Reject a pending comment, or take down a published one, for `reason` (required,
    mailed to the author). Audited."""
    comment = _get(session, comment_id)
    reason = clean_text(reason, label="Reason", field="reason", limit=REASON_MAX)
    if comment.status == "rejected":
        raise TrackerError("This comment is already rejected.", status=409)
    now = now or utcnow()
    old = {"status": comment.status, "reports": comment.reports}
    was_published = comment.status == "published"
    comment.status = "rejected"
    comment.reason = reason
    comment.moderated_by, comment.moderated_at = user_id, now
    new = {"status": "rejected", "reason": reason}
    _audit(session, comment, user_id, "comment.reject", old, new, now)
    target = target_of(session, comment)
    if target is not None:
        settings = settings or _settings()
        done = "has been taken down" if was_published else "was not published"
        _mail(
            session,
            comment,
            target,
            settings,
            kind="comment.rejected",
            subject=f"Your comment on {target.name} {done}",
            text=(
                f"Your comment on {target.name} on the Rebuild tracker {done}.\n\n"
                f"The moderator's reason:\n\n{_quoted(reason)}\n\n"
                f"What you wrote:\n\n{_quoted(comment.body)}\n\n"
                "You are welcome to write a new comment that meets the site's rules: "
                f"{link(target.path, settings=settings)}\n"
            ),
        )
    return comment


def report(session: Session, comment_id: int) -> None:
    """Count one "report this comment" on a published comment (NotFound for any other),
    which puts it back in the moderation queue."""
    counted = session.execute(
        update(Comment)
        .where(Comment.id == comment_id, Comment.status == "published")
        .values(reports=Comment.reports + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not counted:
        raise NotFound(f"no published comment {comment_id}")


# --- reading ----------------------------------------------------------------------------


def published_comment(session: Session, comment_id: int) -> Comment:
    """A published comment; NotFound for a pending, rejected or unknown one."""
    comment = session.get(Comment, comment_id)
    if comment is None or comment.status != "published":
        raise NotFound(f"no published comment {comment_id}")
    return comment


def published_for(
    session: Session,
    *,
    place_id: str | None = None,
    work_id: int | None = None,
    measure_id: str | None = None,
    limit: int = PAGE_MAX,
) -> list[Comment]:
    """The published comments on one place, work or measure, newest first."""
    given = [(c, v) for c, v in ((Comment.place_id, place_id), (Comment.work_id, work_id),
             (Comment.measure_id, measure_id)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise ValueError("name exactly one of place_id, work_id and measure_id")
    column, value = given[0]
    return list(
        session.scalars(
            select(Comment)
            .where(column == value, Comment.status == "published")
            .order_by(Comment.published_at.desc(), Comment.id.desc())
            .limit(limit)
        )
    )


def queue(session: Session, *, limit: int = QUEUE_MAX) -> list[QueueItem]:
    """Comments waiting for an official, oldest first: pending ones, and published ones
    reported since they were last moderated."""
    rows = session.scalars(
        select(Comment)
        .where(
            or_(
                Comment.status == "pending",
                and_(Comment.status == "published", Comment.reports > 0),
            )
        )
        .order_by(Comment.created_at, Comment.id)
        .limit(limit)
    ).all()
    return [QueueItem(comment, target_of(session, comment)) for comment in rows]


# --- helpers ----------------------------------------------------------------------------


def _get(session: Session, comment_id: int) -> Comment:
    # Locked for this transaction: a publish and a reject at once cannot both go through.
    comment = session.get(Comment, comment_id, with_for_update=True)
    if comment is None:
        raise NotFound(f"no comment {comment_id}")
    return comment


def _audit(session, comment: Comment, user_id: int, action: str, old, new, now) -> None:
    """The moderation as an AuditEvent (the name and body stay out: the resident may
    delete them; the email never goes in)."""
    session.add(
        AuditEvent(
            at=now,
            user_id=user_id,
            channel="web",
            action=action,
            entity_id=f"comment/{comment.id}",
            place_id=comment.place_id,
            measure_id=comment.measure_id,
            old=old,
            new=new,
        )
    )


def _mail(session, comment: Comment, target: Target, settings, *, kind, subject, text) -> None:
    if not comment.email:
        return
    mine = me_link(session, comment.email, settings=settings)
    body = (
        f"Hello {comment.author_name},\n\n{text}"
        f"\n--\nWhat the tracker holds about you, and deleting it (your comments too): {mine}\n"
    )
    # A work's title may hold line breaks; a subject is one line (mail refuses others).
    subject = " ".join(subject.split())
    queue_mail(session, kind=kind, to=comment.email, subject=subject, body=body,
               headers={"Auto-Submitted": "auto-generated"})  # fmt: skip


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.split("\n"))


def _settings() -> Settings:
    from tracker.mail import _app_settings

    return _app_settings()
