"""Agencies' writes: observations and works, as JSON or CSV, with a Bearer token.

The views only read the request and hand it to tracker.submissions, the one write path;
its refusals (422 with every bad row, 403 for another agency's measures) come back as
JSON through the app's one error handler.
"""

import json
from collections.abc import Callable
from typing import Any, Literal

from flask import request
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from tracker.api.blueprint import api
from tracker.api.spec import endpoint
from tracker.auth import agency_for_token
from tracker.db import transaction
from tracker.errors import TrackerError
from tracker.models import ApiToken
from tracker.submissions import (
    Idempotency,
    InputRows,
    Outcome,
    RowError,
    SubmissionRejected,
    read_observations_csv,
    read_works_csv,
    submit_observations,
    submit_works,
)
from tracker.vocabulary import WorkStatus

WRITE_ERRORS = (401, 403, 409, 413, 415, 422)
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "description": "any printable text, unique per batch: for 24 hours a retry with the same "
    "key and body gets the first answer again and stores nothing twice; the same key with "
    "another body is a 409",
    "schema": {"type": "string", "maxLength": 200, "examples": ["eqc-2014-03-nightly"]},
}


class WriteQuery(BaseModel):
    model_config = {"extra": "forbid"}

    dry_run: Literal["0", "1", "true", "false"] = Field(
        "0", description="1: validate and answer as if storing, but store nothing"
    )

    @property
    def is_dry_run(self) -> bool:
        return self.dry_run in ("1", "true")


class ObservationIn(BaseModel):
    measure: str
    place: str
    date: str = Field(description="YYYY-MM-DD, not in the future")
    value: float | None = Field(description="null retracts the current value (a revision)")
    dims: dict[str, str] | None = Field(
        None, description="a value for each of the measure's dimensions"
    )
    note: str | None = None


class ObservationBatch(BaseModel):
    observations: list[ObservationIn] = Field(min_length=1, description="at least one row")


class WorkIn(BaseModel):
    id: str = Field(description="the agency's own id; the public id is AGENCY/ID")
    title: str
    status: WorkStatus
    geometry: dict[str, Any] | None = Field(None, description="GeoJSON geometry (WGS84)")
    street: str | None = Field(None, description="a street id or name: the work lies along it")
    planned_start: str | None = None
    planned_end: str | None = None
    actual_start: str | None = None
    actual_end: str | None = None
    measure: str | None = Field(None, description="a `source: works` measure it counts towards")
    quantity: float | None = None


class WorkBatch(BaseModel):
    works: list[WorkIn] = Field(min_length=1, description="at least one row")


class BatchAnswer(BaseModel):
    accepted: int = Field(description="every row of the batch")
    revised: int = Field(description="rows that changed a stored value (a new revision)")
    unchanged: int = Field(description="rows equal to what was stored")
    batch: int | None = Field(description="the batch id; null for a dry run")


@endpoint(
    api,
    "/v1/observations",
    method="POST",
    query=WriteQuery,
    body=ObservationBatch,
    body_content_types=("application/json", "text/csv"),
    response=BatchAnswer,
    status=201,
    errors=WRITE_ERRORS,
    tags=("submissions",),
    auth="agencyToken",
    headers=(IDEMPOTENCY_HEADER,),
    body_example={
        "observations": [
            {"measure": "homes-repaired", "place": "opawa", "date": "2014-03-31", "value": 412},
            {
                "measure": "homes-repaired",
                "place": "st-albans",
                "date": "2014-03-31",
                "value": 655,
                "note": "March return",
            },
        ]
    },
)
def post_observations(query: WriteQuery):
    """Submit measure values: all rows are stored, or none (422 lists every bad row).

    CSV: header `measure,place,date,value[,dim.NAME…][,note]`; an empty value retracts.
    """
    return _submit(query, "observations", read_observations_csv, submit_observations)


@endpoint(
    api,
    "/v1/works",
    method="POST",
    query=WriteQuery,
    body=WorkBatch,
    body_content_types=("application/json", "text/csv"),
    response=BatchAnswer,
    status=201,
    errors=WRITE_ERRORS,
    tags=("submissions",),
    auth="agencyToken",
    headers=(IDEMPOTENCY_HEADER,),
    body_example={
        "works": [
            {
                "id": "WW-2291",
                "title": "Renew wastewater main, Ōpāwa Road",
                "status": "complete",
                "street": "opawa-road",
                "actual_start": "2013-11-04",
                "actual_end": "2014-03-20",
                "measure": "pipes-relaid",
                "quantity": 1.2,
            }
        ]
    },
)
def post_works(query: WriteQuery):
    """Create or update works by (agency, id): all rows are stored, or none.

    CSV: `id,title,status` with `geometry` (WKT), `lon`+`lat` or `street`, and optional
    `planned_start,planned_end,actual_start,actual_end,measure,quantity`.
    """
    return _submit(query, "works", read_works_csv, submit_works)


def _submit(
    query: WriteQuery,
    key: str,
    read_csv: Callable[[bytes], InputRows],
    submit: Callable[..., Outcome],
) -> dict[str, Any]:
    """Authenticate, read the body as JSON or CSV, submit it, commit; the answer's counts."""
    token = _token()
    body = request.get_data(cache=False)  # over the size limit: 413 from Flask
    parsed = _read_body(body, key, read_csv)
    idempotency = Idempotency.of(request.headers.get("Idempotency-Key"), body)
    arguments = {
        "agency_id": token.agency_id,
        "rows": parsed.rows,
        "row_numbers": parsed.row_numbers,
        "input_errors": parsed.errors,
        "channel": "api" if request.mimetype == "application/json" else "csv",
        "token_id": token.id,
        "idempotency": idempotency,
        "dry_run": query.is_dry_run,
    }
    try:
        with transaction() as session:
            outcome = submit(session, **arguments)
    except IntegrityError:
        # Two requests with one Idempotency-Key at once: the loser answers as a replay.
        if idempotency is None:
            raise
        with transaction() as session:
            outcome = submit(session, **arguments)
    return outcome.to_json()


def _token() -> ApiToken:
    """The request's agency token (`Authorization: Bearer TOKEN`), or 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TrackerError("send an agency token: Authorization: Bearer TOKEN", status=401)
    with transaction() as session:  # last_used_at is kept even when the batch is refused
        return agency_for_token(session, token.strip())


def _read_body(body: bytes, key: str, read_csv: Callable[[bytes], InputRows]) -> InputRows:
    """Rows from a JSON object `{key: [...]}` or a CSV body; 415 for other types."""
    if request.mimetype == "text/csv":
        return read_csv(body)
    if request.mimetype != "application/json":
        raise TrackerError(
            f"send application/json or text/csv, not {request.mimetype or 'no type'!r}",
            status=415,
        )
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = RowError(None, None, f"the body is not valid JSON ({exc})")
        raise SubmissionRejected([problem]) from None
    except RecursionError:
        problem = RowError(None, None, "the body nests lists or objects too deeply")
        raise SubmissionRejected([problem]) from None
    except ValueError:  # Python refuses integers of over 4,300 digits
        problem = RowError(None, None, "the body has a number of over 4,300 digits")
        raise SubmissionRejected([problem]) from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise SubmissionRejected([RowError(None, key, f'expected {{"{key}": [...]}}')])
    extra = sorted(set(data) - {key})
    if extra:
        raise SubmissionRejected([RowError(None, extra[0], f"unknown field {extra[0]!r}")])
    if problems := _nul_characters(data[key]):
        raise SubmissionRejected(problems)
    return InputRows(rows=data[key], row_numbers=list(range(len(data[key]))))


def _nul_characters(rows: list[Any]) -> list[RowError]:
    """A RowError for each row holding a NUL character anywhere (PostgreSQL refuses NUL in
    text, even in a lookup, and no id, name or note needs one)."""
    problems = []
    for index, row in enumerate(rows):
        fields = row.items() if isinstance(row, dict) else [(None, row)]
        for name, value in fields:
            shown = name.replace("\x00", "") if isinstance(name, str) else None
            pending = [name, value]
            while pending:  # not recursive: bodies nest up to about 1,000 deep
                item = pending.pop()
                if isinstance(item, str) and "\x00" in item:
                    message = f"{shown or 'the row'} holds a NUL character"
                    problems.append(RowError(index, shown, message))
                    break
                if isinstance(item, dict):
                    pending.extend(item.keys())
                    pending.extend(item.values())
                elif isinstance(item, list):
                    pending.extend(item)
    return problems
