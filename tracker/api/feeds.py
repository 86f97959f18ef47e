"""Feed health (CONTRACT §4, §7): each feed's latest run and when it runs next."""

from typing import Literal

from pydantic import BaseModel, Field

from tracker.api.blueprint import api
from tracker.api.spec import endpoint
from tracker.db import get_session
from tracker.feeds import feed_health


class FeedStatus(BaseModel):
    id: str
    agency: str = Field(description="id of the agency that publishes the feed")
    status: Literal["never_run", "ok", "unchanged", "failed"] = Field(
        description="outcome of the latest finished run; unchanged: the source answered "
        "304 Not Modified (or the file is as it was), so nothing was stored"
    )
    last_run: str | None = Field(description="when the latest run started, UTC (…Z)")
    rows: int | None = Field(description="rows the latest run stored, changed or not")
    rejected: int | None = Field(description="rows the latest run refused, each with a reason")
    error: str | None = Field(description="why the latest run failed, when it did")
    next_run: str = Field(
        description="when the schedule next calls for a run, UTC (…Z); never before now"
    )


@endpoint(api, "/v1/feeds", response=list[FeedStatus], tags=("feeds",))
def feeds():
    """Every feed in the tree with its latest run, in id order."""
    return [health.to_json() for health in feed_health(get_session())]
