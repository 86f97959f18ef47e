"""Read scaling on a PostgreSQL streaming replica (TRACKER_READ_DATABASE_URL).

A private primary and a streaming replica of it (tests/pg_cluster.py): anonymous public
GETs read the replica, which is proved by pausing its replay and watching a page miss a
batch the primary holds; writes, staff and token holders use the primary; /readyz and
/metrics report the lag; a stopped replica sends reads to the primary.
"""

import re
import subprocess
import threading
import time

import pytest
from conftest import TINY_TREE
from page_helpers import page, text
from pg_cluster import Cluster, available, private_root
from sqlmodel import Session
from staff_helpers import add_user, csrf_token, sign_in

from tracker import create_app
from tracker.auth import issue_token
from tracker.db import reads_replica, session_engine
from tracker.settings import Settings

DAY = "2014-03-31"
ROLLUP = f"/api/v1/rollup?place=opawa&date={DAY}"
PLACE = "/places/opawa"


@pytest.fixture(scope="module")
def clusters():
    """(primary, replica, primary URL, replica URL, agency token), the tiny city loaded."""
    from tracker.cli import initialise

    if not available():
        pytest.skip("PostgreSQL server programs missing")
    with private_root() as root:
        primary = Cluster(root, "primary").init()
        primary.start()
        primary_url = primary.create_database("tracker")
        replica = primary.replica()
        settings = Settings(database_url=primary_url, tree=TINY_TREE, _env_file=None)
        engine, _ = initialise(settings)
        with Session(engine) as session:
            token = issue_token(session, "eqc")
            session.commit()
        engine.dispose()
        caught_up(primary, replica)
        yield primary, replica, primary_url, replica.url("tracker"), token


def caught_up(primary: Cluster, replica: Cluster) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    lsn = primary.psql("SELECT pg_current_wal_lsn()")
    check = f"SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{lsn}') >= 0"
    replica.wait_until(lambda: replica.psql(check) == "t")


def make_app(clusters, tmp_path, **settings):
    _, _, primary_url, replica_url, _ = clusters
    settings = Settings(
        database_url=primary_url,
        read_database_url=replica_url,
        tree=TINY_TREE,
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        map_tiles="",
        _env_file=None,
        **settings,
    )
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(clusters, tmp_path):
    app = make_app(clusters, tmp_path)
    yield app
    app.extensions["engine"].dispose()
    app.extensions["read_engine"].dispose()


def submit(client, token: str, value: int, place: str = "opawa"):
    """POST one observation with the agency's token; it must be accepted."""
    row = {"measure": "homes-repaired", "place": place, "date": DAY, "value": value}
    answer = client.post(
        "/api/v1/observations",
        json={"observations": [row]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()


def repaired(client, **options) -> int | None:
    """homes-repaired in Ōpāwa on DAY, as GET /api/v1/rollup answers it."""
    body = client.get(ROLLUP, **options).get_json()

    def walk(nodes):
        for node in nodes:
            yield node
            yield from walk(node["children"])

    return next(n for n in walk(body["results"]) if n["id"] == "homes-repaired")["value"]


def place_text(client) -> str:
    return text(page(client, PLACE))


def shows(value: int, page_text: str) -> bool:
    """Whether the page shows `value` (as pages write it: 4,107)."""
    return re.search(rf"(?<![\d.,]){value:,}(?![\d.,])", page_text) is not None


def stored_on(cluster: Cluster, value: int) -> bool:
    sql = f"SELECT count(*) FROM observation WHERE value = {value}"
    return cluster.psql(sql, "tracker") == "1"


def paused(replica: Cluster):
    replica.psql("SELECT pg_wal_replay_pause()")
    replica.wait_until(lambda: replica.psql("SELECT pg_get_wal_replay_pause_state()") == "paused")


def resumed(replica: Cluster):
    replica.psql("SELECT pg_wal_replay_resume()")


def until(check, timeout: float = 10) -> float:
    """Seconds until `check()` holds (fails after `timeout`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not in time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_the_replica_refuses_writes(clusters):
    """What makes the next tests mean something: a write that went there would fail."""
    _, replica, _, _, _ = clusters
    with pytest.raises(subprocess.CalledProcessError) as refused:
        replica.psql("INSERT INTO agency (id, name) VALUES ('x', 'X')", "tracker")
    assert "read-only transaction" in refused.value.stderr


def test_public_reads_come_from_the_replica_and_writes_go_to_the_primary(clusters, app):
    primary, replica, _, _, token = clusters
    client = app.test_client()
    submit(client, token, 4107)  # a POST: on the primary, or the read-only replica refuses it
    assert stored_on(primary, 4107)
    caught_up(primary, replica)
    assert repaired(client) == 4107
    assert shows(4107, place_text(client))

    paused(replica)
    try:
        submit(client, token, 4213)
        assert stored_on(primary, 4213) and not stored_on(replica, 4213)
        # The public page and the read API read the replica: not there yet.
        assert repaired(client) == 4107
        page_text = place_text(client)
        assert shows(4107, page_text) and not shows(4213, page_text)
        # A program with its token reads the primary, as it must see its own writes.
        assert repaired(client, headers={"Authorization": f"Bearer {token}"}) == 4213
        # So does anyone signed in: an agency's staff see what they just sent.
        staff = app.test_client()
        add_user(app, "replica-staff@eqc.example", "agency", "eqc")
        assert sign_in(staff, "replica-staff@eqc.example").status_code in (302, 303)
        assert shows(4213, place_text(staff))
        assert repaired(staff) == 4213
        assert "4107 → 4213" in text(page(staff, "/agency/observations"))
        # The anonymous page is still the replica's (the cached one was not replaced).
        assert not shows(4213, place_text(client))
    finally:
        resumed(replica)
    # A resident sees it once the replica has replayed it (and the stamp, read at most
    # once a second, has moved).
    seconds = until(lambda: shows(4213, place_text(client)))
    assert seconds < 5
    assert repaired(client) == 4213


def test_a_resident_form_reads_the_replica_and_posts_to_the_primary(clusters, app):
    primary, replica, _, _, _ = clusters
    client = app.test_client()
    paused(replica)  # a write that reached the replica could not be seen there anyway
    try:
        form = page(client, f"{PLACE}/follow")
        assert form.find("input", attrs={"name": "email"}) is not None
        token = csrf_token(client, f"{PLACE}/follow")
        data = {"email": "resident@example.org", "csrf_token": token}
        answer = client.post(f"{PLACE}/follow", data=data)
        assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
        count = "SELECT count(*) FROM subscription WHERE place_id = 'opawa'"
        assert int(primary.psql(count, "tracker")) >= 1
    finally:
        resumed(replica)


def test_a_cached_page_view_touches_neither_database(clusters, app):
    """Deciding where to read connects to nothing: a page served from the cache (within
    the stamp's second) checks out no connection from either pool."""
    from sqlalchemy import event

    client = app.test_client()
    place_text(client)
    checkouts = []
    engines = [app.extensions["engine"], app.extensions["read_engine"]]
    for engine in engines:
        event.listen(engine, "checkout", lambda *_: checkouts.append(threading.get_ident()))
    start = time.monotonic()
    place_text(client)
    # The request's own thread only: after a worker's first page view its background
    # thread builds the other pages ahead, from the database.
    if time.monotonic() - start < 0.9:  # else the stamp was due to be read again
        assert threading.get_ident() not in checkouts


def test_readyz_and_metrics_report_the_lag(clusters, app):
    primary, replica, _, _, token = clusters
    client = app.test_client()
    caught_up(primary, replica)
    body = client.get("/readyz").get_json()
    assert body["status"] == "ok"
    assert body["replica"] == {"ok": True, "lag_seconds": 0.0, "reads": "replica"}
    paused(replica)
    try:
        submit(client, token, 4321)
        time.sleep(0.2)
        lag = client.get("/readyz").get_json()["replica"]["lag_seconds"]
        assert lag is not None and lag > 0.1
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "tracker_replica_up 1.0" in metrics
        figure = re.search(r"^tracker_replica_lag_seconds ([\d.e+-]+)$", metrics, re.M)
        assert figure and float(figure.group(1)) > 0.1
    finally:
        resumed(replica)
    caught_up(primary, replica)
    assert client.get("/readyz").get_json()["replica"]["lag_seconds"] == 0.0


def test_a_replica_too_far_behind_sends_reads_to_the_primary(clusters, tmp_path):
    primary, replica, _, _, token = clusters
    app = make_app(clusters, tmp_path, read_max_lag_seconds=0.3)
    client = app.test_client()
    caught_up(primary, replica)
    assert client.get("/readyz").get_json()["replica"]["reads"] == "replica"
    paused(replica)
    try:
        submit(client, token, 4567)
        # Within a second or so (the lag is asked once a second) reads go to the primary.
        seconds = until(lambda: repaired(client) == 4567)
        assert seconds < 3
        assert client.get("/readyz").get_json()["replica"]["reads"] == "primary"
    finally:
        resumed(replica)
    caught_up(primary, replica)
    body = client.get("/readyz").get_json()
    assert body["replica"] == {"ok": True, "lag_seconds": 0.0, "reads": "replica"}
    app.extensions["engine"].dispose()
    app.extensions["read_engine"].dispose()


def test_a_stopped_replica_sends_reads_to_the_primary(clusters, app):
    primary, replica, _, _, token = clusters
    client = app.test_client()
    submit(client, token, 4443)  # its own value: xdist may run this module's tests anywhere
    caught_up(primary, replica)
    assert repaired(client) == 4443  # from the replica, whose pool holds a connection now
    replica.stop("immediate")
    try:
        submit(client, token, 4444)
        start = time.monotonic()
        assert repaired(client) == 4444  # from the primary
        assert shows(4444, place_text(client))
        assert time.monotonic() - start < 5
        answer = client.get("/readyz")
        assert answer.status_code == 200  # the worker still serves every page
        body = answer.get_json()
        assert body["database"] == {"ok": True}
        assert body["replica"]["ok"] is False and body["replica"]["lag_seconds"] is None
        assert body["replica"]["reads"] == "primary"
        assert body["replica"]["error"] == "OperationalError"
        assert "tracker_replica_up 0.0" in client.get("/metrics").get_data(as_text=True)
    finally:
        replica.start()
    caught_up(primary, replica)
    body = client.get("/readyz").get_json()  # answers again: reads go back to it at once
    assert body["replica"]["ok"] is True and body["replica"]["reads"] == "replica"


@pytest.mark.parametrize(
    ("method", "path", "replica"),
    [
        ("GET", "/", True),
        ("GET", "/places/opawa", True),
        ("HEAD", "/places/opawa", True),
        ("GET", "/agencies/eqc", True),  # not /agency
        ("GET", "/api/v1/rollup", True),
        ("GET", "/open311/v2/services.json", True),
        ("GET", "/exports/", True),
        ("GET", "/places/opawa.atom", True),
        ("GET", "/places/opawa/follow", True),  # a form's page: reads only
        ("POST", "/places/opawa/follow", False),
        ("POST", "/api/v1/observations", False),
        ("PUT", "/api/v1/observations", False),
        ("DELETE", "/places/opawa", False),
        ("GET", "/agency", False),
        ("GET", "/agency/observations", False),
        ("GET", "/admin/users", False),
        ("GET", "/login", False),
        ("GET", "/alerts/confirm/abc", False),
        ("GET", "/me/abc", False),
    ],
)
def test_which_requests_read_the_replica(tmp_path, method, path, replica):
    """The routing rule alone (no server needed: deciding connects to nothing)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'primary.sqlite3'}",
        read_database_url=f"sqlite:///{tmp_path / 'replica.sqlite3'}",
        tree=TINY_TREE, instance_path=tmp_path / "instance", secret_key="k", _env_file=None,
    )  # fmt: skip
    app = create_app(settings)
    with app.test_request_context(path, method=method):
        assert reads_replica() is replica
        expected = app.extensions["read_engine" if replica else "engine"]
        assert session_engine() is expected
    if replica:  # … but not for someone signed in, a token, or a pending message
        with app.test_request_context(path, method=method) as context:
            context.session["uid"] = 1
            assert not reads_replica()
        with app.test_request_context(path, headers={"Authorization": "Bearer x"}):
            assert not reads_replica()
        with app.test_request_context(path, method=method) as context:
            context.session["_flashes"] = [("message", "Saved")]
            assert not reads_replica()


def test_without_a_replica_everything_reads_the_primary(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'primary.sqlite3'}",
                        tree=TINY_TREE, instance_path=tmp_path / "i", _env_file=None)  # fmt: skip
    app = create_app(settings)
    assert "read_engine" not in app.extensions
    with app.test_request_context("/places/opawa"):
        assert not reads_replica() and session_engine() is app.extensions["engine"]
