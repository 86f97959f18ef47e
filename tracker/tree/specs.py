"""The results tree as typed objects: the pydantic spec classes and their field rules."""

import math
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tracker.limits import (
    MAX_FEED_EVERY_MINUTES,
    MAX_FEED_TIMEOUT,
    MAX_WEIGHT,
    date_problem,
    magnitude_problem,
)
from tracker.places import Boundary
from tracker.vocabulary import Aggregate, Frequency, MeasureKind

SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
DIMENSION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
EVERY = re.compile(r"([0-9]+)[mhd]")


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


def _feed_format(value: str) -> str:
    """A registered feed format: a built-in one or a site's own (TRACKER_IMPORTERS)."""
    from importers import known_formats

    formats = known_formats()
    if value not in formats:
        names = [repr(name) for name in formats]
        raise ValueError(f"should be {', '.join(names[:-1])} or {names[-1]}")
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
    format: Annotated[str, StringConstraints(max_length=20), AfterValidator(_feed_format)]
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


CategoryCode = Annotated[str, StringConstraints(max_length=50), AfterValidator(_slug)]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]


class ReportCategorySpec(_Spec):
    """A kind of problem residents report (an Open311 service), routed to one agency."""

    code: CategoryCode
    name: Text
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""
    agency: Slug
    group: Text | None = None
    keywords: list[Keyword] = []


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
    kind: MeasureKind
    aggregate: Aggregate
    frequency: Frequency
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
    # Measures whose `dimensions` list changed: their observations stored under the old
    # cells no longer fit the new ones and stop counting.
    measure_dimensions: Annotated[list[Slug], AfterValidator(_unique)] = []


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
    # Extension to CONTRACT §2: what residents can report, and which agency hears of it.
    report_categories: list[ReportCategorySpec] = []
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
