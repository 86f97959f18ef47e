"""Database tables for the whole domain.

Later capabilities add behaviour on top of these tables, not new ones. Every table is
created and changed only through Alembic migrations (tracker/migrations).

Conventions: times are timezone-aware UTC (`utcnow()`); geometries are GeoJSON text in
WGS84 lon/lat with a bounding box alongside for cheap filtering; JSON columns hold small
structured values from the results tree.
"""

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Select, Text, UniqueConstraint, select, union_all
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- places ---------------------------------------------------------------------------


class Place(SQLModel, table=True):
    """A node of the place tree: the city, an area, or a neighbourhood (the leaf).

    Only live places (retired_at null) are listed, searched, rolled up and given works.
    """

    id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=200)
    level: str = Field(max_length=20, index=True)  # city | area | neighbourhood
    parent_id: str | None = Field(default=None, foreign_key="place.id", index=True)
    search_key: str = Field(max_length=200, index=True)
    timezone: str | None = Field(default=None, max_length=50)  # the city's (from the tree)
    geometry: str = Field(sa_column=Column(Text, nullable=False))  # full boundary
    display_geometry: str = Field(sa_column=Column(Text, nullable=False))  # simplified
    label_lon: float
    label_lat: float
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float
    # Set when the boundaries file no longer has the place (never deleted: observations,
    # works and comments refer to it); cleared when a later file has it again.
    retired_at: datetime | None = None


class Street(SQLModel, table=True):
    """Same-named road segments that connect (CONTRACT §1)."""

    id: str = Field(primary_key=True, max_length=150)
    name: str = Field(max_length=200)
    search_key: str = Field(max_length=200, index=True)
    main_place_id: str | None = Field(default=None, foreign_key="place.id")
    geometry: str = Field(sa_column=Column(Text, nullable=False))  # MultiLineString
    length_m: float
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


class StreetPlace(SQLModel, table=True):
    """A neighbourhood that a street crosses."""

    street_id: str = Field(foreign_key="street.id", primary_key=True, max_length=150)
    place_id: str = Field(foreign_key="place.id", primary_key=True, max_length=100, index=True)


# --- agencies, people and credentials --------------------------------------------------


class Agency(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=200)
    retired_at: datetime | None = None


class ApiToken(SQLModel, table=True):
    """An agency's API token; only its SHA-256 hash is stored (tokens are random, 256 bit)."""

    id: int | None = Field(default=None, primary_key=True)
    agency_id: str = Field(foreign_key="agency.id", index=True, max_length=100)
    token_hash: str = Field(unique=True, max_length=64)
    label: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class User(SQLModel, table=True):
    """Staff account: agency staff (one agency) or an official."""

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=254)
    password_hash: str = Field(max_length=300)
    role: str = Field(max_length=20)  # agency | official
    agency_id: str | None = Field(default=None, foreign_key="agency.id", max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None
    failed_logins: int = 0
    locked_until: datetime | None = None
    disabled_at: datetime | None = None
    # Kept in each browser session at sign-in; bumped at sign-out, which ends them all.
    session_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


# --- the results tree -----------------------------------------------------------------


class Node(SQLModel, table=True):
    """A result, output or measure from results_tree.yaml.

    Ids that disappear from the file are retired (retired_at set), never deleted, so
    their observations and history stay.
    """

    id: str = Field(primary_key=True, max_length=100)
    kind: str = Field(max_length=10, index=True)  # result | output | measure
    parent_id: str | None = Field(default=None, foreign_key="node.id", index=True)
    position: int = 0  # order among siblings, as in the file
    title: str = Field(max_length=300)
    weight: float = 1.0
    agency_id: str | None = Field(default=None, foreign_key="agency.id", max_length=100)
    # measure fields (null on results and outputs)
    measure_type: str | None = Field(default=None, max_length=10)  # output | activity
    unit: str | None = Field(default=None, max_length=50)
    measure_kind: str | None = Field(default=None, max_length=12)  # vocabulary.MEASURE_KINDS
    aggregate: str | None = Field(default=None, max_length=6)  # vocabulary.AGGREGATES
    frequency: str | None = Field(default=None, max_length=10)  # vocabulary.FREQUENCIES
    start: date | None = None
    due: date | None = None
    city_baseline: float | None = None  # a plain number on a sum measure: the city's alone
    city_target: float | None = None
    milestones: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    dimensions: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    source: str | None = Field(default=None, max_length=10)  # None | works
    data_version: int = 0  # bumped by every write to this measure; keys roll-up caches
    # Bumped (with data_version) only when the tree changes the node's definition or
    # places: keys the roll-up's cache of definitions, which writes leave alone.
    definition_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    retired_at: datetime | None = None


# A measure is its output's agency's (CONTRACT §1: an output is one agency's contribution):
# the one place that says so in SQL. Join with `join_measure_agency` and select
# `MEASURE_AGENCY` for it.
_MEASURE_OUTPUT = Node.__table__.alias("measure_output")
MEASURE_AGENCY = _MEASURE_OUTPUT.c.agency_id


def join_measure_agency(query: Select) -> Select:
    """`query`, over measures' Node rows, joined to each measure's output (its agency)."""
    return query.join(_MEASURE_OUTPUT, _MEASURE_OUTPUT.c.id == Node.parent_id)


class MeasurePlace(SQLModel, table=True):
    """A neighbourhood a measure covers, with its own baseline and target where known."""

    measure_id: str = Field(foreign_key="node.id", primary_key=True, max_length=100)
    place_id: str = Field(foreign_key="place.id", primary_key=True, max_length=100, index=True)
    baseline: float | None = None
    target: float | None = None


class Dimension(SQLModel, table=True):
    """A declared dimension value (e.g. age = 65+), in the order the tree gives."""

    name: str = Field(primary_key=True, max_length=50)
    value: str = Field(primary_key=True, max_length=50)
    position: int = 0


# --- submissions ----------------------------------------------------------------------


class Batch(SQLModel, table=True):
    """One accepted submission: an API call, CSV upload, web entry or feed run."""

    id: int | None = Field(default=None, primary_key=True)
    agency_id: str = Field(foreign_key="agency.id", index=True, max_length=100)
    channel: str = Field(max_length=10)  # vocabulary.BATCH_CHANNELS
    token_id: int | None = Field(default=None, foreign_key="apitoken.id")
    user_id: int | None = Field(default=None, foreign_key="user.id")
    feed_run_id: int | None = Field(default=None, foreign_key="feedrun.id")
    received_at: datetime = Field(default_factory=utcnow)
    accepted: int = 0
    revised: int = 0
    unchanged: int = 0
    idempotency_key: str | None = Field(default=None, max_length=200)
    body_hash: str | None = Field(default=None, max_length=64)

    # One live key per agency; a key older than 24 hours is cleared before it is reused.
    __table_args__ = (
        UniqueConstraint("agency_id", "idempotency_key", name="uq_batch_idempotency"),
    )


class Observation(SQLModel, table=True):
    """The current value of one (measure, place, date, dimension cell): its latest revision.

    `value` is null when the latest revision retracted it. The values it held before are
    rows of ObservationRevision, so a value sent once is one row. No foreign keys: see
    migration 0004 (the write path checks measure and place against the tree, and makes
    the batch in the same transaction; none of those rows is ever deleted).
    """

    id: int | None = Field(default=None, primary_key=True)
    measure_id: str = Field(max_length=100)
    place_id: str = Field(max_length=100)
    date: date
    dims_key: str = Field(default="", max_length=200)  # "age=65+|sex=female", "" if none
    value: float | None = None
    revisions: int = 1  # this one is revision number `revisions`
    batch_id: int = Field(index=True)  # the latest revision's
    received_at: datetime = Field(default_factory=utcnow)  # the latest revision's
    first_received_at: datetime = Field(default_factory=utcnow)  # revision 1's: timeliness
    note: str | None = Field(default=None, max_length=1000)

    __table_args__ = (
        # Every read names the measure and its places, so this one key serves them all;
        # see migration 0005 for why there is no (measure_id, date) index beside it.
        UniqueConstraint("measure_id", "place_id", "dims_key", "date", name="uq_observation"),
    )


class ObservationRevision(SQLModel, table=True):
    """A value an observation held before its current one, with who sent it (its batch).

    Copied from the observation row when a new revision replaces it; with the row itself
    these are every value ever sent (every_revision() below reads both).
    """

    id: int | None = Field(default=None, primary_key=True)
    observation_id: int = Field(index=True)
    revision: int
    value: float | None = None
    batch_id: int = Field(index=True)
    received_at: datetime = Field(default_factory=utcnow)
    note: str | None = Field(default=None, max_length=1000)


def every_revision():
    """Every value ever sent for each observation, as one selectable: the values it held
    before (ObservationRevision) and its current one (the Observation row itself).

    Columns: observation_id, revision, value, batch_id, received_at, note.
    """
    rev, obs = ObservationRevision, Observation
    return union_all(
        select(rev.observation_id, rev.revision, rev.value, rev.batch_id, rev.received_at,
               rev.note),
        select(obs.id.label("observation_id"), obs.revisions.label("revision"), obs.value,
               obs.batch_id, obs.received_at, obs.note),
    ).subquery("every_revision")  # fmt: skip


# --- works ----------------------------------------------------------------------------


class Work(SQLModel, table=True):
    """A located piece of work; identity is (agency, external id)."""

    id: int | None = Field(default=None, primary_key=True)
    agency_id: str = Field(foreign_key="agency.id", max_length=100)
    ref: str = Field(max_length=100)  # the agency's own id: the public id is AGENCY/REF
    title: str = Field(max_length=300)
    status: str = Field(max_length=12, index=True)  # vocabulary.WORK_STATUSES
    geometry: str = Field(sa_column=Column(Text, nullable=False))
    street_id: str | None = Field(default=None, foreign_key="street.id", max_length=150)
    main_place_id: str | None = Field(default=None, foreign_key="place.id", index=True)
    planned_start: date | None = None
    planned_end: date | None = None
    actual_start: date | None = None
    actual_end: date | None = None
    measure_id: str | None = Field(default=None, foreign_key="node.id", max_length=100)
    quantity: float | None = None
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float
    batch_id: int = Field(foreign_key="batch.id")
    updated_at: datetime = Field(default_factory=utcnow)

    __table_args__ = (UniqueConstraint("agency_id", "ref", name="uq_work_ref"),)


class WorkPlace(SQLModel, table=True):
    """The share of a work (by length or area in NZTM2000) in a neighbourhood."""

    work_id: int = Field(foreign_key="work.id", primary_key=True)
    place_id: str = Field(foreign_key="place.id", primary_key=True, max_length=100, index=True)
    share: float


class WorkStreet(SQLModel, table=True):
    """A street a work lies on: within NEAR_STREET_M of its geometry, or the one it was filed
    under; kept at store time and when the gazetteer changes, so street pages are SQL."""

    work_id: int = Field(foreign_key="work.id", primary_key=True)
    street_id: str = Field(foreign_key="street.id", primary_key=True, max_length=150, index=True)
    distance_m: float  # from the work's geometry to the street, in NZTM2000


class WorkStatusChange(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    work_id: int = Field(foreign_key="work.id", index=True)
    old_status: str | None = Field(default=None, max_length=12)
    new_status: str = Field(max_length=12)
    batch_id: int = Field(foreign_key="batch.id")
    changed_at: datetime = Field(default_factory=utcnow)


# --- feeds ----------------------------------------------------------------------------


class Feed(SQLModel, table=True):
    """An agency's published file or API, from the tree; conditional-GET state kept here."""

    id: str = Field(primary_key=True, max_length=100)
    agency_id: str = Field(foreign_key="agency.id", max_length=100)
    url: str = Field(max_length=2000)
    format: str = Field(max_length=20)
    every: str | None = Field(default=None, max_length=20)
    cron: str | None = Field(default=None, max_length=100)
    provides: str = Field(default="observations", max_length=20)
    timeout: float = 30
    measure_id: str | None = Field(default=None, max_length=100)
    fields: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    place_match: str = Field(default="id", max_length=10)
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    etag: str | None = Field(default=None, max_length=500)
    last_modified: str | None = Field(default=None, max_length=100)
    retired_at: datetime | None = None


class FeedRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    feed_id: str = Field(foreign_key="feed.id", index=True, max_length=100)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    status: str = Field(default="running", max_length=12)  # running|ok|unchanged|failed
    rows: int = 0
    rejected: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    http_status: int | None = None


class FeedRejection(SQLModel, table=True):
    """A row a feed run refused, with the reason, shown on the feed's page."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="feedrun.id", index=True)
    row: int | None = None
    field: str | None = Field(default=None, max_length=100)
    message: str = Field(sa_column=Column(Text, nullable=False))
    raw: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class SchedulerLease(SQLModel, table=True):
    """Held by the one running scheduler; renewed by its heartbeat, taken over on expiry."""

    name: str = Field(primary_key=True, max_length=50)
    holder: str = Field(max_length=200)
    expires_at: datetime


# --- residents and the audit trail -------------------------------------------------------


class Comment(SQLModel, table=True):
    """A resident's comment on a place, work or measure (tracker/comments.py). No account:
    a name, shown, and an email, never shown. Pre-moderated: `pending` until an official
    publishes or rejects it (with a reason the author is mailed). Migration 0014."""

    id: int | None = Field(default=None, primary_key=True)
    place_id: str | None = Field(default=None, foreign_key="place.id", index=True)
    street_id: str | None = Field(default=None, foreign_key="street.id", index=True)
    work_id: int | None = Field(default=None, foreign_key="work.id", index=True)
    measure_id: str | None = Field(default=None, foreign_key="node.id", max_length=100, index=True)
    author_name: str = Field(max_length=100)
    email: str | None = Field(default=None, max_length=254, index=True)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="pending", max_length=10, index=True)  # pending|published|rejected
    reason: str | None = Field(default=None, sa_column=Column(Text))  # why it was rejected
    moderated_by: int | None = Field(default=None, foreign_key="user.id")
    moderated_at: datetime | None = None
    published_at: datetime | None = None
    # Residents' "report this comment" clicks since it was last moderated: a published
    # comment with any goes back to the moderation queue.
    reports: int = 0


class Challenge(SQLModel, table=True):
    """A resident saying a work marked complete is not finished (tracker/challenges.py),
    with a note and optionally where. The owning agency answers on /agency; the work page
    shows open challenges and answers. `email` is never shown. Migration 0014."""

    id: int | None = Field(default=None, primary_key=True)
    work_id: int = Field(foreign_key="work.id", index=True)
    note: str = Field(sa_column=Column(Text, nullable=False))
    location: str | None = Field(default=None, max_length=300)  # "outside number 12" …
    author_name: str = Field(max_length=100)
    email: str | None = Field(default=None, max_length=254, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="open", max_length=10, index=True)  # open | answered | hidden
    answer: str | None = Field(default=None, sa_column=Column(Text))
    answered_at: datetime | None = None
    answered_by: int | None = Field(default=None, foreign_key="user.id")


class Subscription(SQLModel, table=True):
    """A resident following a place or street by email (tracker/alerts.py): confirmed by a
    link, then a digest every TRACKER_ALERT_DIGEST_HOURS; unconfirmed ones expire."""

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, index=True)
    place_id: str | None = Field(default=None, foreign_key="place.id", index=True)
    street_id: str | None = Field(default=None, foreign_key="street.id", index=True)
    # A random nonce, part of every signed link for this row (confirm, unsubscribe), so a
    # link outlives neither its row nor a row that later reuses the id. Migration 0012.
    token_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    confirmed_at: datetime | None = None
    last_sent_at: datetime | None = None


class OutboxMail(SQLModel, table=True):
    """A mail waiting to be sent, or sent. Every mail goes through here (tracker/mail.py),
    so a mail server that is down delays mail and loses none."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=30)  # confirm, digest, comment.published, report.new …
    to_address: str = Field(max_length=254)
    subject: str = Field(max_length=200)
    body: str = Field(sa_column=Column(Text, nullable=False))
    # Extra headers (List-Unsubscribe …) as {name: value}, checked like the subject.
    headers: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    attempts: int = 0
    sent_at: datetime | None = Field(default=None, index=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    # Given up on (a recipient refused for good, unsafe headers): kept, no longer sent.
    failed_at: datetime | None = None  # migration 0012


# --- participation (issue 12): each part keeps its tables in its own block ---------------
# rate limits: migration 0011; comments and challenges: migration 0014
# alerts (subscriptions): migration 0012
# problem reports and Open311 keys: migration 0013


class RateCounter(SQLModel, table=True):
    """Hits of one client in one fixed window of one bucket (tracker/ratelimit.py), kept
    in the database so a limit holds across every worker and host. `client` is an
    HMAC of the address with the secret key, never the address. Migration 0011."""

    bucket: str = Field(primary_key=True, max_length=50)
    client: str = Field(primary_key=True, max_length=64)
    window_start: datetime = Field(primary_key=True, index=True)
    count: int = 0


class ResidentKey(SQLModel, table=True):
    """The key of a resident's "your data" link (/me/KEY, tracker/residents.py), stored
    as its SHA-256 with the email it opens. Migration 0012."""

    key_hash: str = Field(primary_key=True, max_length=64)
    email: str = Field(max_length=254, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class ReportCategory(SQLModel, table=True):
    """A kind of problem residents report (an Open311 service), routed to one agency;
    from the tree's `report_categories`, retired (never deleted) when the file drops it."""

    code: str = Field(primary_key=True, max_length=50)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=500)
    agency_id: str = Field(foreign_key="agency.id", max_length=100)
    group_name: str | None = Field(default=None, max_length=100)
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    position: int = 0
    retired_at: datetime | None = None


class Report(SQLModel, table=True):
    """A problem a resident reported (web form or Open311), routed to its category's agency.
    `email` is the reporter's, never shown; status is open or closed with the agency's notes."""

    id: int | None = Field(default=None, primary_key=True)
    category_code: str = Field(foreign_key="reportcategory.code", max_length=50, index=True)
    agency_id: str = Field(foreign_key="agency.id", max_length=100, index=True)
    place_id: str | None = Field(default=None, foreign_key="place.id", index=True)
    status: str = Field(default="open", max_length=10, index=True)  # open | closed
    status_notes: str | None = Field(default=None, sa_column=Column(Text))
    description: str = Field(sa_column=Column(Text, nullable=False))
    lon: float
    lat: float
    address: str | None = Field(default=None, max_length=300)  # the street, as chosen
    name: str = Field(default="", max_length=100)
    email: str | None = Field(default=None, max_length=254)
    source: str = Field(default="web", max_length=10)  # web | open311
    open311_key_id: int | None = Field(default=None, foreign_key="open311key.id")
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Open311Key(SQLModel, table=True):
    """An Open311 client application's api_key, stored as its SHA-256 only."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class AuditEvent(SQLModel, table=True):
    """Who changed what, through which channel, when: old -> new."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    agency_id: str | None = Field(default=None, foreign_key="agency.id", max_length=100)
    token_id: int | None = Field(default=None, foreign_key="apitoken.id")
    user_id: int | None = Field(default=None, foreign_key="user.id")
    channel: str = Field(max_length=10)  # vocabulary.AUDIT_CHANNELS
    batch_id: int | None = Field(default=None, foreign_key="batch.id", index=True)
    action: str = Field(max_length=30)  # observation.create, work.update, token.revoke …
    entity_id: str = Field(max_length=300)  # e.g. "homes-repaired/dallington/2014-03-31"
    measure_id: str | None = Field(default=None, max_length=100)
    place_id: str | None = Field(default=None, max_length=100)
    old: Any | None = Field(default=None, sa_column=Column(JSON))
    new: Any | None = Field(default=None, sa_column=Column(JSON))

    __table_args__ = (Index("ix_audit_measure_place", "measure_id", "place_id"),)
