"""Works by place, street or box, as GeoJSON."""

import datetime
import re
from typing import Any, Literal

from flask import request, url_for
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tracker.api.blueprint import api
from tracker.api.spec import UtcTime, endpoint
from tracker.db import get_session
from tracker.limits import MAX_BBOX_DEGREES, WORKS_PAGE_SIZE
from tracker.vocabulary import WorkStatus
from tracker.works import work_features, works_in_bbox, works_in_place, works_on_street

_NUMBER = r" *[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)? *"
BBOX_PATTERN = f"^{_NUMBER}(,{_NUMBER}){{3}}$"


class WorksQuery(BaseModel):
    """Exactly one of place, street or bbox."""

    model_config = ConfigDict(extra="forbid")

    place: str | None = Field(None, max_length=100, description="a place id", examples=["opawa"])
    street: str | None = Field(
        None, max_length=150, description="a street id", examples=["opawa-road"]
    )
    bbox: str | None = Field(
        None,
        max_length=100,
        description=f"west,south,east,north in degrees, at most {MAX_BBOX_DEGREES:g} each way",
        examples=["172.60,-43.54,172.62,-43.52"],
        json_schema_extra={"pattern": BBOX_PATTERN},
    )
    limit: int = Field(
        WORKS_PAGE_SIZE, ge=1, le=WORKS_PAGE_SIZE, description="works per page (at most 500)"
    )
    after: str | None = Field(
        None,
        max_length=250,
        description="AGENCY/ID of the last work of the previous page; the `next` link sets it",
    )

    @field_validator("bbox")
    @classmethod
    def _four_numbers(cls, bbox: str | None) -> str | None:
        # The document's pattern, so that what it calls invalid is refused (not nan or 1_0).
        if bbox is not None and not re.fullmatch(BBOX_PATTERN, bbox):
            raise ValueError("bbox must be four numbers: west,south,east,north")
        return bbox

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
    status: WorkStatus
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
    total: int = Field(description="works matching the query, on every page together")
    next: str | None = Field(description="URL of the next page; null on the last page")


@endpoint(
    api, "/v1/works", query=WorksQuery, response=WorkCollection, errors=(404,), tags=("works",)
)
def works(query: WorksQuery):
    """Works in a place (or below it), along a street, or in a bounding box, in pages.

    Works come in (agency, id) order, at most `limit` (default and most: 500) a page;
    `total` counts them all and `next` is the address of the next page, or null.
    """
    session = get_session()
    paging = {"after": query.after, "limit": query.limit}
    if query.place:
        page = works_in_place(session, query.place, **paging)
    elif query.street:
        page = works_on_street(session, query.street, **paging)
    else:
        page = works_in_bbox(session, query.bbox, **paging)
    answer = work_features(session, page.works)
    answer["total"] = page.total
    answer["next"] = None
    if page.after is not None:
        answer["next"] = url_for(
            ".works", _external=True, **{**request.args.to_dict(), "after": page.after}
        )
    return answer
