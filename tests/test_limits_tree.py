"""The tree's bounds (tracker/limits.py): dates, numbers, weights and schedules that
would pass as well-formed but break pages are refused with their line."""

import pytest
from test_tree import F, M, problems_of, tree_text

from tracker.tree import Problem


def line_of(text: str, snippet: str) -> int:
    """The 1-based line where `snippet` starts in `text`."""
    return text[: text.index(snippet)].count("\n") + 1


CASES = [
    (
        "due: 2016-12-31",
        "due: 9999-12-31",
        "measure 'homes-repaired': due must be between 1900-01-01 and 2199-12-31, got 9999-12-31",
    ),
    (
        "start: 2011-09-01",
        "start: 0001-01-01",
        "measure 'homes-repaired': start must be between 1900-01-01 and 2199-12-31, got 0001-01-01",
    ),
    (
        f"{M}weight: 1\n",
        f"{M}weight: 1\n{M}milestones: [{{date: 2300-01-01, progress: 0.5}}]\n",
        "measure 'homes-repaired': milestones[0].date must be between 1900-01-01 and "
        "2199-12-31, got 2300-01-01",
    ),
    (
        "target: 80",
        "target: 1.0e+308",
        "measure 'park-quality': target must be between -1e+15 and 1e+15, got 1e+308",
    ),
    (
        "target: {opawa: 120, st-albans: 90}",
        "target: {opawa: 120, st-albans: -2.0e+15}",
        "measure 'homes-repaired': target must be between -1e+15 and 1e+15 (st-albans: -2e+15)",
    ),
    (
        "weight: 2",
        "weight: 1.0e+300",
        "output 'eqc-home-repairs': weight must be at most 1e+06, got 1e+300",
    ),
    (
        f"{F}every: 6h\n",
        f"{F}every: 99999999999d\n",
        "feed 'eqc-repairs': every must be at most a year (366d), got '99999999999d'",
    ),
    (
        f"{F}every: 6h\n",
        f"{F}every: 6h\n{F}timeout: 1.0e+300\n",
        "feed 'eqc-repairs': timeout must be at most 600, got 1e+300",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), CASES, ids=[c[2][:60] for c in CASES])
def test_check_refuses_values_outside_the_bounds_at_their_line(tmp_path, old, new, message):
    text = tree_text((old, new))
    line = line_of(text, new.strip().split("\n")[-1].strip())
    # A milestone out of the calendar is also outside [start, due]: that is said too.
    assert Problem(line, message) in problems_of(tmp_path, text)


def test_check_refuses_dimensions_too_long_for_their_cell(tmp_path):
    # Each name and value is within its own limit (50); three together are not.
    names = [f"{letter * 45}" for letter in "abc"]
    values = ", ".join(["short", "v" * 50])
    declared = "".join(f"  {name}: [{values}]\n" for name in names)
    text = tree_text(
        ('  age: ["0-14", "15-64", "65+"]\n', f'  age: ["0-14", "15-64", "65+"]\n{declared}'),
        ("dimensions: [age]", f"dimensions: [{', '.join(names)}]"),
    )
    line = line_of(text, f"dimensions: [{names[0]}")
    assert problems_of(tmp_path, text) == [
        Problem(
            line,
            "measure 'homes-repaired': its dimension names and values are too long together "
            "(290 characters for a cell, at most 200)",
        )
    ]
