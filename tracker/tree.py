"""The results tree: load and check results_tree.yaml into typed objects, and store it.

`load_tree` refuses a bad file whole, listing every problem with its line (CONTRACT §2).
`store_tree` upserts a checked tree into the database, retiring ids the file dropped.
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlmodel import Session, select
from yaml.constructor import SafeConstructor

from tracker.errors import TrackerError
from tracker.limits import (
    MAX_DIMS_KEY,
    MAX_FEED_EVERY_MINUTES,
    MAX_FEED_TIMEOUT,
    MAX_WEIGHT,
    date_problem,
    magnitude_problem,
)
from tracker.models import Agency, Dimension, Feed, MeasurePlace, Node, Place, utcnow
from tracker.places import (
    Boundary,
    PlacesError,
    StreetRecord,
    read_boundaries,
    store_places,
)
from tracker.tree_changes import (
    TreeChangeRefused,
    TreeChanges,
    bump_data_versions,
    locate_works_again,
    move_measure_history,
    move_place_history,
    read_stored,
    review_changes,
)

SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
DIMENSION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
EVERY = re.compile(r"([0-9]+)[mhd]")

Loc = tuple[Any, ...]  # a path into the data, e.g. ("results", 0, "outputs", 1, "id")


# --- problems -------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a tree file; `line` is 1-based, None for the file as a whole."""

    line: int | None
    message: str


class TreeError(TrackerError):
    """A results tree refused as a whole; `problems` lists every reason, in line order."""

    def __init__(self, problems: list[Problem], path: Path | str = "results_tree.yaml"):
        self.problems = problems
        self.path = Path(path)
        super().__init__(
            "\n".join(
                f"{path}:{p.line}: {p.message}" if p.line else f"{path}: {p.message}"
                for p in problems
            ),
            errors=[{"line": p.line, "message": p.message} for p in problems],
        )


# --- field rules ------------------------------------------------------------------------


def _slug(value: str) -> str:
    """An id: a lower-case slug, safe in URLs."""
    if not SLUG.fullmatch(value):
        raise ValueError("must be a lower-case slug (letters, digits, hyphens)")
    return value


def _dimension_name(value: str) -> str:
    """A dimension name, safe in `dim.NAME=VALUE` query parameters."""
    if not DIMENSION_NAME.fullmatch(value):
        raise ValueError("must be lower-case letters, digits, hyphens or underscores")
    return value


def _dimension_value(value: str) -> str:
    """A dimension value; '|' and '=' separate cells in stored observation keys."""
    if "|" in value or "=" in value:
        raise ValueError("must not contain '|' or '='")
    return value


def _positive(value: float) -> float:
    """A weight or timeout: zero or less would divide by nothing or never finish."""
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _at_most(limit: float):
    """A validator refusing numbers over `limit` (a weight or timeout beyond any use)."""

    def check(value: float) -> float:
        if value > limit:
            raise ValueError(f"must be at most {limit:g}")
        return value

    return check


def _fraction(value: float) -> float:
    """A share of the way from start (0) to due (1)."""
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def _unique(values: list[str]) -> list[str]:
    """A list that names each thing once."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"lists {value!r} twice")
        seen.add(value)
    return values


def _timezone(value: str) -> str:
    """An IANA time zone name such as Pacific/Auckland."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("must be an IANA time zone name such as Pacific/Auckland") from None
    return value


def _every(value: str) -> str:
    """A feed interval: a whole number of minutes, hours or days, e.g. 6h."""
    match = EVERY.fullmatch(value)
    if not match or int(match[1]) == 0:
        raise ValueError("must be a positive whole number followed by m, h or d (e.g. 6h)")
    minutes = int(match[1]) * {"m": 1, "h": 60, "d": 24 * 60}[value[-1]]
    if minutes > MAX_FEED_EVERY_MINUTES:
        raise ValueError("must be at most a year (366d)")
    return value


def _cron(value: str) -> str:
    """A five-field cron expression, each field in range."""
    if len(value.split()) != 5:
        raise ValueError("must have 5 fields: minute hour day month weekday")
    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"is not a valid cron expression ({exc})") from None
    return value


def _is_number(value: Any) -> bool:
    """A YAML int or float; YAML's yes/no are bools, which Python counts as ints."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_or_map(value: Any) -> float | dict[str, float]:
    """A baseline or target: one number, or a number per place id, each within bounds."""
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        numbers = list(value.values())
    elif _is_number(value):
        numbers = [value]
    else:
        raise ValueError("must be a number or a map of place id to number")
    for number in numbers:
        if not (_is_number(number) and math.isfinite(number)):
            raise ValueError("must be a number or a map of place id to number")
    for place, number in value.items() if isinstance(value, dict) else [(None, value)]:
        if problem := magnitude_problem(number):
            raise ValueError(f"{problem} ({place}: {number:g})" if place else problem)
    if isinstance(value, dict):
        return {key: float(number) for key, number in value.items()}
    return float(value)


def _date(value: Any) -> date:
    """A calendar date, written 2016-12-31 (a time of day or a number is a mistake)."""
    parsed = _as_date(value)
    if parsed is None:
        raise ValueError("must be a date like 2016-12-31")
    if problem := date_problem(parsed):
        raise ValueError(problem)
    return parsed


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """A path from the file, made absolute against the tree file's folder."""
    base = (info.context or {}).get("base", Path.cwd())
    return (base / value).resolve()


Slug = Annotated[str, StringConstraints(max_length=100), AfterValidator(_slug)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Unit = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Date = Annotated[date, PlainValidator(_date)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Positive = Annotated[Number, AfterValidator(_positive)]
Weight = Annotated[Positive, AfterValidator(_at_most(MAX_WEIGHT))]
Timeout = Annotated[Positive, AfterValidator(_at_most(MAX_FEED_TIMEOUT))]
NumberOrMap = Annotated[float | dict[str, float], PlainValidator(_number_or_map)]
DimensionName = Annotated[str, StringConstraints(max_length=50), AfterValidator(_dimension_name)]
DimensionValue = Annotated[
    str, StringConstraints(min_length=1, max_length=50), AfterValidator(_dimension_value)
]


# --- the typed tree ---------------------------------------------------------------------


class _Spec(BaseModel):
    """A part of the tree file: unknown keys are errors and the parsed object is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class CitySpec(_Spec):
    """The city at the root of the place tree."""

    id: Slug
    name: Text
    timezone: Annotated[str, AfterValidator(_timezone)] = "Pacific/Auckland"


class PlacesSpec(_Spec):
    """Where the neighbourhoods come from; paths are absolute once loaded."""

    boundaries: Path
    id_property: Text = "id"
    name_property: Text = "name"
    area_property: Text | None = None
    streets: Path | None = None
    # Neighbourhoods whose id changed, new id: old id; init moves the old one's history.
    renamed: dict[Slug, Slug] = {}

    @field_validator("boundaries", "streets")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Resolve against the tree's folder (load_tree checks the files are there)."""
        return None if value is None else _resolve_path(value, info)


class FeedSpec(_Spec):
    """An agency's feed (CONTRACT §7); a `file:` url holds an absolute path once loaded."""

    id: Slug
    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    format: Literal["csv", "json", "geojson", "arcgis", "ckan"]
    every: Annotated[str, AfterValidator(_every)] | None = None
    cron: Annotated[str, AfterValidator(_cron)] | None = None
    provides: Literal["observations", "works"] = "observations"
    timeout: Timeout = 30.0
    measure: Slug | None = None
    fields: dict[str, str] = {}
    place_match: Literal["id", "name"] = "id"
    # Extension to CONTRACT §2: importer-specific settings (an ArcGIS layer, a CKAN resource).
    options: dict[str, Any] = {}
    _agency: str = PrivateAttr("")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        """Only web and local files; a local path is resolved against the tree's folder
        (links followed) and must stay inside it: feed runs publish what they read."""
        if value.startswith("file:"):
            path = _resolve_path(Path(value[5:]), info)
            if not path.is_relative_to(_resolve_path(Path(), info)):
                raise ValueError("must name a file inside the tree's folder")
            return f"file:{path}"
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http://, https:// or file:")
        return value

    @property
    def agency(self) -> str:
        """The id of the agency that publishes this feed."""
        return self._agency

    @property
    def path(self) -> Path | None:
        """The local file of a `file:` feed, else None."""
        return Path(self.url[5:]) if self.url.startswith("file:") else None


class AgencySpec(_Spec):
    """An agency that reports measures, with the feeds it publishes."""

    id: Slug
    name: Text
    email: Text | None = None
    feeds: list[FeedSpec] = []

    def model_post_init(self, context: Any) -> None:
        """Tell each feed whose it is (a feed in the file has no agency key of its own)."""
        for feed in self.feeds:
            feed._agency = self.id


class Milestone(NamedTuple):
    """A point on a measure's expected path: `progress` (0..1) expected by `date`."""

    date: Date
    progress: Annotated[Number, AfterValidator(_fraction)]


class MeasureSpec(_Spec):
    """A measure; `places` is always the resolved list of neighbourhood ids it covers."""

    id: Slug
    title: Title
    type: Literal["output", "activity"]
    unit: Unit
    kind: Literal["cumulative", "level", "flow"]
    aggregate: Literal["sum", "mean", "min", "max"]
    frequency: Literal["weekly", "monthly", "quarterly", "yearly"]
    start: Date
    due: Date
    baseline: NumberOrMap = 0.0
    target: NumberOrMap | None = None
    places: Annotated[list[Slug], AfterValidator(_unique)] = []
    milestones: list[Milestone] = []
    dimensions: Annotated[list[str], AfterValidator(_unique)] = []
    weight: Weight = 1.0
    source: Literal["works"] | None = None
    was: Slug | None = None  # the id it had before: init moves that measure's history here
    moved_from: Slug | None = None  # confirms the measure left this agency for its output's

    @model_validator(mode="before")
    @classmethod
    def _fill_in_places(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill in `places` as CONTRACT §2 says when the file leaves it out."""
        if isinstance(data, dict) and "places" not in data:
            place_ids = (info.context or {}).get("place_ids", [])
            return {**data, "places": _default_places(data, place_ids)}
        return data


class OutputSpec(_Spec):
    """One agency's contribution to a result."""

    id: Slug
    agency: Slug
    title: Title
    weight: Weight = 1.0
    measures: list[MeasureSpec] = []


class ResultSpec(_Spec):
    """A system-level outcome; results may nest."""

    id: Slug
    title: Title
    weight: Weight = 1.0
    results: list["ResultSpec"] = []
    outputs: list[OutputSpec] = []


NodeSpec = ResultSpec | OutputSpec | MeasureSpec


class RetiredSpec(_Spec):
    """Ids the file dropped on purpose: init stops showing the rows stored under them."""

    measures: Annotated[list[Slug], AfterValidator(_unique)] = []
    places: Annotated[list[Slug], AfterValidator(_unique)] = []
    dimension_values: dict[
        DimensionName, Annotated[list[DimensionValue], AfterValidator(_unique)]
    ] = {}


class Tree(_Spec):
    """A checked results tree, with the neighbourhood boundaries it was checked against."""

    version: Literal[1]
    city: CitySpec
    places: PlacesSpec
    dimensions: dict[
        DimensionName,
        Annotated[list[DimensionValue], Field(min_length=1), AfterValidator(_unique)],
    ] = {}
    agencies: list[AgencySpec] = []
    results: list[ResultSpec]
    retired: RetiredSpec = RetiredSpec()
    _path: Path | None = PrivateAttr(None)
    _boundaries: list[Boundary] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any) -> None:
        """Keep the file's path and the boundaries read while loading it."""
        self._path = (context or {}).get("path")
        self._boundaries = (context or {}).get("boundaries") or []

    @property
    def path(self) -> Path | None:
        """The tree file (absolute), None when not loaded from a file."""
        return self._path

    @property
    def boundaries(self) -> list[Boundary]:
        """The neighbourhoods read from `places.boundaries`, in file order."""
        return self._boundaries

    @property
    def neighbourhood_ids(self) -> list[str]:
        """Every neighbourhood id in the boundaries file, in file order."""
        return [boundary.id for boundary in self._boundaries]

    def iter_nodes(self) -> Iterator[tuple[NodeSpec, str, str | None, int]]:
        """(node, kind, parent_id, position) for every result, output and measure, depth first.

        Positions count a result's sub-results first, then its outputs.
        """
        yield from _iter_results(self.results, None)

    def measures(self) -> list[MeasureSpec]:
        """Every measure, in file order."""
        return [node for node, kind, _, _ in self.iter_nodes() if kind == "measure"]

    def feeds(self) -> list[FeedSpec]:
        """Every feed of every agency, in file order."""
        return [feed for agency in self.agencies for feed in agency.feeds]


def _iter_results(
    results: list[ResultSpec], parent_id: str | None
) -> Iterator[tuple[NodeSpec, str, str | None, int]]:
    """Results and everything below them, depth first."""
    for position, result in enumerate(results):
        yield result, "result", parent_id, position
        yield from _iter_results(result.results, result.id)
        for offset, output in enumerate(result.outputs, start=len(result.results)):
            yield output, "output", result.id, offset
            for index, measure in enumerate(output.measures):
                yield measure, "measure", output.id, index


def _default_places(measure: dict, place_ids: list[str]) -> list:
    """A measure's places when not listed: the target map's keys, else every neighbourhood."""
    target = measure.get("target")
    return list(target) if isinstance(target, dict) else list(place_ids)


# --- loading ----------------------------------------------------------------------------


def load_tree(path: str | Path) -> Tree:
    """Read and check a results tree; TreeError lists every problem with its line."""
    path = Path(path).resolve()
    data, lines, problems = _read_yaml(path)
    boundaries = _read_places(data, lines, path.parent, problems)
    ids = [boundary.id for boundary in boundaries] if boundaries is not None else None
    problems += _Checker(data, lines, ids).run()
    context = {"base": path.parent, "place_ids": ids or [], "path": path, "boundaries": boundaries}
    try:
        tree = Tree.model_validate(data, context=context)
    except ValidationError as exc:
        problems += [_problem(error, data, lines) for error in exc.errors(include_url=False)]
    if problems:
        # Several rules can see the same fault; say it once.
        unique = list(dict.fromkeys(problems))
        raise TreeError(sorted(unique, key=lambda p: p.line or 0), path)
    return tree


def _read_yaml(path: Path) -> tuple[Any, dict[Loc, int], list[Problem]]:
    """The file's data, the line of every path in it, and problems found while reading."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TreeError([Problem(None, f"cannot read the file ({exc})")], path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = Problem(mark.line + 1 if mark else None, f"not valid YAML: {_yaml_reason(exc)}")
        raise TreeError([problem], path) from None
    except yaml.YAMLError as exc:
        raise TreeError([Problem(None, f"not valid YAML: {exc}")], path) from None
    if root is None:
        raise TreeError([Problem(None, "the file is empty")], path)
    reader = _NodeReader()
    return reader.data(root, ()), reader.lines, reader.problems


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """What PyYAML says went wrong, without its position text or "while parsing …"."""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"{context}, {problem}" if context and not context.startswith("while") else problem


class _NodeReader:
    """Turns a composed YAML node graph into plain data, noting the line of every path."""

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self._constructor = SafeConstructor()
        self._open: set[int] = set()  # collections being read, to stop recursive aliases

    def data(self, node: yaml.Node, loc: Loc) -> Any:
        """The plain value of `node`, found at `loc`."""
        line = node.start_mark.line + 1
        self.lines.setdefault(loc, line)
        if id(node) in self._open:
            self.problems.append(Problem(line, "an alias refers to itself"))
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, loc)
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        """A scalar's value; None, with a problem, when its tag does not fit it (!!int abc)."""
        try:
            return self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            reason = _yaml_reason(exc) if isinstance(exc, yaml.YAMLError) else str(exc)
            self.problems.append(Problem(node.start_mark.line + 1, f"unreadable value: {reason}"))
            return None

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict:
        """A mapping; a repeated key is a problem, since YAML would silently keep the last."""
        try:
            self._constructor.flatten_mapping(node)  # applies `<<` merge keys
        except yaml.YAMLError as exc:
            self.problems.append(Problem(node.start_mark.line + 1, _yaml_reason(exc)))
            return {}
        self._open.add(id(node))
        result: dict = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(Problem(line, "a key must be plain text"))
                continue
            key = self._scalar(key_node)
            if key in result:
                self.problems.append(Problem(line, f"duplicate key {key!r}"))
                continue
            self.lines[(*loc, key)] = line
            result[key] = self.data(value_node, (*loc, key))
        self._open.discard(id(node))
        return result

    def _sequence(self, node: yaml.SequenceNode, loc: Loc) -> list:
        """A list."""
        self._open.add(id(node))
        items = [self.data(item, (*loc, index)) for index, item in enumerate(node.value)]
        self._open.discard(id(node))
        return items


def _read_places(
    data: Any, lines: dict[Loc, int], base: Path, problems: list[Problem]
) -> list[Boundary] | None:
    """The neighbourhoods named in `places` (None when unreadable); notes missing files."""
    places = data.get("places") if isinstance(data, dict) else None
    if not isinstance(places, dict):
        return None
    streets = places.get("streets")
    if isinstance(streets, str) and not (base / streets).is_file():
        line = _line(lines, ("places", "streets"))
        problems.append(
            Problem(line, f"places.streets: {(base / streets).resolve()}: file not found")
        )
    file = places.get("boundaries")
    names = {
        "id_property": places.get("id_property", "id"),
        "name_property": places.get("name_property", "name"),
    }
    area = places.get("area_property")
    # Malformed settings are reported by the structural check; nothing to read then.
    if not isinstance(file, str) or not all(isinstance(v, str) for v in names.values()):
        return None
    if area is not None and not isinstance(area, str):
        return None
    try:
        return read_boundaries((base / file).resolve(), **names, area_property=area)
    except PlacesError as exc:
        line = _line(lines, ("places", "boundaries"))
        problems.append(Problem(line, f"places.boundaries: {exc.message}"))
        return None


# --- structural problems, in words ------------------------------------------------------

_KINDS = {
    "results": "result",
    "outputs": "output",
    "measures": "measure",
    "agencies": "agency",
    "feeds": "feed",
}
_MESSAGES = {
    "model_type": "should be a mapping",
    "dict_type": "should be a mapping",
    "arguments_type": "should be a mapping",
    "list_type": "should be a list",
    "named_tuple_type": "should be a mapping with date and progress",
}


def _line(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the longest prefix of `loc` that the file has."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _label(kind: str, item: Any, index: int) -> str:
    """How a message names a listed item: by its id, else by its place in the list."""
    ident = item.get("id") if isinstance(item, dict) else None
    return f"{kind} {ident!r}" if isinstance(ident, str) and ident else f"{kind} #{index + 1}"


def _describe(data: Any, loc: Loc) -> tuple[str, str]:
    """The innermost listed item on `loc` (e.g. "measure 'x'") and the field path below it."""
    owner, field, node = "", [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        if isinstance(part, int) and i and loc[i - 1] in _KINDS:
            owner, field = _label(_KINDS[loc[i - 1]], node, part), []
        else:
            field.append(part)
    return owner, _dotted(field)


def _dotted(parts: list) -> str:
    """A field path as people write it: milestones[0].progress."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "[key]":  # pydantic's marker for a bad mapping key
            text += f".{part}" if text else str(part)
    return text


def _show(value: Any) -> str:
    """A value as the file wrote it."""
    if isinstance(value, date):
        return value.isoformat()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def _reword(message: str) -> str:
    """Pydantic's message to follow a field name: "Input should be x" -> "should be x"."""
    return re.sub(r"^\w+ should", "should", message.removeprefix("Value error, "))


def _problem(error: dict, data: Any, lines: dict[Loc, int]) -> Problem:
    """A pydantic error as a problem with its line and a message people can act on."""
    loc = error["loc"]
    line = _line(lines, loc)
    if error["type"] in ("extra_forbidden", "missing"):
        owner, field = _describe(data, loc[:-1])
        where = " of ".join(part for part in (field, owner) if part)
        what = "unknown key" if error["type"] == "extra_forbidden" else "missing key"
        return Problem(line, f"{what} {loc[-1]!r}" + (f" in {where}" if where else ""))
    owner, field = _describe(data, loc)
    message = _MESSAGES.get(error["type"]) or _reword(error["msg"])
    if not isinstance(error["input"], dict | list):
        message += f", got {_show(error['input'])}"
    if field:
        message = f"{field} {message}"
    if owner:
        return Problem(line, f"{owner}: {message}" if field else f"{owner} {message}")
    return Problem(line, message if field else f"the tree {message}")


# --- cross-reference rules --------------------------------------------------------------


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


def _as_date(value: Any) -> date | None:
    """A date as written in the file (YAML's, or an ISO string), else None."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


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


# --- storing ----------------------------------------------------------------------------

# Node columns that only measures fill in.
_MEASURE_COLUMNS = (
    "measure_type",
    "unit",
    "measure_kind",
    "aggregate",
    "frequency",
    "start",
    "due",
    "city_baseline",
    "city_target",
    "source",
)


def store_tree(
    session: Session, tree: Tree, *, streets: list[StreetRecord] | None = None
) -> TreeChanges:
    """Store the tree's places (and `streets` when given), agencies, nodes, dimensions and
    feeds, and say what changed; the caller commits.

    Ids the file dropped are retired (never deleted) and un-retired when they come back.
    TreeChangeRefused, before anything is kept, when that would stop showing stored
    observations or hand a measure to another agency without the file saying so
    (tracker.tree_changes). Renamed measures and places take their history along; works
    are located again where boundaries moved. A node's definition_version and
    data_version go up whenever its definition or its places change.
    """
    now = utcnow()
    stored = read_stored(session)
    places = store_places(
        session,
        city_id=tree.city.id,
        city_name=tree.city.name,
        boundaries=tree.boundaries,
        streets=streets,
    )
    session.get(Place, tree.city.id).timezone = tree.city.timezone
    changes = review_changes(session, tree, stored, places.retired)
    if changes.refusals:
        raise TreeChangeRefused(changes.refusals)
    _store_agencies(session, tree, now)
    session.flush()  # nodes and feeds refer to agencies
    _store_nodes(session, tree, now)
    _dimensions_changed(session, _store_dimensions(session, tree))
    _store_feeds(session, tree, now)
    session.flush()  # renamed measures and places exist before their history moves
    touched = move_measure_history(session, tree, changes)
    touched |= move_place_history(session, tree, changes)
    touched |= locate_works_again(session, places.redrawn, changes)
    bump_data_versions(session, touched)
    if places.changed:
        _place_tree_changed(session)
    session.flush()
    return changes


def _place_tree_changed(session: Session) -> None:
    """Every result's definition takes in the place tree: a new one rebuilds cached trees."""
    for row in session.exec(select(Node).where(Node.kind == "result", Node.retired_at.is_(None))):
        _definition_changed(row)


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set the attributes that differ; whether any did."""
    changed = {key: value for key, value in values.items() if getattr(row, key) != value}
    for key, value in changed.items():
        setattr(row, key, value)
    return bool(changed)


def _store_agencies(session: Session, tree: Tree, now: datetime) -> None:
    """Upsert agencies by id; retire those the file no longer has."""
    rows = {row.id: row for row in session.exec(select(Agency))}
    for agency in tree.agencies:
        row = rows.pop(agency.id, None) or Agency(id=agency.id, name=agency.name)
        _assign(row, {"name": agency.name, "email": agency.email, "retired_at": None})
        session.add(row)
    for row in rows.values():
        if row.retired_at is None:
            row.retired_at = now


def _store_nodes(session: Session, tree: Tree, now: datetime) -> None:
    """Upsert results, outputs and measures with their places; retire dropped nodes."""
    rows = {row.id: row for row in session.exec(select(Node))}
    place_rows: dict[str, dict[str, MeasurePlace]] = {}
    for place_row in session.exec(select(MeasurePlace)):
        place_rows.setdefault(place_row.measure_id, {})[place_row.place_id] = place_row
    nodes = list(tree.iter_nodes())
    new = {node.id for node, *_ in nodes if node.id not in rows}
    for node, kind, parent_id, position in nodes:
        if node.id in new:
            rows[node.id] = Node(id=node.id, **_node_values(node, kind, parent_id, position))
            session.add(rows[node.id])
    session.flush()  # new parents exist before existing nodes move under them
    for node, kind, parent_id, position in nodes:
        row = rows.pop(node.id)
        changed = _assign(row, _node_values(node, kind, parent_id, position))
        if isinstance(node, MeasureSpec):
            changed |= _store_places(session, node, place_rows.get(node.id, {}))
        if changed and node.id not in new:
            _definition_changed(row)
    for row in rows.values():
        if row.retired_at is None:
            row.retired_at = now
            _definition_changed(row)


def _definition_changed(row: Node) -> None:
    """A changed definition changes the figures too: both versions move."""
    row.definition_version += 1
    row.data_version += 1


def _node_values(node: NodeSpec, kind: str, parent_id: str | None, position: int) -> dict:
    """The Node columns for a node of the tree."""
    values = {
        "kind": kind,
        "parent_id": parent_id,
        "position": position,
        "title": node.title,
        "weight": node.weight,
        "agency_id": node.agency if isinstance(node, OutputSpec) else None,
        "retired_at": None,
    }
    if not isinstance(node, MeasureSpec):
        return values | dict.fromkeys(_MEASURE_COLUMNS) | {"milestones": [], "dimensions": []}
    return values | {
        "measure_type": node.type,
        "unit": node.unit,
        "measure_kind": node.kind,
        "aggregate": node.aggregate,
        "frequency": node.frequency,
        "start": node.start,
        "due": node.due,
        "city_baseline": _city_value(node, node.baseline),
        "city_target": _city_value(node, node.target),
        "milestones": [{"date": d.isoformat(), "progress": p} for d, p in node.milestones],
        "dimensions": list(node.dimensions),
        "source": node.source,
    }


def _city_value(measure: MeasureSpec, value: float | dict | None) -> float | None:
    """A plain number on a sum measure is the city's alone (CONTRACT §3 rule 3)."""
    return value if measure.aggregate == "sum" and isinstance(value, float) else None


def _leaf_baseline(measure: MeasureSpec, place_id: str) -> float | None:
    """A place's own baseline: its map entry, or a number that applies to every place."""
    if isinstance(measure.baseline, dict):
        return measure.baseline[place_id]
    # Zero is zero everywhere, even on a sum measure: a target map needs it at each leaf.
    return measure.baseline if measure.aggregate != "sum" or measure.baseline == 0 else None


def _leaf_target(measure: MeasureSpec, place_id: str) -> float | None:
    """A place's own target: its map entry, or a number on a mean, min or max measure."""
    if isinstance(measure.target, dict):
        return measure.target[place_id]
    return measure.target if measure.aggregate != "sum" else None


def _store_places(session: Session, measure: MeasureSpec, rows: dict[str, MeasurePlace]) -> bool:
    """Make the measure's MeasurePlace rows match the tree; whether anything changed."""
    wanted = {
        place: {"baseline": _leaf_baseline(measure, place), "target": _leaf_target(measure, place)}
        for place in measure.places
    }
    changed = False
    for place, row in rows.items():
        if place not in wanted:
            session.delete(row)  # place rows hold no history
            changed = True
    for place, values in wanted.items():
        if place in rows:
            changed |= _assign(rows[place], values)
        else:
            session.add(MeasurePlace(measure_id=measure.id, place_id=place, **values))
            changed = True
    return changed


def _store_dimensions(session: Session, tree: Tree) -> set[str]:
    """Make the Dimension rows match the tree's declared dimension values; the names of
    stored dimensions that gained or lost a value (a new one changes only the measures
    that now declare it, which store_nodes sees)."""
    rows = {(row.name, row.value): row for row in session.exec(select(Dimension))}
    stored = {name for name, _ in rows}
    changed = set()
    for name, values in tree.dimensions.items():
        for position, value in enumerate(values):
            row = rows.pop((name, value), None)
            if row is None:
                session.add(Dimension(name=name, value=value, position=position))
                changed.add(name)
            else:
                _assign(row, {"position": position})
    for row in rows.values():
        session.delete(row)
        changed.add(row.name)
    return changed & stored


def _dimensions_changed(session: Session, names: set[str]) -> None:
    """A measure's cells are its dimensions' values: new values make new figures."""
    if not names:
        return
    for row in session.exec(select(Node).where(Node.kind == "measure", Node.retired_at.is_(None))):
        if names & set(row.dimensions or ()):
            _definition_changed(row)


# Feed settings that change when it runs, not what a run reads.
_SCHEDULING = {"every", "cron", "timeout", "retired_at"}


def _store_feeds(session: Session, tree: Tree, now: datetime) -> None:
    """Upsert feeds, keeping their conditional-GET state; retire dropped feeds."""
    rows = {row.id: row for row in session.exec(select(Feed))}
    for feed in tree.feeds():
        values = {
            "agency_id": feed.agency,
            "url": feed.url,
            "format": feed.format,
            "every": feed.every,
            "cron": feed.cron,
            "provides": feed.provides,
            "timeout": feed.timeout,
            "measure_id": feed.measure,
            "fields": dict(feed.fields),
            "place_match": feed.place_match,
            "options": dict(feed.options),
            "retired_at": None,
        }
        row = rows.pop(feed.id, None)
        if row is None:
            session.add(Feed(id=feed.id, **values))
            continue
        reading = {k: v for k, v in values.items() if k not in _SCHEDULING}
        if any(getattr(row, key) != value for key, value in reading.items()):
            # A new address or a new way of reading the rows (mapping, measure, places,
            # options): the source must be read again even if it has not changed, so
            # forget its validators rather than earn a 304 that keeps the old result.
            row.etag = row.last_modified = None
        _assign(row, values)
    for row in rows.values():
        if row.retired_at is None:
            row.retired_at = now
