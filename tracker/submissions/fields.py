"""Checks of single fields shared by observation and work rows."""

import functools
import math
import re
from datetime import date
from typing import Any

from tracker.limits import magnitude_problem

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NUL = "\x00"  # PostgreSQL refuses it in text; no title, note or name needs it
NUL_MESSAGE = "{} holds a NUL character"


def _text(raw: Any, key: str) -> str | None:
    """raw[key] when raw is an object and the value is text, else None."""
    value = raw.get(key) if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


@functools.lru_cache(maxsize=4096)
def _iso_date(raw: str) -> date | str | None:
    """The date `raw` names, a problem, or None when it is not YYYY-MM-DD at all.

    Cached: a batch usually repeats a handful of dates over thousands of rows.
    """
    if not ISO_DATE.match(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return f"{raw!r} is not a real date"


def _parse_value(raw: Any, fail, name: str = "value") -> float | None:
    """A finite number; null (or an empty CSV cell) retracts the current value."""
    if raw is ...:
        fail(name, f"{name} is required (null retracts the current value)")
        return None
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        fail(name, f"{name} must be a number, got a boolean")
        return None
    if isinstance(raw, str):
        try:
            number = float(raw.strip())
        except ValueError:
            fail(name, f"{name} must be a number, got {_short(raw)}")
            return None
    elif isinstance(raw, int | float):
        try:
            number = float(raw)
        except OverflowError:  # an integer with hundreds of digits
            number = math.inf
    else:
        fail(name, f"{name} must be a number, got {type(raw).__name__}")
        return None
    if not math.isfinite(number):
        fail(name, f"{name} must be a finite number, got {_short(raw)}")
        return None
    if problem := magnitude_problem(number):
        fail(name, f"{name} {problem}, got {_short(raw)}")
        return None
    return number


def _short(raw: Any) -> str:
    """A value as an error message quotes it: a number of 5,000 digits is not repeated."""
    text = repr(raw) if isinstance(raw, str) else _number_text(raw)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _number_text(number: Any) -> str:
    """A number as text; an integer of thousands of digits has no str() in Python 3.11+."""
    try:
        return str(number)
    except ValueError:
        return f"an integer of about {int(number.bit_length() * 0.30103)} digits"
