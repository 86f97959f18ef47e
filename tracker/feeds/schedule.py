"""Feed schedules: a feed's `every` or `cron` as an APScheduler trigger in the city's
timezone (cron weekdays renumbered for APScheduler), and when a feed is next due.
"""

import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tracker.models import Feed

WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
EVERY = re.compile(r"([0-9]+)([mhd])")


def every_interval(every: str) -> timedelta:
    """The interval an `every` value names: 30m, 6h, 1d."""
    number, unit = EVERY.fullmatch(every).groups()
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: int(number)})


def feed_trigger(feed: Feed, timezone: str, jitter: int | None = None) -> BaseTrigger:
    """The APScheduler trigger of a feed's `every` or `cron`, in the city's timezone."""
    if feed.every:
        seconds = every_interval(feed.every).total_seconds()
        return IntervalTrigger(seconds=seconds, timezone=timezone, jitter=jitter)
    minute, hour, day, month, weekday = feed.cron.split()
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_cron_weekdays(weekday),
        timezone=timezone,
        jitter=jitter,
    )


def _cron_weekdays(field: str) -> str:
    """A cron weekday field (0 or 7 = Sunday) in APScheduler's numbering (0 = Monday).

    APScheduler's own from_crontab keeps the numbers as they are, so "1-5" would run
    Tuesday to Saturday; ranges and steps are expanded to a list of days first.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            low, high = (_weekday(side) for side in base.split("-"))
        else:
            low = _weekday(base)
            high = 6 if step else low  # "5/2": from Friday on, every second day
        days.update(range(low, high + 1, int(step or 1)))
    return ",".join(str((day - 1) % 7) for day in sorted(days))


def _weekday(text: str) -> int:
    """A cron weekday, number (0-7) or name (sun-sat), as 0-7."""
    return WEEKDAYS.index(text.lower()) if text.lower() in WEEKDAYS else int(text)


def next_due(feed: Feed, after: datetime, timezone: str) -> datetime:
    """When a feed whose last run started at `after` is next due (jitter aside), in UTC."""
    if feed.every:
        return (after + every_interval(feed.every)).astimezone(UTC)
    trigger = feed_trigger(feed, timezone)
    return trigger.get_next_fire_time(None, after + timedelta(seconds=1)).astimezone(UTC)
