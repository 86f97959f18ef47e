"""What the tracker holds for a resident's email, and deleting it (`/me/KEY`).

Every mail to a resident carries a "your data" link (me_link). Its key is an HMAC of the
email under the site's secret key, so the URL never holds the address itself; the
ResidentKey row (the key's SHA-256 and the email) turns a key back into its email.

The resident's rows are found generically: every table with an `email` column (comments,
challenges, alerts, problem reports … as the parts that add them appear), except staff
accounts. Deleting removes the rows, and first any rows of other tables that point at
them (a report of a comment, say); a problem report is the agency's record, so only its
email goes (ANONYMISED). Mail queued or sent to the address goes too.
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, delete, inspect, select, update
from sqlmodel import Session, SQLModel

from tracker.errors import NotFound
from tracker.models import AuditEvent, OutboxMail, Place, ResidentKey, Street
from tracker.settings import Settings

# Tables whose rows stay when their resident asks to be forgotten: the email and name go.
ANONYMISED = frozenset({"report", "problemreport"})
NOT_RESIDENTS = frozenset({"user"})  # staff accounts have an email too: not residents'
LABELS = {
    "subscription": "Email alert",
    "comment": "Comment",
    "challenge": "“This isn't finished” note",
    "report": "Problem report",
    "problemreport": "Problem report",
    "residentkey": "Your data link",
}
_TEXT_COLUMNS = ("body", "description", "note", "title")


@dataclass(frozen=True)
class Held:
    """One row the tracker holds for the resident, as the /me page lists it."""

    table: str
    id: str
    label: str
    about: str  # what it is about: a place, a street, or the start of its text
    created_at: datetime | None
    kept: bool  # deleting keeps the row and removes only the email (a problem report)

    @property
    def item(self) -> str:
        return f"{self.table}:{self.id}"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def resident_key(email: str, *, settings: Settings) -> str:
    """The /me key for `email`: the same for every mail, different under another secret."""
    digest = hmac.new(
        settings.resolved_secret_key().encode(),
        b"tracker.residents.me:" + normalise_email(email).encode(),
        hashlib.sha256,
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def me_link(session: Session, email: str, *, settings: Settings | None = None) -> str:
    """The absolute "your data" URL for `email`, for the foot of every mail to a resident
    (its ResidentKey row goes with the caller's transaction)."""
    from tracker.mail import _app_settings, link

    settings = settings or _app_settings()
    key = resident_key(email, settings=settings)
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    if session.get(ResidentKey, key_hash) is None:
        session.add(ResidentKey(key_hash=key_hash, email=normalise_email(email)))
        session.flush()
    return link(f"/me/{key}", settings=settings)


def email_for_key(session: Session, key: str) -> str:
    """The email a /me key stands for; NotFound for an unknown or deleted key."""
    row = session.get(ResidentKey, hashlib.sha256(key.encode()).hexdigest()[:64])
    if row is None:
        raise NotFound("This link is not valid any more: its data may have been deleted.")
    return row.email


def held_for(session: Session, email: str) -> list[Held]:
    """Everything the tracker holds for `email`, table by table."""
    email = normalise_email(email)
    places = dict(session.execute(select(Place.id, Place.name)).all())
    streets: dict[str, str] = {}
    held = []
    for table in resident_tables(session):
        if table.name == "residentkey":
            continue
        for row in session.execute(select(table).where(table.c.email == email)).mappings():
            about = ""
            if row.get("place_id"):
                about = places.get(row["place_id"], row["place_id"])
            elif row.get("street_id"):
                if not streets:
                    streets = dict(session.execute(select(Street.id, Street.name)).all())
                about = streets.get(row["street_id"], row["street_id"])
            text = next((row[c] for c in _TEXT_COLUMNS if row.get(c)), "")
            if text:
                about = f"{about}: {_excerpt(text)}" if about else _excerpt(text)
            held.append(
                Held(
                    table=table.name,
                    id=str(_key_of(table, row)),
                    label=LABELS.get(table.name, table.name.capitalize()),
                    about=about,
                    created_at=row.get("created_at"),
                    kept=table.name in ANONYMISED,
                )
            )
    return held


def forget(session: Session, email: str, *, item: str | None = None) -> int:
    """Delete one held row (`item` as "table:id") or, without it, everything held for
    `email`; return the rows touched. Not committed: the caller's transaction."""
    email = normalise_email(email)
    tables = {table.name: table for table in resident_tables(session)}
    touched = 0
    if item is not None:
        name, _, row_id = item.partition(":")
        table = tables.get(name)
        if table is None or name == "residentkey":
            raise NotFound("no such item")
        pk = _pk(table)
        try:
            wanted = pk.type.python_type(row_id)
        except ValueError:
            raise NotFound("no such item") from None
        condition = (table.c.email == email) & (pk == wanted)
        if not session.execute(select(pk).where(condition)).first():
            raise NotFound("no such item")
        touched = _remove(session, table, condition)
        _audit_forget(session, touched)
        return touched
    for table in tables.values():
        if table.name != "residentkey":
            touched += _remove(session, table, table.c.email == email)
    touched += session.execute(delete(OutboxMail).where(OutboxMail.to_address == email)).rowcount
    # The link itself last: after this it opens nothing.
    touched += session.execute(delete(ResidentKey).where(ResidentKey.email == email)).rowcount
    _audit_forget(session, touched)
    return touched


def _audit_forget(session: Session, rows: int) -> None:
    """A deletion in the audit trail, with no trace of whose: it also moves the data
    stamp, so no cached page keeps a deleted comment or challenge."""
    session.add(AuditEvent(channel="web", action="resident.forget", entity_id="resident",
                           new={"rows": rows}))  # fmt: skip


def resident_tables(session: Session | None = None) -> list[Table]:
    """Every table with an `email` column that holds residents' data (with a session:
    only those the database has, so a model whose migration is still to come is skipped)."""
    tables = [
        table
        for table in SQLModel.metadata.sorted_tables
        if "email" in table.c and table.name not in NOT_RESIDENTS
    ]
    if session is None:
        return tables
    present = set(inspect(session.connection()).get_table_names())
    return [table for table in tables if table.name in present]


def _remove(session: Session, table: Table, condition) -> int:
    if table.name in ANONYMISED:  # the row stays, with neither the email nor the name
        gone = {"email": None} | ({"name": ""} if "name" in table.c else {})
        return session.execute(update(table).where(condition).values(gone)).rowcount
    pk = _pk(table)
    ids = select(pk).where(condition).scalar_subquery()
    present = set(inspect(session.connection()).get_table_names())
    for other in SQLModel.metadata.sorted_tables:
        if other.name not in present:
            continue
        for fk in other.foreign_keys:
            if fk.column.table is table and fk.parent.table is other:
                if fk.parent.nullable and other.name in ANONYMISED:
                    session.execute(
                        update(other).where(fk.parent.in_(ids)).values({fk.parent.name: None})
                    )
                else:
                    session.execute(delete(other).where(fk.parent.in_(ids)))
    return session.execute(delete(table).where(condition)).rowcount


def _pk(table: Table):
    (column,) = table.primary_key.columns
    return column


def _key_of(table: Table, row) -> object:
    return row[_pk(table).name]


def _excerpt(text: str, size: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= size else text[: size - 1] + "…"
