"""The bounds the tracker keeps every input inside, in one place.

Each is far beyond what a real measure, date or schedule needs, and each keeps the
arithmetic that follows exact and finite: sums of values stay well inside a float,
days stay inside the calendar after a trajectory or a staleness window is added, and no
single request does work that grows without limit. docs/api.md and docs/results-tree.md
list them for agencies and officials.
"""

from datetime import date

# Values, quantities, baselines and targets: |x| ≤ 10^15 keeps integers exact in a float
# (2^53 ≈ 9 × 10^15) and a sum of a billion of them finite.
MAX_MAGNITUDE = 1e15
# Weights of outputs, results and measures.
MAX_WEIGHT = 1e6
# Every date the tracker reads, in the tree, a submission or a query.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2199, 12, 31)
# A feed's `timeout` (seconds) and `every` (a year at most).
MAX_FEED_TIMEOUT = 600.0
MAX_FEED_EVERY_MINUTES = 366 * 24 * 60
# dims_key column size: "name=value|name=value" of a measure's declared dimensions.
MAX_DIMS_KEY = 200
# GET /api/v1/works: features per page, and the largest box (degrees each way).
WORKS_PAGE_SIZE = 500
MAX_BBOX_DEGREES = 5.0


def magnitude_problem(number: float) -> str | None:
    """Why a number is outside ±MAX_MAGNITUDE, or None when it is inside."""
    if abs(number) > MAX_MAGNITUDE:
        return f"must be between -{MAX_MAGNITUDE:.0e} and {MAX_MAGNITUDE:.0e}"
    return None


def date_problem(day: date) -> str | None:
    """Why a date is outside the tracker's calendar, or None when it is inside."""
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        return f"must be between {EARLIEST_DATE} and {LATEST_DATE}"
    return None
