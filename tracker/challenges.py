""" "This isn't finished": a resident says a work marked complete is not, and the agency
that owns the work answers.

submit_challenge is the one write path for a resident's challenge. It is accepted only
on a work whose status is complete; it queues an acknowledgement to the resident (with
the "your data" link) and one mail to each active staff account of the owning agency
(the resident's email is in none of those).

What is public, and when: a resident's note is their own text, published by nobody yet,
so until the agency answers, the work page shows only how many residents say the work
is not finished and on which days. Answering publishes the note and the answer together
(the agency read the note before answering it). An abusive challenge the agency hides
instead: never shown, still listed for the agency as hidden. So the agency is the
moderator, and there is no second queue for anyone else to watch.

Only the owning agency answers or hides; a challenge of another agency's work is
"not found" to it, the same as one that does not exist.
"""

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from tracker.alerts import valid_email
from tracker.clock import city_timezone, local_time
from tracker.errors import NotFound, TrackerError
from tracker.mail import link, queue_mail
from tracker.models import Agency, AuditEvent, Challenge, User, Work, utcnow
from tracker.residents import me_link
from tracker.settings import Settings

NOTE_MAX = 2000  # characters of a note, and of an answer
LOCATION_MAX = 300
NAME_MAX = 100
CLOSED_SHOWN = 100  # answered and hidden challenges the agency's list shows, newest first
STATUSES = ("open", "answered", "hidden")


@dataclass(frozen=True)
class Answered:
    """An answered challenge as the work page shows it (no email: it never leaves here)."""

    note: str
    location: str | None
    author_name: str
    created_at: datetime  # in the city's time
    answer: str
    answered_at: datetime  # in the city's time


@dataclass(frozen=True)
class WorkChallenges:
    """What the work page shows: the days open challenges were made (not their notes),
    and the answered ones in full."""

    open_dates: list[datetime]  # in the city's time, oldest first
    answered: list[Answered]  # oldest first


@dataclass(frozen=True)
class AgencyChallenge:
    """A challenge as its agency's list shows it (no email)."""

    id: int
    work_ref: str
    work_title: str
    note: str
    location: str | None
    author_name: str
    created_at: datetime
    status: str
    answer: str | None
    answered_at: datetime | None


def submit_challenge(
    session: Session,
    work: Work,
    *,
    note: str,
    location: str | None,
    author_name: str,
    email: str,
    settings: Settings,
) -> Challenge:
    """Store a resident's challenge of `work` and queue its mails (not committed).

    TrackerError naming the field for bad input; 409 when the work is not marked complete;
    NotFound when its agency is retired (nobody is there to answer).
    """
    agency = session.get(Agency, work.agency_id)
    if agency is None or agency.retired_at is not None:
        raise NotFound(f"no work {work.agency_id}/{work.ref} taking challenges")
    if work.status != "complete":
        raise TrackerError(
            "This work is not marked complete, so it cannot be challenged as unfinished.",
            status=409,
        )
    note = _long_text(note, field="Note", what="say what is not finished")
    location = _line(location or "", field="Where", limit=LOCATION_MAX, required=False)
    author_name = _line(author_name, field="Your name", limit=NAME_MAX, required=True)
    try:
        email = valid_email(email)
    except TrackerError:
        raise TrackerError(
            "Your email: enter an address, such as name@example.org.", status=400
        ) from None
    challenge = Challenge(
        work_id=work.id,
        note=note,
        location=location or None,
        author_name=author_name,
        email=email,
    )
    session.add(challenge)
    session.flush()
    title = _one_line(work.title)
    yours = me_link(session, email, settings=settings)
    page = link(_work_path(work), settings=settings)
    where = f"\nWhere: {location}\n" if location else ""
    queue_mail(
        session,
        kind="challenge.received",
        to=email,
        subject=f"Your note: {title} isn't finished",
        body=(
            f"Thank you, {author_name}. You told the Rebuild tracker that this work, marked "
            f"complete, is not finished:\n\n{title}\n{page}\n\nYour note:\n{note}\n{where}\n"
            "The agency responsible has been told. The work page now says that a resident "
            "says it is not finished; your note is shown there, with the agency's answer, "
            "once the agency answers. We will mail you the answer.\n\n"
            f"See or delete what the tracker holds about you: {yours}\n"
        ),
    )
    for address in agency_addresses(session, work.agency_id):
        queue_mail(
            session,
            kind="challenge.agency",
            to=address,
            subject=f"A resident says {title} isn't finished",
            body=(
                f"{author_name} says this work, marked complete, is not finished:\n\n"
                f"{title} ({work.agency_id}/{work.ref})\n{page}\n\nTheir note:\n{note}\n"
                f"{where}\nAnswer it, or hide it if it is abusive, on the Challenges tab: "
                f"{link('/agency/challenges', settings=settings)}\n"
                "The note is shown on the work page only with your answer.\n"
            ),
        )
    return challenge


def answer(
    session: Session, challenge_id: int, *, agency_id: str, user_id: int, answer: str
) -> Challenge:
    """The owning agency's answer: published with the note; the resident is mailed it.

    NotFound for a challenge that is not this agency's; 409 unless it is open.
    """
    challenge, work = _own(session, challenge_id, agency_id)
    if challenge.status != "open":
        raise TrackerError(f"This challenge is already {challenge.status}.", status=409)
    text = _long_text(answer, field="Answer", what="write the answer")
    challenge.status, challenge.answer = "answered", text
    challenge.answered_at, challenge.answered_by = utcnow(), user_id
    _audit(session, challenge, work, user_id, "challenge.answer", "open", "answered")
    if challenge.email:
        title, yours = _one_line(work.title), me_link(session, challenge.email)
        queue_mail(
            session,
            kind="challenge.answered",
            to=challenge.email,
            subject=f"An answer about {title}",
            body=(
                f"You told the Rebuild tracker that {title} is not finished. The agency "
                f"answered:\n\n{text}\n\nYour note and this answer are now shown on the work's "
                f"page: {link(_work_path(work))}\n\n"
                f"See or delete what the tracker holds about you: {yours}\n"
            ),
        )
    return challenge


def hide(session: Session, challenge_id: int, *, agency_id: str, user_id: int) -> Challenge:
    """Hide a challenge (abusive, say): never shown publicly again. NotFound for a
    challenge that is not this agency's."""
    challenge, work = _own(session, challenge_id, agency_id)
    if challenge.status != "hidden":
        # Who answered stays on the row; who hid it, and when, is the audit event's.
        _audit(session, challenge, work, user_id, "challenge.hide", challenge.status, "hidden")
        challenge.status = "hidden"
    return challenge


def _audit(session, challenge: Challenge, work: Work, user_id: int, action, old, new) -> None:
    """An agency's answer or hiding, in the audit trail (no resident's words or email)."""
    session.add(
        AuditEvent(
            user_id=user_id,
            agency_id=work.agency_id,
            channel="web",
            action=action,
            entity_id=f"challenge/{challenge.id}",
            place_id=work.main_place_id,
            old={"status": old},
            new={"status": new},
        )
    )


def for_work(session: Session, work_id: int) -> WorkChallenges:
    """What the work page shows of the work's challenges (hidden ones never)."""
    rows = session.scalars(
        select(Challenge)
        .where(Challenge.work_id == work_id, Challenge.status != "hidden")
        .order_by(Challenge.created_at, Challenge.id)
    ).all()
    if not rows:
        return WorkChallenges(open_dates=[], answered=[])
    zone = city_timezone(session)
    return WorkChallenges(
        open_dates=[local_time(c.created_at, zone) for c in rows if c.status == "open"],
        answered=[
            Answered(
                note=c.note,
                location=c.location,
                author_name=c.author_name,
                created_at=local_time(c.created_at, zone),
                answer=c.answer or "",
                answered_at=local_time(c.answered_at or c.created_at, zone),
            )
            for c in rows
            if c.status == "answered"
        ],
    )


def open_for_agency(session: Session, agency_id: str) -> list[AgencyChallenge]:
    """The open challenges of the agency's works, oldest first."""
    return _for_agency(session, agency_id, Challenge.status == "open", newest_first=False)


def closed_for_agency(
    session: Session, agency_id: str, *, limit: int = CLOSED_SHOWN
) -> list[AgencyChallenge]:
    """The agency's answered and hidden challenges, newest first, at most `limit`."""
    return _for_agency(
        session, agency_id, Challenge.status != "open", newest_first=True, limit=limit
    )


def agency_addresses(session: Session, agency_id: str) -> list[str]:
    """The emails of the agency's active staff accounts, the agency's contact address
    when it has none (so a challenge always reaches someone if anyone can be reached)."""
    addresses = session.scalars(
        select(User.email)
        .where(User.role == "agency", User.agency_id == agency_id, User.disabled_at.is_(None))
        .order_by(User.id)
    ).all()
    if addresses:
        return list(addresses)
    from tracker.models import Agency

    agency = session.get(Agency, agency_id)
    return [agency.email] if agency is not None and agency.email else []


# --- helpers ------------------------------------------------------------------------------


def _own(session: Session, challenge_id: int, agency_id: str) -> tuple[Challenge, Work]:
    # Locked for this transaction: two staff answering at once cannot both answer.
    challenge = session.get(Challenge, challenge_id, with_for_update=True)
    work = session.get(Work, challenge.work_id) if challenge is not None else None
    if challenge is None or work is None or work.agency_id != agency_id:
        raise NotFound("No such challenge of your agency's works.")
    return challenge, work


def _for_agency(session, agency_id, condition, *, newest_first, limit=None):
    order = (
        (Challenge.created_at.desc(), Challenge.id.desc())
        if newest_first
        else (
            Challenge.created_at,
            Challenge.id,
        )
    )
    query = (
        select(Challenge, Work.ref, Work.title)
        .join(Work, Work.id == Challenge.work_id)
        .where(Work.agency_id == agency_id, condition)
        .order_by(*order)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        AgencyChallenge(
            id=c.id,
            work_ref=ref,
            work_title=title,
            note=c.note,
            location=c.location,
            author_name=c.author_name,
            created_at=c.created_at,
            status=c.status,
            answer=c.answer,
            answered_at=c.answered_at,
        )
        for c, ref, title in session.execute(query).all()
    ]


def _work_path(work: Work) -> str:
    return f"/works/{work.agency_id}/{work.ref}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _controls(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text) or any(
        ch in text for ch in ("\u2028", "\u2029")
    )


def _long_text(text: str, *, field: str, what: str) -> str:
    """A note or an answer: 1 to NOTE_MAX characters, lines kept, no control characters
    but the line break."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise TrackerError(f"{field}: {what}.", status=400)
    if len(text) > NOTE_MAX:
        raise TrackerError(
            f"{field}: at most {NOTE_MAX:,} characters (this has {len(text):,}).", status=400
        )
    if _controls(text, allowed="\n"):
        raise TrackerError(f"{field}: remove the control characters.", status=400)
    return text


def _line(text: str, *, field: str, limit: int, required: bool) -> str:
    """One line of text, runs of whitespace as one space, no control characters."""
    if _controls(text, allowed="\t\n\r"):
        raise TrackerError(f"{field}: remove the control characters.", status=400)
    text = " ".join(text.split())
    if required and not text:
        raise TrackerError(f"{field}: this is needed.", status=400)
    if len(text) > limit:
        raise TrackerError(f"{field}: at most {limit} characters.", status=400)
    return text
