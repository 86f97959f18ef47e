"""Works by place, street or box, as GeoJSON."""

import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tracker.api.blueprint import api
from tracker.api.spec import UtcTime, endpoint
from tracker.db import get_session
from tracker.works import work_features, works_in_bbox, works_in_place, works_on_street


class WorksQuery(BaseModel):
    """Exactly one of place, street or bbox."""

    model_config = ConfigDict(extra="forbid")

    place: str | None = Field(None, max_length=100, description="a place id")
    street: str | None = Field(None, max_length=150, description="a street id")
    bbox: str | None = Field(None, max_length=100, description="west,south,east,north")

    @model_validator(mode="after")
    def _exactly_one(self) -> "WorksQuery":
        given = [name for name in ("place", "street", "bbox") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of place, street or bbox")
        return self


class WorkProperties(BaseModel):
    id: str = Field(description="AGENCY/ID")
    agency: str
    ref: str = Field(description="the agency's own id")
    title: str
    status: Literal["planned", "in_progress", "complete", "cancelled"]
    street: str | None
    places: list[str] = Field(description="neighbourhoods it lies in, largest share first")
    planned_start: datetime.date | None
    planned_end: datetime.date | None
    actual_start: datetime.date | None
    actual_end: datetime.date | None
    measure: str | None
    quantity: float | None
    updated_at: UtcTime


class WorkFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: dict[str, Any]
    properties: WorkProperties


class WorkCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[WorkFeature]


@endpoint(
    api, "/v1/works", query=WorksQuery, response=WorkCollection, errors=(404,), tags=("works",)
)
def works(query: WorksQuery):
    """Works in a place (or below it), along a street, or in a bounding box."""
    session = get_session()
    if query.place:
        found = works_in_place(session, query.place)
    elif query.street:
        found = works_on_street(session, query.street)
    else:
        found = works_in_bbox(session, query.bbox)
    return work_features(session, found)
