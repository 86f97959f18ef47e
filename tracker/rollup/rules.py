"""CONTRACT §3 on plain numbers: expected progress, progress, status, staleness, forecast
and aggregation. No database here; exact fractions, so a figure exactly on a band's edge
always falls on the same side.
"""

import calendar
import math
from collections.abc import Iterable
from datetime import date, timedelta
from fractions import Fraction
from itertools import pairwise

HISTORY = 6  # observation dates a forecast looks back over (rule 9)
ON_TRACK_BAND = Fraction(1, 20)
AT_RISK_BAND = Fraction(3, 20)
FREQUENCY_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def expected_progress(
    start: date, due: date, milestones: Iterable[tuple[date, float]], on: date
) -> Fraction:
    """Rule 5: piecewise linear in days through (start, 0), the milestones and (due, 1)."""
    if on < start:
        return Fraction(0)
    if on >= due:
        return Fraction(1)
    points = [(start, Fraction(0)), *((d, Fraction(p)) for d, p in milestones), (due, Fraction(1))]
    for (x0, p0), (x1, p1) in pairwise(points):
        if x0 <= on < x1:
            return p0 + (p1 - p0) * Fraction((on - x0).days, (x1 - x0).days)
    return Fraction(1)


def progress(value: float | None, baseline: float | None, target: float | None) -> Fraction | None:
    """Rule 4: clamp((V − B) / (T − B), 0, 1); when T = B, 1 if V = T else 0."""
    if value is None or baseline is None or target is None:
        return None
    v, b, t = Fraction(value), Fraction(baseline), Fraction(target)
    if t == b:
        return Fraction(1 if v == t else 0)
    return min(max((v - b) / (t - b), Fraction(0)), Fraction(1))


def status(p: Fraction | None, e: Fraction | None, *, value_without_target: bool = False) -> str:
    """Rule 7, comparing exact values."""
    if p is None:
        return "no_target" if value_without_target else "no_data"
    if p >= 1:
        return "complete"
    if e is None:
        return "no_data"
    if p >= e - ON_TRACK_BAND:
        return "on_track"
    if p >= e - AT_RISK_BAND:
        return "at_risk"
    return "off_track"


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day if shorter)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def stale_before(on: date, frequency: str) -> date:
    """Rule 8: an observation dated before this day is stale on `on` (twice the frequency)."""
    try:
        if frequency == "weekly":
            return on - timedelta(days=14)
        return months_before(on, 2 * FREQUENCY_MONTHS[frequency])
    except (OverflowError, ValueError):
        return date.min  # `on` is in the first weeks of year 1: nothing can be older


def forecast(
    points: Iterable[tuple[date, float]],
    *,
    value: float | None,
    target: float | None,
    progress_now: Fraction | None,
) -> date | None:
    """Rule 9: the first whole day on or after the least-squares line reaches the target."""
    points = sorted(points)[-HISTORY:]
    if len(points) < 3 or progress_now is None or progress_now >= 1:
        return None
    if value is None or target is None:
        return None
    origin = points[0][0]
    xs = [Fraction((d - origin).days) for d, _ in points]
    ys = [Fraction(v) for _, v in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    gap = Fraction(target) - Fraction(value)
    if slope == 0 or (slope > 0) != (gap > 0):
        return None
    reach = mean_x + (Fraction(target) - mean_y) / slope
    try:
        return origin + timedelta(days=math.ceil(reach))
    except OverflowError:
        return None  # the line reaches the target outside the calendar (years 1–9999)


def aggregate(how: str, values: list[float]) -> float | None:
    """A measure's `aggregate` over places' values; None over no values."""
    if not values:
        return None
    if how == "sum":
        return math.fsum(values)
    if how == "mean":
        return math.fsum(values) / len(values)
    return min(values) if how == "min" else max(values)
