"""Email alerts for a place or street: confirmed by a link, then a digest per period.

1. A resident asks (request_alert): a Subscription row, unconfirmed, and one mail with
   the confirmation link. Nothing else is sent to an unconfirmed address; it expires
   after CONFIRM_HOURS (run_digests deletes it).
2. The link confirms it (confirm). From then on run_digests, every time it runs (the
   scheduler every five minutes, `tracker alerts digest`), queues one digest per
   subscription whose period (TRACKER_ALERT_DIGEST_HOURS since the last one, or since
   confirming) has passed, listing the area's changes since then (tracker.atom); a
   period with no change sends nothing and a new period starts.
3. Every mail carries a one-click unsubscribe: a link, and RFC 8058's `List-Unsubscribe`
   and `List-Unsubscribe-Post` headers, so mail programs offer an unsubscribe button
   that POSTs to the same address; and the resident's "your data" link (tracker.residents).

Links carry `ID.MAC`: an HMAC under the site's secret key of the row's id and its random
nonce (Subscription.token_hash), so a link cannot be guessed or altered and dies with
its row. The email is never in a link.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, delete, func, select, update
from sqlmodel import Session

from tracker.atom import Area, Change, area_changes, find_area
from tracker.clock import city_timezone
from tracker.db import session_scope
from tracker.errors import NotFound, TrackerError
from tracker.mail import header_value, link, queue_mail
from tracker.models import Subscription, utcnow
from tracker.residents import me_link, normalise_email
from tracker.settings import Settings

CONFIRM_HOURS = 48  # an unconfirmed alert is deleted after this
DIGEST_SIZE = 50  # changes listed in one digest at most
RESEND_AFTER = timedelta(hours=1)  # asking again sooner sends no second confirmation
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s.]+")


@dataclass(frozen=True)
class DigestRun:
    queued: int  # digests queued
    quiet: int  # subscriptions due whose area had no change: nothing sent
    expired: int  # unconfirmed subscriptions deleted


def valid_email(email: str) -> str:
    """The address, normalised; TrackerError (400) if it is not one."""
    email = normalise_email(header_value(email, field="email"))
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise TrackerError("Enter an email address, such as name@example.org.", status=400)
    return email


def request_alert(
    session: Session, area: Area, email: str, *, settings: Settings, now: datetime | None = None
) -> None:
    """Ask for alerts for `area`: queue the confirmation mail (and nothing else).

    Answers the same whether or not the address already follows the area, so the form
    tells nobody who follows what. A confirmed alert is left as it is; an unconfirmed one
    gets its confirmation again, if the last was sent over RESEND_AFTER ago.
    """
    email = valid_email(email)
    now = now or utcnow()
    column = Subscription.place_id if area.kind == "place" else Subscription.street_id
    existing = session.scalars(
        select(Subscription).where(Subscription.email == email, column == area.id)
    ).first()
    if existing is not None and existing.confirmed_at is not None:
        return
    if existing is not None and not _expired(existing, now):
        if existing.created_at > now - RESEND_AFTER:
            return  # one confirmation mail an hour at most: the form cannot flood an inbox
        existing.created_at = now  # a new confirmation, a new 48 hours
    if existing is None or _expired(existing, now):
        if existing is not None:
            session.delete(existing)
        existing = Subscription(email=email, token_hash=secrets.token_hex(32), created_at=now)
        if area.kind == "place":
            existing.place_id = area.id
        else:
            existing.street_id = area.id
        session.add(existing)
        session.flush()
    confirm = link(f"/alerts/confirm/{token(existing, 'confirm', settings)}", settings=settings)
    body = (
        f"Someone, we hope you, asked for email alerts about {area.name} on the Rebuild "
        f"tracker.\n\nTo start them, open this link within {CONFIRM_HOURS} hours:\n{confirm}\n\n"
        "If it was not you, ignore this mail: nothing more will be sent, and the request "
        "is deleted when the link expires.\n"
    )
    _queue(session, existing, area, settings, kind="alert.confirm",
           subject=f"Confirm email alerts for {area.name}", body=body)  # fmt: skip


def confirm(session: Session, sent: str, *, settings: Settings, now: datetime | None = None):
    """Confirm the alert the link names; NotFound for a bad, expired or used-up link."""
    now = now or utcnow()
    subscription = subscription_for(session, sent, "confirm", settings=settings)
    if subscription.confirmed_at is None:
        if _expired(subscription, now):
            raise NotFound("This link has expired. Ask for the alerts again.")
        subscription.confirmed_at = now
    return subscription


def unsubscribe(session: Session, sent: str, *, settings: Settings) -> Subscription:
    """Delete the alert the link names (the row goes: nothing of it is kept)."""
    subscription = subscription_for(session, sent, "unsubscribe", settings=settings)
    session.delete(subscription)
    return subscription


def subscription_for(session: Session, sent: str, purpose: str, *, settings: Settings):
    """The subscription a link names; NotFound for a bad token or a deleted row."""
    sub_id, _, _mac = sent.partition(".")
    subscription = session.get(Subscription, int(sub_id)) if sub_id.isdigit() else None
    # Links mailed before a key rotation still work while the old key is a fallback.
    keys = [settings.resolved_secret_key(), *settings.fallback_keys()]
    if subscription is None or not any(
        hmac.compare_digest(sent.encode(), token(subscription, purpose, settings, key).encode())
        for key in keys
    ):
        raise NotFound("This link is not valid any more: the alert may have been stopped.")
    return subscription


def token(
    subscription: Subscription, purpose: str, settings: Settings, key: str | None = None
) -> str:
    """`ID.MAC` for a link that confirms or stops this subscription (under the current
    secret key, or `key`)."""
    message = f"tracker.alerts.{purpose}:{subscription.id}:{subscription.token_hash}"
    secret = key or settings.resolved_secret_key()
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha256)
    return f"{subscription.id}.{mac.hexdigest()[:32]}"


def area_of(session: Session, subscription: Subscription) -> Area:
    if subscription.place_id:
        return find_area(session, "place", subscription.place_id)
    return find_area(session, "street", subscription.street_id or "")


# --- digests --------------------------------------------------------------------------


def run_digests(engine: Engine, settings: Settings, *, now: datetime | None = None) -> DigestRun:
    """What `tracker alerts digest` and the scheduler's alerts job run (see the module)."""
    now = now or utcnow()
    period = timedelta(hours=settings.alert_digest_hours)
    with session_scope(engine) as session:
        expired = session.execute(
            delete(Subscription).where(
                Subscription.confirmed_at.is_(None),
                Subscription.created_at < now - timedelta(hours=CONFIRM_HOURS),
            )
        ).rowcount
    last = func.coalesce(Subscription.last_sent_at, Subscription.confirmed_at)
    with Session(engine) as session:
        due = session.execute(
            select(Subscription.id, Subscription.place_id, Subscription.street_id, last)
            .where(Subscription.confirmed_at.is_not(None), last <= now - period)
            .order_by(Subscription.id)
        ).all()
    # Each area's changes are read once a run, since the earliest of its due digests;
    # each digest then keeps those after its own last one (the newest DIGEST_SIZE of
    # them are the newest after any later time too).
    earliest: dict[tuple, datetime] = {}
    for _id, place_id, street_id, since in due:
        key = (place_id, street_id)
        earliest[key] = min(since, earliest.get(key, since))
    memo: dict[tuple, tuple[Area, list[Change]] | None] = {}
    queued = quiet = 0
    for sub_id, place_id, street_id, _since in due:
        key = (place_id, street_id)
        with session_scope(engine) as session:
            if key not in memo:
                memo[key] = _area_changes(session, place_id, street_id, earliest[key], now)
            outcome = _digest(session, sub_id, memo[key], settings, now=now, period=period)
        queued += outcome == "queued"
        quiet += outcome == "quiet"
    return DigestRun(queued=queued, quiet=quiet, expired=expired)


def _area_changes(session, place_id, street_id, since, now) -> tuple[Area, list[Change]] | None:
    """The area's changes after `since` and up to `now` (later ones go in the next digest);
    None when the place left the tree (nothing to tell until it is back)."""
    try:
        area = (
            find_area(session, "place", place_id)
            if place_id
            else find_area(session, "street", street_id or "")
        )
    except NotFound:
        return None
    changes = area_changes(session, area, since=since, limit=DIGEST_SIZE)
    return area, [change for change in changes if change.updated <= now]


def _digest(session: Session, sub_id: int, found, settings: Settings, *, now, period):
    """One subscription's digest, if it is still due; the period restarts either way."""
    subscription = session.get(Subscription, sub_id)
    if subscription is None or subscription.confirmed_at is None:
        return None
    since = subscription.last_sent_at or subscription.confirmed_at
    if since > now - period:
        return None
    # Taken by compare-and-set: a second run at the same time finds it taken.
    taken = session.execute(
        update(Subscription)
        .where(
            Subscription.id == sub_id,
            func.coalesce(Subscription.last_sent_at, Subscription.confirmed_at) == since,
        )
        .values(last_sent_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        return None
    if found is None:
        return "quiet"
    area, changes = found
    changes = [change for change in changes if change.updated > since]
    if not changes:
        return "quiet"
    zone = ZoneInfo(city_timezone(session))
    lines = [
        f"What changed in {area.name} since {since.astimezone(zone):%-d %B %Y, %-I:%M %p}:",
        "",
    ]
    for change in changes:
        lines += [
            f"* {change.title}",
            f"  {change.summary}",
            f"  {link(change.path, settings=settings)}",
            "",
        ]
    lines.append(f"All of {area.name} on the tracker: {link(area.path, settings=settings)}")
    count = len(changes)
    _queue(session, subscription, area, settings, kind="alert.digest",
           subject=f"{area.name}: {count} change{'s' if count != 1 else ''} on the Rebuild tracker",
           body="\n".join(lines) + "\n")  # fmt: skip
    return "queued"


def _queue(session, subscription, area, settings, *, kind, subject, body) -> None:
    """Queue a mail for the subscription with its unsubscribe and "your data" links."""
    stop = link(f"/alerts/unsubscribe/{token(subscription, 'unsubscribe', settings)}",
                settings=settings)  # fmt: skip
    mine = me_link(session, subscription.email, settings=settings)
    body += (
        f"\n--\nStop these alerts about {area.name} (one click): {stop}\n"
        f"What the tracker holds about you, and deleting it: {mine}\n"
    )
    queue_mail(
        session,
        kind=kind,
        to=subscription.email,
        subject=subject,
        body=body,
        headers={
            "List-Unsubscribe": f"<{stop}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
    )


def _expired(subscription: Subscription, now: datetime) -> bool:
    return subscription.confirmed_at is None and subscription.created_at < now - timedelta(
        hours=CONFIRM_HOURS
    )
