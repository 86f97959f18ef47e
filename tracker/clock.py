"""Time in the city: today's date in its timezone, and times as UTC text.

The one home for both, so the roll-up, the write path, feeds and the API agree on which
day it is in Christchurch and on how a time is written (CONTRACT §2, §4).
"""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session

from tracker.models import Place

DEFAULT_TIMEZONE = "Pacific/Auckland"  # until the tree names the city's timezone


def utc_iso(moment: datetime) -> str:
    """A time as UTC ISO 8601 with Z (CONTRACT §4).

    Stored times come back aware on every database (the columns are UTCDateTime, which
    adds UTC where SQLite keeps no offset); a naive time can only be one built in code,
    and is taken as UTC.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_time(moment: datetime, timezone: str) -> datetime:
    """A stored time in the city's timezone, for pages (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(timezone))


def city_timezone(session: Session) -> str:
    """The city's timezone (CONTRACT §2), which schedules and report dates follow."""
    timezone = session.scalar(
        select(Place.timezone).where(Place.level == "city", Place.retired_at.is_(None))
    )
    return timezone or DEFAULT_TIMEZONE


def city_today(session: Session) -> date:
    """Today in the city's timezone, so an evening entry in Christchurch is not "future"."""
    return today_in(city_timezone(session))


def today_in(timezone: str) -> date:
    """Today in `timezone` (an IANA name)."""
    return datetime.now(ZoneInfo(timezone)).date()


__all__ = ["DEFAULT_TIMEZONE", "city_timezone", "city_today", "local_time", "today_in", "utc_iso"]
