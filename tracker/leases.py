"""Named, expiring leases (SchedulerLease rows): who is doing something, until when.

The scheduler holds the lease named "scheduler" while it runs jobs; each feed run holds one
named after its feed while it is under way (tracker.feeds). A holder renews its lease
before it expires; a holder that stops (killed, its host gone) stops renewing, so the
lease expires and whoever looks next knows the work stopped.
"""

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, or_, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from tracker.models import SchedulerLease, utcnow

log = logging.getLogger(__name__)

NAME_LENGTH = SchedulerLease.__table__.c.name.type.length
HOLDER_LENGTH = SchedulerLease.__table__.c.holder.type.length


def take_lease(
    engine: Engine, name: str, holder: str, seconds: float, *, now: datetime | None = None
) -> bool:
    """Take the lease `name`, or renew it if `holder` has it; False while another holds it.

    Atomic on both backends: one conditional UPDATE takes over an expired lease (or
    renews our own), and the primary key lets only one INSERT create a missing one.
    """
    now = now or utcnow()
    expires = now + timedelta(seconds=seconds)
    with engine.begin() as connection:
        taken = connection.execute(
            update(SchedulerLease)
            .where(
                SchedulerLease.name == name,
                or_(SchedulerLease.expires_at < now, SchedulerLease.holder == holder),
            )
            .values(holder=holder, expires_at=expires)
        ).rowcount
    if taken:
        return True
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(SchedulerLease).values(name=name, holder=holder, expires_at=expires)
            )
    except IntegrityError:
        return False  # the row exists: another holder has the lease
    return True


def release_lease(engine: Engine, name: str, holder: str) -> None:
    """Give the lease up (if `holder` has it), so whoever waits for it goes ahead at once."""
    with engine.begin() as connection:
        connection.execute(
            delete(SchedulerLease).where(
                SchedulerLease.name == name, SchedulerLease.holder == holder
            )
        )


def live_lease(
    session: Session, name: str, *, now: datetime | None = None
) -> SchedulerLease | None:
    """The lease `name` while someone holds it; None when it is missing or expired."""
    lease = session.get(SchedulerLease, name)
    return lease if lease is not None and lease.expires_at >= (now or utcnow()) else None


class LeaseHeartbeat:
    """Renews a lease already taken every third of its term, in a thread of its own, while
    a `with` block runs; gives it up when the block ends."""

    def __init__(self, engine: Engine, name: str, holder: str, seconds: float):
        self.engine, self.name, self.holder, self.seconds = engine, name, holder, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease {name}", daemon=True)

    def __enter__(self) -> "LeaseHeartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            release_lease(self.engine, self.name, self.holder)
        except OperationalError as exc:  # it expires on its own
            log.warning("lease %s not given up: %s", self.name, exc)

    def _renew(self) -> None:
        """Renew until stopped or lost; a renewal that fails is tried again at the next beat."""
        while not self._stop.wait(self.seconds / 3):
            try:
                if not take_lease(self.engine, self.name, self.holder, self.seconds):
                    # It expired (a long pause) and another holder took it: theirs now.
                    log.warning("lease %s was taken over from %s", self.name, self.holder)
                    return
            except OperationalError as exc:  # SQLite busy past its timeout, a dropped link
                log.warning("lease %s not renewed: %s", self.name, exc)
