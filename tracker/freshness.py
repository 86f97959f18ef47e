"""How fresh the data is: when the last submission arrived, and a stamp that moves with
every change a page could show (a new batch, a tree or boundary change)."""

import hashlib
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from tracker.models import Batch, Node, Place


def last_received(session: Session) -> datetime | None:
    """When the latest accepted batch (any agency, any channel) was received, in UTC."""
    return session.scalar(select(func.max(Batch.received_at)))


def data_stamp(session: Session) -> str:
    """A short text that changes whenever stored figures, works, the tree or the live places
    change: pages key their rendered maps by it."""
    batch = session.scalar(select(func.max(Batch.id)))
    versions = session.execute(
        select(func.sum(Node.definition_version), func.sum(Node.data_version))
    ).one()
    places = session.execute(select(Place.id, Place.retired_at).order_by(Place.id)).all()
    digest = hashlib.sha256(repr((batch, tuple(versions), places)).encode()).hexdigest()
    return digest[:16]
