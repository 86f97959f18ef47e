"""Mail to residents and agencies: queued in the outbox table, sent by the scheduler.

Every mail is a row first (queue_mail, inside the caller's transaction), so a change and
the mail that tells of it are stored together or not at all, and a mail server that is
down delays mail without losing any.

send_outbox sends the rows that are due over SMTP (TRACKER_SMTP_*). A row is sent or it
stays queued: a server that is down, or answers "try later" (4xx), moves the row's
next attempt back exponentially (1 minute, 2, 4 … capped at an hour) and it is tried
until sent. A recipient the server refuses for good (5xx) is tried MAX_REFUSALS times in
all, then the row is marked failed (failed_at) and kept for the operator to read. The
same happens at once to a row whose headers are unsafe (a line break).

Each row is claimed before it is sent (its next attempt moved CLAIM_SECONDS ahead, by a
compare-and-set that works on SQLite and PostgreSQL alike), so two senders at once (the
scheduler and `tracker mail send`) never send it twice; a sender that dies between
sending and recording leaves the row to be sent again after the claim lapses, with the
same Message-ID, so mail is delivered at least once and never dropped.
"""

import email.policy
import re
import smtplib
import ssl
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import urlsplit

from sqlalchemy import Engine, case, func, select, update
from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.models import OutboxMail, utcnow
from tracker.settings import Settings

# Header values must be one line: a CR or LF would let user text add headers of its own.
_LINE_BREAKS = ("\r", "\n", "\x00", "\u2028", "\u2029", "\x85")
# A header name: RFC 5322 field-name characters, kept to the ones real headers use.
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,75}")
# Set by send_outbox itself; a row's own headers may not replace them.
_RESERVED = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "sender"}

MAX_REFUSALS = 5  # attempts for a recipient the server refuses permanently (5xx)
BACKOFF_FIRST = timedelta(minutes=1)  # after the first failure; doubled each time after
BACKOFF_CAP = timedelta(hours=1)
CLAIM_SECONDS = 300  # a claimed row is due again after this if its sender died
SEND_LIMIT = 200  # rows one send_outbox call sends at most
SMTP_TIMEOUT = 30  # seconds, for connecting and for each command


def header_value(text: str, *, field: str) -> str:
    """`text` as a safe single-line header value; TrackerError if it holds a line break."""
    if any(mark in text for mark in _LINE_BREAKS):
        raise TrackerError(f"{field}: must be a single line", status=400)
    return text.strip()


def header_name(name: str) -> str:
    """`name` if it is a plain header name that send_outbox does not set itself."""
    if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED:
        raise TrackerError(f"{name!r}: not a header a mail may set", status=400)
    return name


def queue_mail(
    session: Session,
    *,
    kind: str,
    to: str,
    subject: str,
    body: str,
    headers: dict[str, str] | None = None,
) -> OutboxMail:
    """Add a mail to the outbox (not committed: it goes with the caller's transaction)."""
    mail = OutboxMail(
        kind=kind,
        to_address=header_value(to, field="to"),
        subject=header_value(subject, field="subject")[:200],
        body=body,
        headers={
            header_name(name): header_value(v, field=name) for name, v in (headers or {}).items()
        }
        or None,
    )
    session.add(mail)
    return mail


def link(path: str, *, settings: Settings | None = None) -> str:
    """The absolute URL of `path` (a path from the site's root, such as "/places/x"),
    on TRACKER_PUBLIC_URL: for links in mail and feeds, which leave the request behind."""
    base = (settings or _app_settings()).public_url.rstrip("/")
    return f"{base}/{path.lstrip('/')}"


def _app_settings() -> Settings:
    from flask import current_app, has_app_context

    if has_app_context() and "SETTINGS" in current_app.config:
        return current_app.config["SETTINGS"]
    return Settings()


# --- sending ------------------------------------------------------------------------


def build_message(mail: OutboxMail, settings: Settings) -> EmailMessage:
    """The outbox row as a message; TrackerError if a header is unsafe.

    Every value goes through header_value again (a row written around queue_mail gets the
    same check), and the SMTP policy refuses a line break in any header besides.
    """
    domain = urlsplit(settings.public_url).hostname or "localhost"
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = header_value(settings.mail_from, field="from")
    message["To"] = header_value(mail.to_address, field="to")
    message["Subject"] = header_value(mail.subject, field="subject")
    message["Date"] = format_datetime(mail.created_at)
    # The same id on every attempt, so a mail sent twice (a sender died before it could
    # record the first) is one message to the receiving side.
    message["Message-ID"] = f"<outbox.{mail.id}.{int(mail.created_at.timestamp())}@{domain}>"
    for name, value in (mail.headers or {}).items():
        message[header_name(name)] = header_value(value, field=name)
    message.set_content(mail.body)
    return message


def send_outbox(
    session: Session, settings: Settings, *, now: datetime | None = None, limit: int = SEND_LIMIT
) -> int:
    """Send the mail that is due; return how many were sent. Commits as it goes.

    Without TRACKER_SMTP_HOST nothing is sent and every row stays queued.
    """
    if not settings.smtp_host:
        return 0
    now = now or utcnow()
    claimed = _claim(session, now=now, limit=limit)
    if not claimed:
        return 0
    try:
        smtp = _connect(settings)
    except (OSError, smtplib.SMTPException) as exc:
        for mail in claimed:
            _failed(mail, exc, now=now, permanent=False)
        session.commit()
        return 0
    sent = 0
    try:
        for index, mail in enumerate(claimed):
            try:
                message = build_message(mail, settings)
            except (TrackerError, ValueError) as exc:
                mail.attempts += 1
                mail.failed_at, mail.last_error = now, f"unsafe header: {exc}"
                session.commit()
                continue
            try:
                smtp.send_message(message, to_addrs=[mail.to_address])
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _text in exc.recipients.values()]
                _failed(mail, exc, now=now, permanent=bool(codes) and min(codes) >= 500)
            except smtplib.SMTPResponseException as exc:  # sender or data refused
                _failed(mail, exc, now=now, permanent=exc.smtp_code >= 500)
            except (OSError, smtplib.SMTPException) as exc:  # the connection is gone
                for left in claimed[index:]:
                    _failed(left, exc, now=now, permanent=False)
                session.commit()
                break
            else:
                mail.sent_at, mail.last_error = now, None
                mail.attempts += 1
                sent += 1
            session.commit()
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    return sent


def deliver(engine: Engine, settings: Settings) -> int:
    """What `tracker mail send` and the scheduler's mail job run: send what is due."""
    with Session(engine) as session:
        return send_outbox(session, settings)


def outbox_counts(session: Session) -> dict[str, int]:
    """Rows queued, sent and failed, for `tracker mail send` to report."""
    queued, sent, failed = session.execute(
        select(
            func.count(case((OutboxMail.sent_at.is_(None) & OutboxMail.failed_at.is_(None), 1))),
            func.count(OutboxMail.sent_at),
            func.count(OutboxMail.failed_at),
        )
    ).one()
    return {"queued": queued, "sent": sent, "failed": failed}


def _claim(session: Session, *, now: datetime, limit: int) -> list[OutboxMail]:
    """The due rows this sender now holds: each moved CLAIM_SECONDS ahead, if still due."""
    due = session.scalars(
        select(OutboxMail.id)
        .where(
            OutboxMail.sent_at.is_(None),
            OutboxMail.failed_at.is_(None),
            OutboxMail.next_attempt_at <= now,
        )
        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
        .limit(limit)
    ).all()
    held = now + timedelta(seconds=CLAIM_SECONDS)
    mine = []
    for mail_id in due:
        taken = session.execute(
            update(OutboxMail)
            .where(
                OutboxMail.id == mail_id,
                OutboxMail.sent_at.is_(None),
                OutboxMail.failed_at.is_(None),
                OutboxMail.next_attempt_at <= now,
            )
            .values(next_attempt_at=held)
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
        if taken:
            mine.append(mail_id)
    if not mine:
        return []
    rows = session.scalars(select(OutboxMail).where(OutboxMail.id.in_(mine))).all()
    return sorted(rows, key=lambda mail: mine.index(mail.id))


def _connect(settings: Settings) -> smtplib.SMTP:
    smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT)
    try:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _failed(mail: OutboxMail, exc: BaseException, *, now: datetime, permanent: bool) -> None:
    """Record a failed attempt: back off, or give up on a permanent refusal at the limit."""
    mail.attempts += 1
    mail.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    if permanent and mail.attempts >= MAX_REFUSALS:
        mail.failed_at = now
        return
    mail.next_attempt_at = now + backoff(mail.attempts)


def backoff(attempts: int) -> timedelta:
    """The wait after `attempts` failed attempts: 1 minute doubled each time, capped."""
    return min(BACKOFF_FIRST * 2 ** min(attempts - 1, 20), BACKOFF_CAP)
