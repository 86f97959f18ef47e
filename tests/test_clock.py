"""Today in the city and UTC time text (tracker/clock.py)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tracker.clock import DEFAULT_TIMEZONE, city_timezone, city_today, today_in, utc_iso
from tracker.models import Place, utcnow


def _city(place_id: str, zone: str | None, *, retired: bool = False) -> Place:
    return Place(
        id=place_id,
        name=place_id,
        level="city",
        search_key=place_id,
        timezone=zone,
        geometry="{}",
        display_geometry="{}",
        label_lon=0,
        label_lat=0,
        min_lon=0,
        min_lat=0,
        max_lon=0,
        max_lat=0,
        retired_at=utcnow() if retired else None,
    )


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 3, 1, 12, 30, 5, 999, tzinfo=UTC), "2026-03-01T12:30:05Z"),
        (datetime(2026, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=13))), "2026-03-01T12:00:00Z"),
        (datetime(2026, 3, 1, 12, 0), "2026-03-01T12:00:00Z"),  # naive: taken as UTC
    ],
)
def test_a_time_is_written_in_utc_with_z(moment, text):
    assert utc_iso(moment) == text


def test_without_a_city_the_default_timezone_holds(session):
    assert city_timezone(session) == DEFAULT_TIMEZONE


def test_a_retired_city_row_does_not_set_the_timezone(session):
    session.add(_city("old", "Europe/London", retired=True))
    session.add(_city("chc", "Pacific/Chatham"))
    session.commit()
    assert city_timezone(session) == "Pacific/Chatham"
    before = today_in("Pacific/Chatham")
    assert city_today(session) in {before, today_in("Pacific/Chatham")}  # midnight between
