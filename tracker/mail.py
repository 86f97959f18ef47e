"""Mail to residents and agencies: queued in the outbox table, sent by the scheduler.

Every mail is a row first (queue_mail, inside the caller's transaction), so a change and
the mail that tells of it are stored together or not at all, and a mail server that is
down delays mail without losing any.
"""

from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.models import OutboxMail

# Header values must be one line: a CR or LF would let user text add headers of its own.
_LINE_BREAKS = ("\r", "\n", "\x00", "\u2028", "\u2029", "\x85")


def header_value(text: str, *, field: str) -> str:
    """`text` as a safe single-line header value; TrackerError if it holds a line break."""
    if any(mark in text for mark in _LINE_BREAKS):
        raise TrackerError(f"{field}: must be a single line", status=400)
    return text.strip()


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
        headers={name: header_value(v, field=name) for name, v in (headers or {}).items()}
        or None,
    )
    session.add(mail)
    return mail
