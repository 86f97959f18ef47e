"""Charts as server-rendered SVG: data in, SVG text out, every text escaped.

No database or request access. A chart is an image for screen readers (`role="img"`,
labelled by its `<title>` and `<desc>`); the page pairs it with a table of the same data.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

WIDTH, HEIGHT = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 80, 16, 16, 48  # room for the axes' ticks and labels
HALO = 'stroke="#fff" stroke-width="4" paint-order="stroke"'  # labels stay legible over lines
COLOURS = {
    "actual": "#0b6e4f",
    "expected": "#1d2433",
    "milestone": "#8a4b00",
    "forecast": "#5e3c99",
}


@dataclass(frozen=True)
class SeriesPoint:
    """One date of a measure's series: the value there and the value the plan expected."""

    day: date
    value: float | None
    expected: float | None


@dataclass(frozen=True)
class Milestone:
    """A planned point on the way: by `day`, `value` (in the measure's unit) and its words."""

    day: date
    value: float | None
    label: str


def svg_text(value: object) -> str:
    """Text safe inside SVG (XML) elements and attributes."""
    return escape(str(value), quote=True)


def short_date(day: date) -> str:
    """A date as pages show it: "2 Dec 2026"."""
    return f"{day.day} {day:%b %Y}"


def plain_number(value: float) -> str:
    """A number with thousands separators: whole, or to two decimals."""
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"


def progress_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    points: Sequence[SeriesPoint],
    milestones: Sequence[Milestone] = (),
    forecast: date | None = None,
    target: float | None = None,
    value_label: str = "Value",
    fmt: Callable[[float], str] = plain_number,
) -> str:
    """A line chart of a measure's actual values against the expected ones over time.

    Each point with a value is a circle (class "actual") with its own `<title>`; the
    expected values are a dashed line; milestones are diamonds; the target a thin level
    line; the forecast date a vertical line. `chart_id` prefixes the ids of the title and
    description (unique on the page). Without points there is nothing to draw: "".
    """
    if not points:
        return ""
    days = [p.day for p in points] + [m.day for m in milestones]
    if forecast is not None:
        days.append(forecast)
    first, last = min(days), max(days)
    if first == last:
        first, last = (
            date.fromordinal(first.toordinal() - 1),
            date.fromordinal(last.toordinal() + 1),
        )
    numbers = [p.value for p in points] + [p.expected for p in points]
    numbers += [m.value for m in milestones] + [target]
    numbers = [n for n in numbers if n is not None and math.isfinite(n)]
    low, high = _nice_range(min([*numbers, 0.0]), max([*numbers, 0.0]))

    def x(day: date) -> float:
        span = last.toordinal() - first.toordinal()
        return round(
            LEFT + (day.toordinal() - first.toordinal()) / span * (WIDTH - LEFT - RIGHT), 1
        )

    def y(value: float) -> float:
        return round(TOP + (high - value) / (high - low) * (HEIGHT - TOP - BOTTOM), 1)

    ids = svg_text(chart_id)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{ids}-title {ids}-desc">',
        f'<title id="{ids}-title">{svg_text(title)}</title>',
        f'<desc id="{ids}-desc">{svg_text(description)}</desc>',
    ]
    out += _axes(first, last, low, high, x, y, value_label, fmt)
    if target is not None and math.isfinite(target):
        out.append(
            f'<line class="target" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(target)}" '
            f'y2="{y(target)}" stroke="{COLOURS["expected"]}" stroke-width="1" '
            f'stroke-dasharray="1 3"><title>{svg_text(f"Target: {fmt(target)}")}</title></line>'
            f'<text class="target-label" x="{LEFT + 6}" y="{y(target) - 5}" font-size="14" '
            f'fill="{COLOURS["expected"]}" {HALO}>target {svg_text(fmt(target))}</text>'
        )
    expected = [(x(p.day), y(p.expected)) for p in points if _usable(p.expected)]
    if expected:
        out.append(
            f'<polyline class="expected" fill="none" stroke="{COLOURS["expected"]}" '
            f'stroke-width="2" stroke-dasharray="6 4" points="{_path(expected)}">'
            "<title>Expected by each date</title></polyline>"
        )
    actual = [p for p in points if _usable(p.value)]
    if actual:
        out.append(
            f'<polyline class="actual-line" fill="none" stroke="{COLOURS["actual"]}" '
            f'stroke-width="2.5" points="{_path([(x(p.day), y(p.value)) for p in actual])}"/>'
        )
    for p in actual:
        words = f"{short_date(p.day)}: {fmt(p.value)}"
        if _usable(p.expected):
            words += f" (expected {fmt(p.expected)})"
        out.append(
            f'<circle class="actual" cx="{x(p.day)}" cy="{y(p.value)}" r="3.5" '
            f'fill="{COLOURS["actual"]}"><title>{svg_text(words)}</title></circle>'
        )
    for m in milestones:
        if not _usable(m.value):
            continue
        cx, cy = x(m.day), y(m.value)
        out.append(
            f'<path class="milestone" '
            f'd="M{cx} {cy - 6}L{cx + 6} {cy}L{cx} {cy + 6}L{cx - 6} {cy}Z" '
            f'fill="#fff" stroke="{COLOURS["milestone"]}" stroke-width="2">'
            f"<title>{svg_text(m.label)}</title></path>"
        )
    if forecast is not None:
        fx = x(forecast)
        out.append(
            f'<g class="forecast"><line x1="{fx}" x2="{fx}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
            f'stroke="{COLOURS["forecast"]}" stroke-width="2" stroke-dasharray="2 3"/>'
            f'<text x="{fx - 4}" y="{HEIGHT - BOTTOM - 8}" text-anchor="end" font-size="14" '
            f'fill="{COLOURS["forecast"]}" {HALO}>forecast {svg_text(short_date(forecast))}</text>'
            f"<title>{svg_text(f'Forecast: reaches the target on {short_date(forecast)}')}</title>"
            "</g>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _path(xy: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{a},{b}" for a, b in xy)


def _axes(first, last, low, high, x, y, value_label, fmt) -> list[str]:
    """The frame, gridlines with tick labels on both axes, and the axes' names."""
    bottom = HEIGHT - BOTTOM
    out = ['<g class="axes" font-size="14" fill="#5b6475">']
    for value in _ticks(low, high):
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value)}" y2="{y(value)}" '
            'stroke="#e3e3e3"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4}" text-anchor="end">'
            f"{svg_text(fmt(value))}</text>"
        )
    for day, label in _date_ticks(first, last):
        out.append(
            f'<line x1="{x(day)}" x2="{x(day)}" y1="{bottom}" y2="{bottom + 5}" stroke="#5b6475"/>'
            f'<text x="{x(day)}" y="{bottom + 20}" text-anchor="middle">{svg_text(label)}</text>'
        )
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#5b6475"/>'
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="#5b6475"/>'
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle">Date</text>'
        f'<text x="16" y="{(TOP + bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(TOP + bottom) / 2})">{svg_text(value_label)}</text>'
    )
    out.append("</g>")
    return out


def _nice_step(span: float, count: int = 5) -> float:
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _nice_range(low: float, high: float) -> tuple[float, float]:
    """[low, high] widened to whole steps; never empty."""
    if high <= low:
        high = low + 1
    step = _nice_step(high - low)
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _ticks(low: float, high: float) -> list[float]:
    step = _nice_step(high - low)
    count = round((high - low) / step)
    return [low + i * step for i in range(count + 1)]


def _date_ticks(first: date, last: date) -> list[tuple[date, str]]:
    """Whole years on a long span, months on a short one; at most about eight."""
    years = last.year - first.year
    if years >= 2:
        step = max(1, math.ceil(years / 8))
        return [
            (date(year, 1, 1), str(year))
            for year in range(first.year + 1, last.year + 1, step)
            if first <= date(year, 1, 1) <= last
        ]
    months = (last.year - first.year) * 12 + last.month - first.month
    step = max(1, math.ceil(months / 6))
    ticks = []
    for i in range(1, months + 1, step):
        index = first.year * 12 + first.month - 1 + i
        day = date(index // 12, index % 12 + 1, 1)
        ticks.append((day, f"{day:%b %Y}"))
    return ticks
