"""The shared rate limiter: counters in the database, one atomic upsert per hit."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlmodel import Session
from staff_helpers import csrf_token

from tracker import create_app
from tracker.errors import TrackerError
from tracker.models import RateCounter
from tracker.ratelimit import client_key, client_of, enforce, prune

NOW = datetime(2026, 12, 2, 10, 15, tzinfo=UTC)  # 15 minutes into an hour's window
ADDRESS = "198.51.100.7"


def hits(app: Flask, n: int, *, bucket="b", client=ADDRESS, limit=3, per_seconds=3600, now=NOW):
    """Hit `n` times, each in its own transaction; returns how many were let through."""
    allowed = 0
    with app.app_context(), Session(app.extensions["engine"]) as session:
        for _ in range(n):
            try:
                enforce(session, bucket=bucket, client=client, limit=limit,
                        per_seconds=per_seconds, now=now)  # fmt: skip
                allowed += 1
            except TrackerError as exc:
                assert exc.status == 429
            session.commit()
    return allowed


def counters(app: Flask) -> list[RateCounter]:
    with Session(app.extensions["engine"]) as session:
        return session.scalars(select(RateCounter)).all()


def test_a_client_is_refused_past_the_limit_with_a_retry_after(app):
    assert hits(app, 3) == 3
    with (
        app.app_context(),
        Session(app.extensions["engine"]) as session,
        pytest.raises(TrackerError) as refused,
    ):
        enforce(session, bucket="b", client=ADDRESS, limit=3, per_seconds=3600, now=NOW)
    assert refused.value.status == 429
    assert refused.value.retry_after == 45 * 60
    assert refused.value.message == (
        "Too many requests from your network. Try again in 45 minutes."
    )
    assert refused.value.headers() == {"Retry-After": "2700"}


def test_the_limit_holds_across_two_apps_sharing_one_database(app, settings):
    other = create_app(settings)
    try:
        assert hits(app, 2) == 2
        assert hits(other, 2) == 1  # the third hit anywhere passes, the fourth does not
        assert hits(app, 1) == 0
    finally:
        other.extensions["engine"].dispose()


def test_a_new_window_starts_from_nothing(app):
    assert hits(app, 5) == 3
    assert hits(app, 5, now=NOW + timedelta(minutes=45)) == 3
    windows = sorted(counter.window_start for counter in counters(app))
    assert windows == [datetime(2026, 12, 2, 10, tzinfo=UTC), datetime(2026, 12, 2, 11, tzinfo=UTC)]


def test_buckets_and_clients_are_counted_apart(app):
    assert hits(app, 4) == 3
    assert hits(app, 4, bucket="other") == 3
    assert hits(app, 4, client="203.0.113.5") == 3
    assert len(counters(app)) == 3


def test_the_stored_client_is_a_keyed_hash_not_the_address(app):
    hits(app, 1)
    [counter] = counters(app)
    assert ADDRESS not in counter.client
    with app.app_context():
        assert counter.client == client_key(ADDRESS)
    assert client_key(ADDRESS, secret="test-secret") == counter.client
    assert client_key(ADDRESS, secret="another secret") != counter.client


@pytest.mark.parametrize(
    ("address", "counted_as"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
        ("2001:db8:aa:bb:ffff::9", "2001:db8:aa:bb::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_client_counts_as_its_64_network(address, counted_as):
    assert client_of(address) == counted_as


def test_new_ipv6_addresses_in_one_64_share_one_limit(app):
    clients = [client_of(f"2001:db8:aa:bb::{n:x}") for n in range(5)]
    assert sum(hits(app, 1, client=c) for c in clients) == 3  # the limit of the whole /64


def test_prune_drops_only_windows_older_than_a_day(app):
    # Newest first: a hit may prune by chance, and a hit earlier than every window prunes none.
    hits(app, 1, now=NOW - timedelta(hours=2))
    hits(app, 1, now=NOW - timedelta(days=2))
    with Session(app.extensions["engine"]) as session:
        assert prune(session, now=NOW) == 1
        session.commit()
    assert [c.window_start for c in counters(app)] == [datetime(2026, 12, 2, 8, tzinfo=UTC)]


def test_the_scheduler_s_alerts_job_prunes_old_windows(app, settings):
    from tracker.scheduler import FeedScheduler

    now = datetime.now(UTC)
    hits(app, 1, now=now)  # newest first, so no chance prune beats the job to it
    hits(app, 1, now=now - timedelta(days=3))
    assert len(counters(app)) == 2
    scheduler = FeedScheduler(app.extensions["engine"], holder="prune-test", settings=settings)
    scheduler._run_alerts()  # the job's body, as the scheduler calls it every 5 minutes
    assert [c.count for c in counters(app)] == [1]
    assert counters(app)[0].window_start > now - timedelta(hours=1)


def test_a_window_longer_than_a_day_is_refused(app):
    with app.app_context(), Session(app.extensions["engine"]) as session, pytest.raises(ValueError):
        enforce(session, bucket="b", client=ADDRESS, limit=1, per_seconds=2 * 86400)


def test_threads_hitting_at_once_never_pass_more_than_the_limit(app):
    limit, threads = 4, 12
    allowed, errors = [], []
    start = threading.Barrier(threads)

    def one():
        try:
            start.wait()
            allowed.append(hits(app, 1, limit=limit))
        except Exception as exc:
            errors.append(exc)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert sum(allowed) == limit
    [counter] = counters(app)
    assert counter.count == threads


def test_the_alert_form_answers_429_with_retry_after(app, client):
    from tracker.web.follow import FOLLOW_LIMIT

    path = "/places/opawa/follow"
    for n in range(FOLLOW_LIMIT):
        data = {"email": f"r{n}@example.org", "csrf_token": csrf_token(client, path)}
        assert client.post(path, data=data).status_code == 200
    data = {"email": "more@example.org", "csrf_token": csrf_token(client, path)}
    refused = client.post(path, data=data)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert "Too many alert requests from your network." in refused.get_data(as_text=True)


def test_the_one_error_handler_sends_retry_after(settings, loaded):
    app = create_app(settings)
    try:

        def limited():
            from tracker.db import get_session
            from tracker.ratelimit import request_client

            session = get_session()
            enforce(session, bucket="t", client=request_client(), limit=1, per_seconds=60)
            session.commit()
            return "ok"

        app.add_url_rule("/limited", view_func=limited)
        app.add_url_rule("/api/limited", "api_limited", view_func=limited)
        client = app.test_client()
        assert client.get("/limited").status_code == 200
        page = client.get("/limited")
        assert page.status_code == 429 and 0 < int(page.headers["Retry-After"]) <= 60
        assert "Too many requests from your network." in page.get_data(as_text=True)
        answer = client.get("/api/limited")  # the same bucket and client: JSON this time
        assert answer.status_code == 429 and 0 < int(answer.headers["Retry-After"]) <= 60
        assert answer.get_json()["error"].startswith("Too many requests from your network.")
    finally:
        app.extensions["engine"].dispose()
