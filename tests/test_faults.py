"""Faults: processes killed mid-write, a full disk, a read-only database.

Every case ends the same way: no partial batch (each batch holds exactly the rows it
counted), every batch a client was told was stored (HTTP 201, or a feed run "ok") present
exactly once, and on SQLite `PRAGMA integrity_check` says ok. Subprocesses have timeouts
and are killed in `finally`; every loop has a deadline. A PostgreSQL server restarted
under load is tests/test_faults_pg.py. docs/operations.md ("Faults: what happens when…")
has the figures these tests measure (run with `-s` to see them).
"""

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlmodel import Session

from tracker import create_app
from tracker.auth import issue_token
from tracker.models import Batch, every_revision
from tracker.web.errors import FULL, READ_ONLY

ROOT = Path(__file__).resolve().parent.parent
BASE_DAY = date(2012, 1, 1)
PLACES = ("opawa", "st-albans", "riccarton")


# --- what every case checks afterwards ---------------------------------------------------


def batch_sizes(engine) -> dict[int, tuple[int, int]]:
    """Each batch's id -> (rows it says it accepted, revisions stored under it)."""
    revisions = every_revision()
    with Session(engine) as session:
        counted = dict(session.execute(select(Batch.id, Batch.accepted)).all())
        stored = dict(
            session.execute(
                select(revisions.c.batch_id, func.count()).group_by(revisions.c.batch_id)
            ).all()
        )
    return {batch: (accepted, stored.get(batch, 0)) for batch, accepted in counted.items()}


def assert_whole(engine) -> None:
    """No partial batch, no stray revision, and (SQLite) an intact file."""
    sizes = batch_sizes(engine)
    partial = {batch: size for batch, size in sizes.items() if size[0] != size[1]}
    assert partial == {}, "batches whose stored rows differ from their count"
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def observations(first_day: int, count: int, value: float = 1) -> list[dict]:
    """`count` rows of homes-repaired on keys of their own, from BASE_DAY + first_day."""
    return [
        {
            "measure": "homes-repaired",
            "place": PLACES[n % len(PLACES)],
            "date": (BASE_DAY + timedelta(days=first_day + n // len(PLACES))).isoformat(),
            "value": value + n,
        }
        for n in range(count)
    ]


def token_for(engine, agency: str = "eqc") -> str:
    with Session(engine) as session:
        token = issue_token(session, agency, "faults")
        session.commit()
    return token


def post(client, token: str, rows: list[dict], key: str | None = None):
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/observations", json={"observations": rows}, headers=headers)


# --- 4. a full disk and a read-only database ----------------------------------------------


def test_a_submission_that_does_not_fit_in_a_full_sqlite_database_is_507(
    app, client, loaded, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's max_page_count stands in for a full disk")
    engine = app.extensions["engine"]
    token = token_for(engine)
    assert post(client, token, observations(0, 30)).status_code == 201
    before = batch_sizes(engine)
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()

    def cap(dbapi_connection, _record):  # max_page_count holds per connection
        dbapi_connection.execute(f"PRAGMA max_page_count={pages + 2}")

    event.listen(engine, "connect", cap)
    engine.dispose()
    try:
        answer = post(client, token, observations(100, 3000))
        assert answer.status_code == 507, answer.get_data(as_text=True)
        assert answer.get_json() == {"error": FULL}
        assert "Retry-After" not in answer.headers
        page = client.get("/feeds")
        assert page.status_code == 200  # reads go on
        assert batch_sizes(engine) == before  # nothing of it stored, the rest intact
    finally:
        event.remove(engine, "connect", cap)
        engine.dispose()
    assert_whole(engine)
    assert post(client, token, observations(100, 3000)).status_code == 201  # room again
    assert_whole(engine)


def read_only_url(database_url: str) -> str:
    """The same database through a connection that cannot write."""
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    return database_url + "?options=-c%20default_transaction_read_only%3Don"


def test_a_read_only_database_refuses_writes_with_503_and_still_serves_reads(
    settings, loaded, database_url
):
    engine, _ = loaded
    token = token_for(engine)
    writable = create_app(settings)
    assert post(writable.test_client(), token, observations(0, 12)).status_code == 201
    writable.extensions["engine"].dispose()
    before = batch_sizes(engine)
    app = create_app(settings.model_copy(update={"database_url": read_only_url(database_url)}))
    app.config["TESTING"] = True
    client = app.test_client()
    try:
        answer = post(client, token, observations(50, 10))
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.get_json() == {"error": READ_ONLY}
        assert int(answer.headers["Retry-After"]) > 0
        reads = client.get("/api/v1/places")
        assert reads.status_code == 200, reads.get_data(as_text=True)
        series = client.get("/api/v1/measures/homes-repaired/series")
        assert series.status_code == 200 and series.get_json()
        assert client.get("/feeds").status_code == 200
        page = client.post("/follow", data={"email": "a@example.org"})
        assert page.status_code in (400, 503) and "text/html" in page.content_type
        assert batch_sizes(engine) == before
    finally:
        app.extensions["engine"].dispose()
    assert_whole(engine)
