"""The rules of CONTRACT §2 that span fields, checked on the raw data."""

from collections.abc import Iterator
from datetime import date
from typing import Any

from tracker.limits import MAX_DIMS_KEY
from tracker.tree.problems import Loc, Problem, _label, _line
from tracker.tree.specs import _as_date, _default_places, _is_number


def _items(container: Any, key: str) -> list[tuple[int, dict]]:
    """The mapping items of a list in raw data, with their indexes; anything else is skipped."""
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, dict)]


def _raw_nodes(container: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str, dict]]:
    """The results, outputs and measures of raw data, in the order iter_nodes gives."""
    for i, result in _items(container, "results"):
        result_loc = (*loc, "results", i)
        yield result_loc, "result", result
        yield from _raw_nodes(result, result_loc)
        for j, output in _items(result, "outputs"):
            output_loc = (*result_loc, "outputs", j)
            yield output_loc, "output", output
            for k, measure in _items(output, "measures"):
                yield (*output_loc, "measures", k), "measure", measure


def _listed(container: dict, key: str) -> list[tuple[int, str]]:
    """The text items of a list in raw data, with their indexes; anything else is skipped."""
    value = container.get(key)
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, str)]


class _Checker:
    """The rules of CONTRACT §2 that span fields, run on the raw data.

    They walk the data defensively rather than the typed tree, so that a structural
    error in one place does not hide a cross-reference error in another.
    """

    def __init__(self, data: Any, lines: dict[Loc, int], place_ids: list[str] | None):
        self.data = data if isinstance(data, dict) else {}
        self.lines = lines
        self.place_ids = set(place_ids) if place_ids is not None else None
        self.problems: list[Problem] = []

    def run(self) -> list[Problem]:
        """Every cross-reference problem in the data."""
        nodes = list(_raw_nodes(self.data))
        self._duplicates("id", [(item.get("id"), loc) for loc, _, item in nodes])
        agencies = _items(self.data, "agencies")
        self._duplicates(
            "agency id", [(agency.get("id"), ("agencies", i)) for i, agency in agencies]
        )
        agency_ids = {a.get("id") for _, a in agencies if isinstance(a.get("id"), str)}
        measure_agency: dict[Any, Any] = {}
        for loc, kind, item in nodes:
            if kind == "output":
                self._check_output(loc, item, agency_ids, measure_agency)
            elif kind == "measure":
                self._check_measure(loc, item)
        self._check_feeds(agencies, agency_ids, measure_agency)
        self._check_report_categories(agency_ids)
        self._check_changes(nodes)
        return self.problems

    def report(self, loc: Loc, message: str) -> None:
        """Note a problem at the line of `loc`."""
        self.problems.append(Problem(_line(self.lines, loc), message))

    def _duplicates(self, what: str, entries: list[tuple[Any, Loc]]) -> None:
        """Report every later use of an id already used, naming the first use's line."""
        first: dict[str, int | None] = {}
        entries = [(ident, loc) for ident, loc in entries if isinstance(ident, str)]
        for ident, loc in sorted(entries, key=lambda e: _line(self.lines, (*e[1], "id")) or 0):
            line = _line(self.lines, (*loc, "id"))
            if ident in first:
                self.report(
                    (*loc, "id"), f"duplicate {what} {ident!r}: already used at line {first[ident]}"
                )
            else:
                first[ident] = line

    def _check_output(
        self, loc: Loc, output: dict, agency_ids: set, measure_agency: dict[Any, Any]
    ) -> None:
        """The output's agency must exist; note it as the owner of the output's measures."""
        agency = output.get("agency")
        if not isinstance(agency, str):
            agency = None
        elif agency not in agency_ids:
            label = _label("output", output, loc[-1])
            self.report((*loc, "agency"), f"{label}: unknown agency {agency!r}")
            agency = None  # said once here, not again for each feed naming its measures
        for _, measure in _items(output, "measures"):
            if isinstance(measure.get("id"), str):
                measure_agency.setdefault(measure["id"], agency)  # a duplicate is said already

    def _check_measure(self, loc: Loc, measure: dict) -> None:
        """Places, baseline and target maps, dimensions, dates and milestones of a measure."""
        label = _label("measure", measure, loc[-1])
        places = self._check_places(loc, label, measure)
        for name in ("baseline", "target"):
            self._check_map(loc, label, measure, name, places)
        baseline = measure.get("baseline")
        if _is_number(baseline) and baseline != 0 and isinstance(measure.get("target"), dict):
            # CONTRACT §3 rule 3: a sum's city baseline cannot be split among the leaves.
            self.report(
                (*loc, "baseline"),
                f"{label}: a baseline number other than 0 cannot go with a target map; "
                "give the baseline per place",
            )
        self._check_dimensions(loc, label, measure)
        self._check_dates(loc, label, measure)

    def _check_places(self, loc: Loc, label: str, measure: dict) -> list[str] | None:
        """Report unknown or missing places; the measure's places, None if unknowable."""
        listed = measure.get("places")
        if "places" not in measure:
            if self.place_ids is None and not isinstance(measure.get("target"), dict):
                return None
            defaults = _default_places(measure, list(self.place_ids or ()))
            return [place for place in defaults if isinstance(place, str)]
        if not isinstance(listed, list):
            return None
        if not listed:
            self.report((*loc, "places"), f"{label}: places lists no place")
        for index, place in enumerate(listed):
            if (
                isinstance(place, str)
                and self.place_ids is not None
                and place not in self.place_ids
            ):
                self.report((*loc, "places", index), f"{label}: unknown place {place!r} in places")
        return [place for place in listed if isinstance(place, str)]

    def _check_map(
        self, loc: Loc, label: str, measure: dict, name: str, places: list[str] | None
    ) -> None:
        """A baseline or target map names known places of the measure, and all of them."""
        value = measure.get(name)
        if not isinstance(value, dict):
            return
        for key in value:
            if not isinstance(key, str):
                continue
            if self.place_ids is not None and key not in self.place_ids:
                self.report((*loc, name, key), f"{label}: unknown place {key!r} in {name}")
            elif places is not None and key not in places:
                self.report(
                    (*loc, name, key), f"{label}: {name} names {key!r}, not one of its places"
                )
        known = self.place_ids
        missing = [p for p in places or () if p not in value and (known is None or p in known)]
        if missing:
            names = ", ".join(repr(place) for place in missing)
            self.report((*loc, name), f"{label}: {name} has no value for {names}")

    def _check_dimensions(self, loc: Loc, label: str, measure: dict) -> None:
        """Dimensions only on sum measures, and only declared ones."""
        dimensions = measure.get("dimensions")
        if not isinstance(dimensions, list) or not dimensions:
            return
        aggregate = measure.get("aggregate")
        if aggregate in ("mean", "min", "max"):
            self.report(
                (*loc, "dimensions"),
                f"{label}: dimensions need aggregate: sum, not {aggregate!r}",
            )
        declared = self.data.get("dimensions", {})
        if not isinstance(declared, dict):
            return
        for index, name in enumerate(dimensions):
            if isinstance(name, str) and name not in declared:
                self.report(
                    (*loc, "dimensions", index),
                    f"{label}: dimension {name!r} is not declared under dimensions",
                )
        # Each observation stores its cell as "name=value|name=value" in a sized column.
        longest = sum(
            len(name) + 1 + max(map(len, map(str, declared[name])), default=0) + 1
            for name in dimensions
            if isinstance(name, str) and isinstance(declared.get(name), list)
        )
        if longest - 1 > MAX_DIMS_KEY:
            self.report(
                (*loc, "dimensions"),
                f"{label}: its dimension names and values are too long together "
                f"({longest - 1} characters for a cell, at most {MAX_DIMS_KEY})",
            )

    def _check_dates(self, loc: Loc, label: str, measure: dict) -> None:
        """Due not before start; milestones inside [start, due], progress never falling."""
        start, due = _as_date(measure.get("start")), _as_date(measure.get("due"))
        if start and due and due < start:
            self.report((*loc, "due"), f"{label}: due {due} is before start {start}")
            start = due = None  # every milestone would be outside; that says nothing more
        points = []
        for index, milestone in _items(measure, "milestones"):
            when, progress = _as_date(milestone.get("date")), milestone.get("progress")
            if when is None:
                continue
            if start and due and not start <= when <= due:
                self.report(
                    (*loc, "milestones", index, "date"),
                    f"{label}: milestone {when} is outside start {start} .. due {due}",
                )
            if _is_number(progress):
                points.append((when, progress, index))
        self._check_progress(loc, label, sorted(points))

    def _check_progress(self, loc: Loc, label: str, points: list[tuple[date, Any, int]]) -> None:
        """Milestones in date order: one per date, progress never below an earlier one."""
        peak = None
        for previous, (when, progress, index) in zip([None, *points], points, strict=False):
            here = (*loc, "milestones", index)
            if previous and previous[0] == when:
                self.report((*here, "date"), f"{label}: two milestones on {when}")
            elif peak and progress < peak[1]:
                self.report(
                    (*here, "progress"),
                    f"{label}: milestone {when} progress {progress} is below "
                    f"the {peak[1]} of milestone {peak[0]}",
                )
            if peak is None or progress > peak[1]:
                peak = (when, progress)

    def _check_report_categories(self, agency_ids: set) -> None:
        """Report categories: a unique code each, and an agency of the tree."""
        categories = _items(self.data, "report_categories")
        seen = []
        for index, item in categories:
            loc = ("report_categories", index)
            code = item.get("code")
            seen.append((code, loc))
            agency = item.get("agency")
            if isinstance(agency, str) and agency not in agency_ids:
                label = _label("report category", item, index)
                self.report((*loc, "agency"), f"{label}: unknown agency {agency!r}")
        # _duplicates reads the line of each entry's "id": point it at "code" instead.
        first: dict[str, int | None] = {}
        for code, loc in seen:
            if not isinstance(code, str):
                continue
            line = _line(self.lines, (*loc, "code"))
            if code in first:
                self.report(
                    (*loc, "code"),
                    f"duplicate report category code {code!r}: already used at line {first[code]}",
                )
            else:
                first[code] = line

    def _check_changes(self, nodes: list[tuple[Loc, str, dict]]) -> None:
        """Renames, moves and retirements (`was`, `moved_from`, `places.renamed`,
        `retired`) must not contradict the rest of the tree."""
        live = {item.get("id") for _, _, item in nodes}
        retired = self.data.get("retired")
        retired = retired if isinstance(retired, dict) else {}
        retired_measures = {ident for _, ident in _listed(retired, "measures")}
        self._check_renamed_measures(nodes, live, retired_measures)
        self._check_moves(nodes)
        self._check_retired(retired, live)
        self._check_renamed_places({ident for _, ident in _listed(retired, "places")})

    def _check_renamed_measures(
        self, nodes: list[tuple[Loc, str, dict]], live: set, retired: set[str]
    ) -> None:
        """A measure's `was` names an id gone from the tree, and no other measure's."""
        taken: dict[str, int | None] = {}
        for loc, kind, item in nodes:
            was = item.get("was")
            if kind != "measure" or not isinstance(was, str):
                continue
            label, here = _label("measure", item, loc[-1]), (*loc, "was")
            if was in live:
                self.report(
                    here,
                    f"{label}: was names {was!r}, which is still in the tree; "
                    "a renamed measure's old id must be gone from it",
                )
            elif was in retired:
                self.report(
                    here,
                    f"{label}: was names {was!r}, which retired.measures lists too; "
                    "its history either moves here or stops being shown",
                )
            elif was in taken:
                self.report(here, f"{label}: was names {was!r}, already taken at line {taken[was]}")
            taken.setdefault(was, _line(self.lines, here))

    def _check_moves(self, nodes: list[tuple[Loc, str, dict]]) -> None:
        """A measure's `moved_from` names the agency it left, not the one it is under."""
        for loc, kind, output in nodes:
            agency = output.get("agency")
            if kind != "output" or not isinstance(agency, str):
                continue
            for index, measure in _items(output, "measures"):
                if measure.get("moved_from") == agency:
                    self.report(
                        (*loc, "measures", index, "moved_from"),
                        f"{_label('measure', measure, index)}: moved_from names {agency!r}, "
                        "the agency of its own output",
                    )

    def _check_retired(self, retired: dict, live: set) -> None:
        """`retired` lists only ids and values that the tree no longer has."""
        for index, ident in _listed(retired, "measures"):
            if ident in live:
                self.report(
                    ("retired", "measures", index),
                    f"retired.measures lists {ident!r}, which is still in the tree",
                )
        for index, ident in _listed(retired, "places"):
            if self.place_ids is not None and ident in self.place_ids:
                self.report(
                    ("retired", "places", index),
                    f"retired.places lists {ident!r}, which the boundaries still have",
                )
        values, declared = retired.get("dimension_values"), self.data.get("dimensions")
        if not isinstance(values, dict) or not isinstance(declared, dict):
            return
        for name in values:
            for index, value in _listed(values, name):
                if isinstance(declared.get(name), list) and value in declared[name]:
                    self.report(
                        ("retired", "dimension_values", name, index),
                        f"retired.dimension_values lists {name}={value}, "
                        "which dimensions still declares",
                    )

    def _check_renamed_places(self, retired: set[str]) -> None:
        """`places.renamed` maps a neighbourhood of the boundaries to an id they lost."""
        places = self.data.get("places")
        renamed = places.get("renamed") if isinstance(places, dict) else None
        if not isinstance(renamed, dict):
            return
        known, taken = self.place_ids, {}
        for new, old in renamed.items():
            if not isinstance(new, str) or not isinstance(old, str):
                continue
            here = ("places", "renamed", new)
            if known is not None and new not in known:
                self.report(
                    here,
                    f"places.renamed: {new!r} is not in the boundaries "
                    "(renamed maps each new id to its old one)",
                )
            if known is not None and old in known:
                self.report(here, f"places.renamed: the old id {old!r} is still in the boundaries")
            elif old in retired:
                self.report(
                    here,
                    f"places.renamed: {old!r} is under retired.places too; "
                    f"its history either moves to {new!r} or stops being shown",
                )
            elif old in taken:
                self.report(here, f"places.renamed: {old!r} is renamed twice ({taken[old]!r} too)")
            taken.setdefault(old, new)

    def _check_feeds(
        self, agencies: list[tuple[int, dict]], agency_ids: set, measure_agency: dict
    ) -> None:
        """Feeds: a schedule, a unique id, and a measure of their own agency."""
        seen = []
        for a, agency in agencies:
            for f, feed in _items(agency, "feeds"):
                loc, label = ("agencies", a, "feeds", f), _label("feed", feed, f)
                seen.append((feed.get("id"), loc))
                if feed.get("every") is not None and feed.get("cron") is not None:
                    self.report((*loc, "cron"), f"{label}: give every or cron, not both")
                elif feed.get("every") is None and feed.get("cron") is None:
                    self.report(loc, f"{label} needs every (e.g. 6h) or cron")
                measure = feed.get("measure")
                if not isinstance(measure, str):
                    continue
                owner = measure_agency.get(measure)
                if measure not in measure_agency:
                    self.report((*loc, "measure"), f"{label}: unknown measure {measure!r}")
                elif owner in agency_ids and owner != agency.get("id"):
                    # Submissions refuse another agency's measure: every row would fail.
                    self.report(
                        (*loc, "measure"),
                        f"{label}: measure {measure!r} belongs to agency {owner!r}",
                    )
        self._duplicates("feed id", seen)
