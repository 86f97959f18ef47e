"""Request and answer models of the /api/v1 routes; the OpenAPI document is built from them."""

import datetime
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from tracker.limits import date_problem
from tracker.vocabulary import BatchChannel, Frequency


class Strict(BaseModel):
    """Query models refuse parameters they do not know, naming them."""

    model_config = ConfigDict(extra="forbid")


class PlaceProperties(BaseModel):
    id: str
    name: str
    level: Literal["city", "area", "neighbourhood"]
    parent: str | None = Field(description="id of the parent place; null for the city")


class PlaceFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    properties: PlaceProperties
    geometry: dict[str, Any] = Field(
        description="GeoJSON Polygon or MultiPolygon (WGS84), simplified to about 10 m"
    )


class PlaceCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[PlaceFeature]


class StreetsQuery(Strict):
    q: str = Field(
        max_length=200,
        description="Words that must each start a word of the street's name; case and "
        "macrons are ignored",
        examples=["opawa ro"],
    )


class StreetMatch(BaseModel):
    id: str
    name: str
    places: list[str] = Field(description="ids of the neighbourhoods the street lies in")


# --- roll-up (CONTRACT §3 and §4) -------------------------------------------------------


def _iso_date_text(value: Any) -> Any:
    """Dates in queries are exactly YYYY-MM-DD (pydantic alone would take timestamps too)."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("dates are YYYY-MM-DD")
    return value


def _within_calendar(value: datetime.date) -> datetime.date:
    """Days past the tracker's calendar would overflow a window or a trajectory."""
    if problem := date_problem(value):
        raise ValueError(f"dates {problem}")
    return value


IsoDate = Annotated[
    datetime.date,
    BeforeValidator(_iso_date_text),
    AfterValidator(_within_calendar),
    # The calendar's years (tracker.limits) in the document too: 1900-01-01 to 2199-12-31.
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "pattern": "^(19[0-9]{2}|2[01][0-9]{2})-[0-9]{2}-[0-9]{2}$",
        }
    ),
]
Status = Literal["complete", "on_track", "at_risk", "off_track", "no_target", "no_data"]


class RollupQuery(BaseModel):
    """`place` and `date`, plus any number of `dim.NAME=VALUE` filters."""

    model_config = ConfigDict(extra="allow")

    place: str | None = Field(
        None, max_length=100, description="Place id; default: the city", examples=["opawa"]
    )
    date: IsoDate | None = Field(
        None,
        description="Observations dated on or before this day count; default: today",
        examples=["2014-12-31"],
    )

    @model_validator(mode="after")
    def _only_dimension_extras(self) -> "RollupQuery":
        for name in self.model_extra or {}:
            if not name.startswith("dim.") or len(name) == len("dim."):
                raise ValueError(f"unknown parameter {name!r}")
        return self

    def dimension_filters(self) -> dict[str, str]:
        """{dimension: value} from the `dim.NAME=VALUE` parameters."""
        return {name[len("dim.") :]: str(value) for name, value in (self.model_extra or {}).items()}


class RollupPlace(BaseModel):
    id: str
    name: str
    level: Literal["city", "area", "neighbourhood"]
    parent: str | None


class RollupNodeBase(BaseModel):
    id: str
    title: str
    progress: float | None = Field(description="0..1; null when unknown (no value or target)")
    expected: float | None = Field(description="0..1, where the plan says progress should be")
    status: Status
    coverage: float | None = Field(
        description="Measures: share of the place's neighbourhoods with a value; outputs and "
        "results: share of the children's weight that has progress"
    )


class ResultNode(RollupNodeBase):
    kind: Literal["result", "output"]
    children: list["RollupNode"]


class MeasureNode(RollupNodeBase):
    kind: Literal["measure"]
    children: list["RollupNode"] = Field(description="always empty")
    value: float | None = Field(description="raw value in the measure's unit")
    target: float | None
    baseline: float | None
    unit: str | None
    as_of: datetime.date | None = Field(description="latest observation date used")
    stale: bool | None = Field(description="null when nothing has been reported")
    forecast: datetime.date | None = Field(description="day the trend reaches the target")
    problem: str | None = Field(
        None,
        description="why some neighbourhoods' stored values cannot be used (they are left "
        "out, lowering coverage); null normally",
    )


RollupNode = Annotated[ResultNode | MeasureNode, Field(discriminator="kind")]
ResultNode.model_rebuild()
MeasureNode.model_rebuild()


class RollupAnswer(BaseModel):
    place: RollupPlace
    date: datetime.date
    results: list[RollupNode]


class SeriesQuery(Strict):
    place: str | None = Field(
        None, max_length=100, description="Place id; default: the city", examples=["opawa"]
    )


class SeriesPoint(BaseModel):
    date: datetime.date
    value: float | None
    expected: float | None = Field(
        description="B + E·(T − B) in the measure's unit; null without T"
    )


class ExplainQuery(Strict):
    node: str = Field(
        max_length=100, description="Result, output or measure id", examples=["homes-repaired"]
    )
    place: str | None = Field(
        None, max_length=100, description="Place id; default: the city", examples=["opawa"]
    )
    date: IsoDate | None = Field(None, description="Default: today", examples=["2014-12-31"])


class ExplainFiguresBase(BaseModel):
    id: str
    title: str
    weight: float
    progress: float | None
    expected: float | None
    status: Status
    coverage: float | None


class ExplainResultFigures(ExplainFiguresBase):
    kind: Literal["result", "output"]


class ExplainMeasureFigures(ExplainFiguresBase):
    kind: Literal["measure"]
    value: float | None
    target: float | None
    baseline: float | None
    unit: str | None
    as_of: datetime.date | None
    stale: bool | None
    forecast: datetime.date | None
    problem: str | None = Field(
        None,
        description="why some neighbourhoods' stored values cannot be used (they are left "
        "out, lowering coverage); null normally",
    )


class ExplainObservation(BaseModel):
    date: datetime.date
    dims: dict[str, str]
    value: float
    revisions: int = Field(description="how many values were sent for this observation")
    agency: str
    channel: BatchChannel
    feed_run: int | None = Field(description="the feed run that sent it (channel feed)")
    received: str = Field(description="when its current value arrived, UTC ISO 8601 with Z")


class ExplainWork(BaseModel):
    id: str = Field(description="AGENCY/REF")
    title: str
    actual_end: datetime.date
    quantity: float | None
    share: float = Field(description="the work's share of length or area in this neighbourhood")
    amount: float = Field(description="what it adds here: quantity × share, or 1 without one")
    agency: str
    channel: BatchChannel
    feed_run: int | None
    received: str = Field(description="when its current version arrived, UTC ISO 8601 with Z")


class ExplainLeaf(BaseModel):
    place: str
    value: float | None
    counted: bool = Field(description="whether this neighbourhood's value went into the figure")
    problem: str | None = Field(None, description="why its stored value cannot be used")
    baseline: float | None
    target: float | None
    observations: list[ExplainObservation] = Field(
        description="cumulative/level: the latest observation of each cell; flow: every "
        "observation summed"
    )
    works: list[ExplainWork] = Field(
        default_factory=list,
        description="`source: works` measures: each completed work counted here (CONTRACT §6)",
    )


class ExplainChild(BaseModel):
    id: str
    kind: Literal["result", "output", "measure"]
    title: str
    weight: float
    progress: float | None
    expected: float | None
    status: Status
    counted: bool = Field(description="whether it has progress and so counts in the parent")


class ExplainAnswer(BaseModel):
    node: Annotated[ExplainResultFigures | ExplainMeasureFigures, Field(discriminator="kind")]
    place: RollupPlace
    date: datetime.date
    leaves: list[ExplainLeaf] | None = Field(description="for a measure; null otherwise")
    children: list[ExplainChild] | None = Field(description="for an output or result")


class TimelinessQuery(Strict):
    agency: str = Field(max_length=100, description="Agency id", examples=["eqc"])


class TimelinessRow(BaseModel):
    measure: str
    title: str
    frequency: Frequency
    start: datetime.date
    due: datetime.date
    places: int = Field(description="neighbourhoods the measure covers")
    periods: int = Field(description="reporting periods over by today, from start to due")
    expected: int = Field(description="reports expected: periods × places")
    received: int = Field(description="expected reports with at least one observation")
    on_time: int = Field(
        description="received reports whose first observation arrived by the end of the "
        "following period (UTC)"
    )
