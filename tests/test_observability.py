"""Health, readiness, request ids, logs, the proxy fix and metrics (tracker/observability.py,
tracker/web/health.py, tracker/metrics.py)."""

import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from gunicorn_helpers import gunicorn
from page_helpers import store
from prometheus_client.parser import text_string_to_metric_families
from smtp_helpers import free_port
from sqlalchemy import text
from sqlmodel import Session

from tracker import create_app
from tracker.leases import take_lease
from tracker.mail import queue_mail
from tracker.models import Feed, FeedRun, utcnow
from tracker.observability import configure_logging
from tracker.scheduler import LEASE_NAME
from tracker.web.health import expected_revision

ROOT = Path(__file__).parent.parent


def samples(body: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics answer by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


# --- /healthz and /readyz ------------------------------------------------------------------


def test_healthz_answers_without_the_database(settings, loaded):
    gone = settings.model_copy(update={"database_url": "sqlite:////nonexistent/folder/db"})
    client = create_app(gone).test_client()
    answer = client.get("/healthz")
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, "ok\n")
    assert answer.headers["Cache-Control"] == "no-store"


def test_readyz_is_ok_on_a_current_schema_and_reports_no_scheduler(client):
    answer = client.get("/readyz")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "ok" and body["database"] == {"ok": True}
    assert body["migrations"] == {"ok": True, "current": expected_revision(),
                                  "expected": expected_revision()}  # fmt: skip
    assert body["scheduler"]["ok"] is False  # reported, and still ready


def test_readyz_reports_the_scheduler_s_lease(app, client):
    assert take_lease(app.extensions["engine"], LEASE_NAME, "host-a:42", 60)
    scheduler = client.get("/readyz").get_json()["scheduler"]
    assert scheduler["ok"] is True
    assert "host-a" not in str(scheduler)  # which host runs it is for the operator's logs
    assert 55 < scheduler["lease_seconds_left"] <= 60


def test_readyz_is_503_while_a_migration_is_pending(app, client):
    engine = app.extensions["engine"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0013'"))
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert answer.get_json()["migrations"] == {"ok": False, "current": "0013",
                                                   "expected": expected_revision()}  # fmt: skip
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :v"),
                               {"v": expected_revision()})  # fmt: skip


def test_readyz_is_503_without_the_database_and_names_no_host(settings, loaded):
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://secret-user@127.0.0.1:{port}/nothing?connect_timeout=2"
    client = create_app(settings.model_copy(update={"database_url": url})).test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    body = answer.get_json()
    assert body["status"] == "unavailable" and body["database"]["ok"] is False
    assert "secret-user" not in answer.get_data(as_text=True)
    assert str(port) not in answer.get_data(as_text=True)


# --- request ids and logs ------------------------------------------------------------------


def test_every_answer_carries_a_request_id_and_keeps_a_plain_one_given(client):
    made = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/healthz").headers["X-Request-ID"] != made
    given = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.1"})
    assert given.headers["X-Request-ID"] == "edge-7f3a.1"
    for hostile in ("<script>", "x" * 101, "a b"):
        replaced = client.get("/healthz", headers={"X-Request-ID": hostile})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-ID"])
    refused = client.get("/places/opawa?date=junk")  # a refusal carries one too
    assert refused.status_code == 400 and refused.headers["X-Request-ID"]


@pytest.fixture
def log_lines(settings):
    """What the root logger writes while the test runs, in JSON."""
    stream = io.StringIO()
    handler = configure_logging(settings.model_copy(update={"log_format": "json"}), stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger().removeHandler(handler)


def test_json_logs_carry_the_request_id_and_one_access_line_per_request(client, log_lines):
    answer = client.get("/places/opawa", headers={"User-Agent": "test"})
    wanted = answer.headers["X-Request-ID"]
    [access] = [line for line in log_lines() if line["logger"] == "tracker.access"]
    assert access["request_id"] == wanted
    assert (access["method"], access["path"], access["route"], access["status"]) == (
        "GET", "/places/opawa", "/places/<place_id>", 200,
    )  # fmt: skip
    assert access["level"] == "INFO" and access["duration_ms"] > 0
    assert access["time"].endswith("+00:00") and access["client"] == "127.0.0.1"


def test_keys_in_addresses_stay_out_of_the_access_log(client, log_lines):
    client.get("/me/s3cr3t-key-abc")  # a /me link: whoever reads the log could open it
    client.get("/alerts/unsubscribe/12.deadbeefdeadbeef")
    lines = [line for line in log_lines() if line["logger"] == "tracker.access"]
    assert [line["path"] for line in lines] == ["/me/<key>", "/alerts/unsubscribe/<sent>"]
    assert not any("s3cr3t" in line["message"] or "deadbeef" in line["message"] for line in lines)


def test_a_log_line_written_inside_a_request_carries_its_id(app, log_lines):
    with app.test_request_context("/", headers={"X-Request-ID": "abc-123"}):
        app.preprocess_request()
        logging.getLogger("tracker.test").warning("inside")
    [line] = [line for line in log_lines() if line["logger"] == "tracker.test"]
    assert (line["message"], line["request_id"], line["level"]) == ("inside", "abc-123", "WARNING")


# --- the proxy fix -------------------------------------------------------------------------


@pytest.mark.parametrize(("hops", "seen"), [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_forwarded_addresses_count_only_with_the_proxy_setting(settings, loaded, log_lines,
                                                               hops, seen):  # fmt: skip
    app = create_app(settings.model_copy(update={"proxy_hops": hops}))
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https"}
    app.test_client().get("/healthz", headers=forwarded)
    app.extensions["engine"].dispose()
    [access] = [line for line in log_lines() if line["logger"] == "tracker.access"]
    assert access["client"] == seen  # one hop: the last proxy's word only, not the client's


# --- /metrics -----------------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_read_the_database(app, client):
    engine = app.extensions["engine"]
    before = samples(client.get("/metrics").get_data(as_text=True))
    key = ("tracker_http_requests_total",
           (("method", "GET"), ("route", "/places/<place_id>"), ("status", "200")))  # fmt: skip
    for _ in range(3):
        assert client.get("/places/opawa").status_code == 200
    store(app, "eqc", observations=[
        {"measure": "homes-repaired", "place": "opawa", "date": "2014-01-31", "value": 5},
        {"measure": "homes-repaired", "place": "riccarton", "date": "2014-01-31", "value": 7},
    ])  # fmt: skip
    with Session(engine) as session:
        session.add(
            Feed(
                id="eqc-repairs",
                agency_id="eqc",
                url="file:/nowhere",
                format="csv",
                every="1d",
                fields={},
                place_match="id",
                measure_id="homes-repaired",
            )
        )
        session.flush()
        session.add(FeedRun(feed_id="eqc-repairs", started_at=utcnow(), status="failed"))
        queue_mail(session, kind="test", to="ana@example.org", subject="Hello", body="Hi")
        session.commit()
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    after = samples(answer.get_data(as_text=True))
    assert after[key] - before.get(key, 0) == 3
    assert after[("tracker_http_request_duration_seconds_count",
                  (("route", "/places/<place_id>"),))] >= 3  # fmt: skip
    ingested = [v for (name, labels), v in after.items() if name == "tracker_rows_ingested_total"]
    assert sum(ingested) == 2
    assert after[("tracker_feed_runs_total", (("feed", "eqc-repairs"), ("status", "failed")))] == 1
    assert after[("tracker_outbox_backlog", (("state", "unsent"),))] == 1
    lookups = [k for k in after if k[0] == "tracker_rollup_cache_lookups_total"]
    assert lookups, "the place pages looked figures up in the roll-up cache"


def test_metrics_under_gunicorn_add_up_every_worker(settings, loaded, tmp_path):
    """40 requests answered by workers that come and go; whichever answers /metrics counts
    every one (prometheus-client's multiprocess files, deploy/gunicorn.conf.py's hooks)."""
    # Each worker is replaced after 10 requests: the 40 are answered by several processes,
    # most gone by the time /metrics is asked, and all must be counted.
    renewed = {"TRACKER_GUNICORN_MAX_REQUESTS": "10", "TRACKER_GUNICORN_MAX_REQUESTS_JITTER": "0"}
    with gunicorn(settings, tmp_path, TRACKER_LOG_FORMAT="json", **renewed) as served:
        base, log = served.base, served.log
        # A few at a time, so a worker being replaced is never the only one.
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: requests.get(base + "/readyz", timeout=10),
                                    range(40)))  # fmt: skip
        assert [a.status_code for a in answers] == [200] * 40
        body = requests.get(base + "/metrics", timeout=10).text
        readyz = ("tracker_http_requests_total",
                  (("method", "GET"), ("route", "/readyz"), ("status", "200")))  # fmt: skip
        assert samples(body)[readyz] == 40
        access = [json.loads(line) for line in log.read_text().splitlines()
                  if line.startswith("{") and '"tracker.access"' in line]  # fmt: skip
        answered_by = {a["pid"] for a in access if a["route"] == "/readyz"}
        assert len([a for a in access if a["route"] == "/readyz"]) == 40
        assert len(answered_by) >= 4, "workers came and went, and /metrics added all up"
