"""The audit trail, for signed-in officials."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tracker.api.blueprint import api
from tracker.api.spec import UtcTime, endpoint
from tracker.audit import audit_trail
from tracker.auth import require_role
from tracker.db import get_session
from tracker.vocabulary import AuditChannel


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    measure: str | None = Field(
        None, max_length=100, description="a measure id", examples=["homes-repaired"]
    )
    place: str | None = Field(None, max_length=100, description="a place id", examples=["opawa"])
    limit: int = Field(200, ge=1, le=5000, description="at most this many changes, newest first")


class AuditEntry(BaseModel):
    at: UtcTime
    action: str = Field(description="observation.create, observation.revise, work.create …")
    entity: str = Field(description="what changed: measure/place/date[/cell], AGENCY/ID …")
    agency: str | None
    channel: AuditChannel
    token: int | None = Field(description="the API token used, if any")
    user: str | None = Field(description="the signed-in user's email, if any")
    batch: int | None
    feed_run: int | None
    measure: str | None
    place: str | None
    old: Any = Field(description="the values before the change; null when created")
    new: Any


@endpoint(
    api,
    "/v1/audit",
    query=AuditQuery,
    response=list[AuditEntry],
    errors=(401, 403),
    tags=("audit",),
    auth="officialSession",
)
def audit(query: AuditQuery):
    """Every accepted change, newest first: who, through which channel, when, old → new.

    For officials signed in on the web (the session cookie)."""
    from tracker.web.auth import current_user

    require_role(current_user(), "official", what="The audit trail")
    return audit_trail(
        get_session(), measure_id=query.measure, place_id=query.place, limit=query.limit
    )
