"""The quick path for common observation rows accepts only what the full checks accept."""

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from tracker.submissions.observations import MeasureRules, _check_row, _quick_row, _validate_row

TODAY = date(2026, 6, 30)
RULES = {
    "plain": MeasureRules("plain", "eqc", frozenset({"opawa", "riccarton"}), (), False),
    "by-age": MeasureRules("by-age", "eqc", frozenset({"opawa"}), ("age",), False),
    "derived": MeasureRules("derived", "eqc", frozenset({"opawa"}), (), True),
}
ALLOWED = {"age": {"0-14", "65+"}}

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
measures = st.one_of(st.sampled_from(sorted(RULES)), anything)
places = st.one_of(st.sampled_from(["opawa", "riccarton", "avonside", ""]), anything)
dates = st.one_of(
    st.dates(date(2000, 1, 1), date(2030, 12, 31)).map(date.isoformat),
    st.sampled_from(["2026-02-30", "2026-6-1", "2026-06-30", "2026-07-01", " 2026-01-01"]),
    anything,
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**400), 10**400),
    st.sampled_from(["12", " 3.5 ", "", "nan", "inf", "1e999", "x", "1_000"]),
    anything,
)
rows = st.fixed_dictionaries(
    {"measure": measures, "place": places, "date": dates, "value": values},
    optional={"note": st.one_of(st.text(max_size=5), anything), "dims": anything},
)


@given(rows)
def test_a_row_the_quick_path_takes_is_the_row_the_full_checks_give(raw):
    quick = _quick_row(7, raw, RULES, TODAY)
    full, errors = _check_row(7, raw, RULES, ALLOWED, TODAY)
    if quick is not None:
        assert errors == [] and quick == full
    assert _validate_row(7, raw, RULES, ALLOWED, TODAY) == (full, errors)


def test_the_common_row_takes_the_quick_path():
    raw = {"measure": "plain", "place": "opawa", "date": "2026-01-31", "value": "12"}
    assert _quick_row(0, raw, RULES, TODAY) == _check_row(0, raw, RULES, ALLOWED, TODAY)[0]
    assert _quick_row(0, raw, RULES, TODAY) is not None
