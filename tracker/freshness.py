"""How fresh the data is: when the last submission arrived, and a stamp that moves with
every change a page could show (a new batch, a tree, place, street or agency change,
a published comment, a challenge or answer, a problem report or its update)."""

import hashlib
from datetime import datetime

from sqlalchemy import func, select, text
from sqlmodel import Session

from tracker.models import Batch


def last_received(session: Session) -> datetime | None:
    """When the latest accepted batch (any agency, any channel) was received, in UTC."""
    return session.scalar(select(func.max(Batch.received_at)))


def _names(table: str, key: str, dialect: str) -> str:
    """SQL for every `key=name` of `table` as one text, in key order: a renamed row moves
    it, whatever the new name's length."""
    if dialect == "postgresql":
        return f"(SELECT string_agg({key} || '=' || name, '|' ORDER BY {key}) FROM {table})"
    return (
        f"(SELECT group_concat({key} || '=' || name, '|')"
        f" FROM (SELECT {key}, name FROM {table} ORDER BY {key}))"
    )


def _stamp_facts(dialect: str):
    return text(
        "SELECT (SELECT max(id) FROM batch), (SELECT sum(definition_version) FROM node),"
        " (SELECT sum(data_version) FROM node), (SELECT count(*) FROM agency),"
        f" (SELECT max(retired_at) FROM agency), {_names('agency', 'id', dialect)},"
        # The city's timezone (its dates and times on every page) changes only with
        # `tracker init`, which moves no version when only that changed.
        " (SELECT max(timezone) FROM place WHERE level = 'city' AND retired_at IS NULL),"
        # Every staff decision a page shows (a comment published or rejected, a challenge
        # answered or hidden, a report updated) and every "forget me" is an audit event:
        # their ids only grow, so the stamp never returns to a value a cached page was
        # made under.
        " (SELECT max(id) FROM auditevent),"
        # What residents add before anyone decides: a challenge (its count shows at once),
        # a report (public at once); published comments, which a deletion also takes away.
        " (SELECT count(*) FROM challenge), (SELECT count(*) FROM report),"
        " (SELECT max(updated_at) FROM report),"
        " (SELECT count(*) FROM comment WHERE status = 'published'),"
        # Report categories (names on report pages) change only with `tracker init`.
        f" (SELECT count(*) FROM reportcategory), {_names('reportcategory', 'code', dialect)},"
        " (SELECT max(retired_at) FROM reportcategory)"
    )


# Plain SQL, built once a dialect: this runs on every page view, and building the
# statement each time cost more than running it.
_STAMP_FACTS = {dialect: _stamp_facts(dialect) for dialect in ("sqlite", "postgresql")}


def data_stamp(session: Session) -> str:
    """A short text that changes whenever stored figures, works, the tree, the places, the
    streets or the agencies change: pages key their cached maps and HTML by it.

    One statement of aggregates, cheap enough for every page view: every write adds a
    batch; `tracker init` moves node versions when definitions, places or streets change;
    the agencies' and report categories' names (a handful of rows) and the city's
    timezone are read whole.
    """
    row = session.execute(_STAMP_FACTS[session.get_bind().dialect.name]).one()
    return hashlib.sha256(repr(tuple(row)).encode()).hexdigest()[:16]
