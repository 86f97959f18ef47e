"""Email alerts for a place or street: confirmed by a link, a digest per period, one-click
unsubscribe in every mail, and the resident's own data page (`/me/KEY`)."""

import re
from datetime import timedelta

import pytest
from page_helpers import page, store, text
from smtp_helpers import SmtpServer
from sqlalchemy import select, update
from sqlmodel import Session, SQLModel
from staff_helpers import csrf_token

from tracker import residents
from tracker.alerts import CONFIRM_HOURS, run_digests
from tracker.mail import deliver
from tracker.models import (
    Comment,
    Observation,
    OutboxMail,
    ResidentKey,
    Subscription,
    WorkStatusChange,
    utcnow,
)

EMAIL = "ana@example.org"


def work(ref, status="planned"):
    return {"id": ref, "title": f"Work {ref}", "status": status,
            "geometry": {"type": "Point", "coordinates": [172.605, -43.535]}}  # fmt: skip


def ask(client, path="/places/opawa/follow", email=EMAIL, **extra):
    return client.post(path, data={"email": email, "csrf_token": csrf_token(client, path), **extra})


def outbox(app, kind=None):
    with Session(app.extensions["engine"]) as session:
        query = select(OutboxMail).order_by(OutboxMail.id)
        if kind:
            query = query.where(OutboxMail.kind == kind)
        return session.scalars(query).all()


def subscriptions(app):
    with Session(app.extensions["engine"]) as session:
        return session.scalars(select(Subscription).order_by(Subscription.id)).all()


def path_in(mail, prefix):
    return re.search(rf"http://127\.0\.0\.1:8000({prefix}/\S+)", mail.body).group(1)


def confirmed(app, client, path="/places/opawa/follow"):
    assert ask(client, path).status_code == 200
    confirm = path_in(outbox(app, "alert.confirm")[-1], "/alerts/confirm")
    assert client.post(confirm, data={"csrf_token": csrf_token(client, confirm)}).status_code == 200
    return subscriptions(app)[-1]


def age(app, hours):
    """Move every stored time back `hours`, as if that long had passed."""
    with Session(app.extensions["engine"]) as session:
        back = timedelta(hours=hours)
        for change in session.scalars(select(WorkStatusChange)).all():
            change.changed_at -= back
        for observation in session.scalars(select(Observation)).all():
            observation.received_at -= back
        for sub in session.scalars(select(Subscription)).all():
            sub.created_at -= timedelta(hours=hours)
            if sub.confirmed_at:
                sub.confirmed_at -= timedelta(hours=hours)
            if sub.last_sent_at:
                sub.last_sent_at -= timedelta(hours=hours)
        session.commit()


def test_asking_queues_only_a_confirmation_with_unsubscribe_headers(app, client):
    response = ask(client)
    assert response.status_code == 200
    assert "Check your email" in response.get_data(as_text=True)
    assert EMAIL not in response.get_data(as_text=True)
    (mail,) = outbox(app)
    assert (mail.kind, mail.to_address) == ("alert.confirm", EMAIL)
    assert mail.subject == "Confirm email alerts for Ōpāwa"
    assert "/alerts/confirm/" in mail.body and "/me/" in mail.body
    assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.headers["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/alerts/unsub")
    (sub,) = subscriptions(app)
    assert sub.confirmed_at is None and sub.place_id == "opawa"
    assert EMAIL not in mail.body.split("/me/")[1]  # the link does not hold the address


def test_nothing_but_the_confirmation_goes_to_an_unconfirmed_address(app, client, engine):
    ask(client)
    store(app, "council", works=[work("w1")])
    age(app, 30)
    result = run_digests(app.extensions["engine"], app.config["SETTINGS"])
    assert (result.queued, result.quiet) == (0, 0)
    assert [m.kind for m in outbox(app)] == ["alert.confirm"]


def test_an_unconfirmed_alert_expires_and_its_link_dies(app, client):
    ask(client)
    confirm = path_in(outbox(app)[0], "/alerts/confirm")
    age(app, CONFIRM_HOURS + 1)
    result = run_digests(app.extensions["engine"], app.config["SETTINGS"])
    assert result.expired == 1 and subscriptions(app) == []
    assert client.get(confirm).status_code == 404


def test_the_confirm_link_shows_a_button_and_only_the_post_confirms(app, client):
    ask(client)
    confirm = path_in(outbox(app)[0], "/alerts/confirm")
    soup = page(client, confirm)
    assert soup.select_one("form button").string == "Yes, start the alerts"
    assert subscriptions(app)[0].confirmed_at is None
    assert client.post(confirm).status_code == 400  # no CSRF token: refused
    client.post(confirm, data={"csrf_token": csrf_token(client, confirm)})
    assert subscriptions(app)[0].confirmed_at is not None
    assert client.get(confirm[:-4] + "0000").status_code == 404  # an altered token


def test_a_digest_lists_the_changes_since_the_last_and_nothing_when_nothing_changed(app, client):
    confirmed(app, client)
    engine, settings = app.extensions["engine"], app.config["SETTINGS"]
    assert run_digests(engine, settings).queued == 0  # the period has not passed
    age(app, 25)
    result = run_digests(engine, settings)
    assert (result.queued, result.quiet) == (0, 1)  # nothing changed: nothing sent
    store(app, "council", works=[work("w1")])
    store(app, "council", works=[work("w1", status="in_progress")])
    age(app, 25)
    assert run_digests(engine, settings).queued == 1
    assert run_digests(engine, settings).queued == 0  # one per period
    (digest,) = outbox(app, "alert.digest")
    assert digest.subject == "Ōpāwa: 2 changes on the Rebuild tracker"
    assert "* Work w1: now in progress" in digest.body and "* New work: Work w1" in digest.body
    assert "http://127.0.0.1:8000/works/council/w1" in digest.body
    assert digest.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/alerts/unsubscribe/" in digest.body and "/me/" in digest.body
    # The next digest starts after the last one: w1's changes are not told again.
    store(app, "council", works=[work("w2")])
    age(app, 25)
    run_digests(engine, settings)
    latest = outbox(app, "alert.digest")[-1]
    assert "New work: Work w2" in latest.body and "Work w1" not in latest.body


def test_the_digest_period_is_a_setting(app, client):
    confirmed(app, client)
    store(app, "council", works=[work("w1")])
    age(app, 2)
    engine, settings = app.extensions["engine"], app.config["SETTINGS"]
    assert run_digests(engine, settings).queued == 0
    hourly = settings.model_copy(update={"alert_digest_hours": 1})
    assert run_digests(engine, hourly).queued == 1


def test_a_street_alert_digests_the_streets_works(app, client):
    confirmed(app, client, "/streets/opawa-road/follow")
    assert subscriptions(app)[0].street_id == "opawa-road"
    store(app, "council", works=[work("w1")])
    age(app, 25)
    assert run_digests(app.extensions["engine"], app.config["SETTINGS"]).queued == 1
    (digest,) = outbox(app, "alert.digest")
    assert "Ōpāwa Road" in digest.subject and "New work: Work w1" in digest.body


def test_one_click_unsubscribe_needs_only_the_token(app, client):
    confirmed(app, client)
    stop = path_in(outbox(app)[0], "/alerts/unsubscribe")
    fresh = app.test_client()  # a mail program: no session, no CSRF token
    response = fresh.post(stop, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and "Alerts stopped" in response.get_data(as_text=True)
    assert subscriptions(app) == []
    assert fresh.post(stop, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert fresh.post("/alerts/unsubscribe/1.00", data={}).status_code == 404


def test_the_unsubscribe_link_shows_a_button_first(app, client):
    confirmed(app, client)
    stop = path_in(outbox(app)[0], "/alerts/unsubscribe")
    assert page(client, stop).select_one("form button").string == "Stop the alerts"
    assert len(subscriptions(app)) == 1


def test_the_csrf_exemption_is_that_endpoint_only(app, client):
    fresh = app.test_client()
    assert fresh.post("/places/opawa/follow", data={"email": EMAIL}).status_code == 400
    assert fresh.post("/me/x/delete", data={"everything": "yes"}).status_code == 400
    assert outbox(app) == []


def test_the_honeypot_sends_nothing(app, client):
    response = ask(client, website="http://spam.example")
    assert response.status_code == 200 and "Check your email" in response.get_data(as_text=True)
    assert outbox(app) == [] and subscriptions(app) == []


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@b", "ana@example.org\r\nBcc: x@example.org", "a" * 250 + "@x.nz"]
)
def test_a_bad_address_is_refused_and_nothing_queued(app, client, email):
    response = ask(client, email=email)
    assert response.status_code == 400
    assert 'aria-invalid="true"' in response.get_data(as_text=True)
    assert outbox(app) == [] and subscriptions(app) == []


def test_asking_again_does_not_tell_whether_the_address_already_follows(app, client):
    confirmed(app, client)
    again = ask(client)
    assert again.status_code == 200 and "Check your email" in again.get_data(as_text=True)
    assert len(outbox(app, "alert.confirm")) == 1 and len(subscriptions(app)) == 1


def test_unknown_places_and_streets_have_no_form(client):
    assert client.get("/places/nowhere/follow").status_code == 404
    assert client.get("/streets/nowhere/follow").status_code == 404


def test_mail_through_a_real_smtp_server_carries_rfc_8058_headers(app, client):
    confirmed(app, client)
    store(app, "council", works=[work("w1")])
    age(app, 25)
    engine, settings = app.extensions["engine"], app.config["SETTINGS"]
    run_digests(engine, settings)
    server = SmtpServer().start()
    try:
        smtp = settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_starttls": False}
        )
        assert deliver(engine, smtp) == 2
        messages = [message for _to, message in server.inbox.messages]
    finally:
        server.stop()
    assert [m["Subject"] for m in messages] == [
        "Confirm email alerts for Ōpāwa",
        "Ōpāwa: 1 change on the Rebuild tracker",
    ]
    for message in messages:
        # (a long value is folded onto its own line; unfolded it is the same URL)
        assert message["List-Unsubscribe"].strip().startswith("<http://127.0.0.1:8000/alerts/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/me/" in message.get_content()


# --- the resident's data -----------------------------------------------------------------


def me_path(app):
    return path_in(outbox(app)[0], "/me")


def test_the_data_page_lists_alerts_and_deletes_one(app, client):
    confirmed(app, client)
    confirmed(app, client, "/streets/opawa-road/follow")
    me = me_path(app)
    soup = page(client, me)
    rows = [text(row.th) + " | " + text(row.td) for row in soup.select("table.me-items tbody tr")]
    assert rows == ["Email alert | Ōpāwa", "Email alert | Ōpāwa Road"]
    assert EMAIL not in str(soup)
    item = soup.select("table.me-items input[name=item]")[0]["value"]
    response = client.post(
        me + "/delete", data={"item": item, "csrf_token": csrf_token(client, me)}
    )
    assert response.status_code == 200
    assert [s.street_id for s in subscriptions(app)] == ["opawa-road"]


def test_delete_everything_removes_every_row_and_the_link(app, client):
    confirmed(app, client)
    with Session(app.extensions["engine"]) as session:
        extra = {"email": EMAIL} if "email" in Comment.model_fields else {}
        session.add(Comment(place_id="opawa", author_name="Ana", body="Hi", **extra))
        session.commit()
    me = me_path(app)
    if extra:
        assert "Comment" in text(page(client, me).select_one("table.me-items"))
    response = client.post(me + "/delete", data={"everything": "yes",
                                                 "csrf_token": csrf_token(client, me)})  # fmt: skip
    assert response.status_code == 200
    assert subscriptions(app) == [] and outbox(app) == []
    with Session(app.extensions["engine"]) as session:
        assert session.scalars(select(ResidentKey)).all() == []
        if extra:
            assert session.scalars(select(Comment)).all() == []
    assert client.get(me).status_code == 404


def test_someone_elses_item_cannot_be_deleted_from_my_page(app, client):
    confirmed(app, client)
    other = app.test_client()
    ask(other, email="bo@example.org")
    theirs = subscriptions(app)[-1].id
    me = me_path(app)
    response = client.post(me + "/delete", data={"item": f"subscription:{theirs}",
                                                 "csrf_token": csrf_token(client, me)})  # fmt: skip
    assert response.status_code == 404
    assert len(subscriptions(app)) == 2


def test_an_unknown_key_opens_nothing(client):
    assert client.get("/me/not-a-key").status_code == 404


def test_every_table_with_an_email_is_handled(app):
    """Each resident table is deleted or anonymised: a new one is covered without a list."""
    names = {table.name for table in residents.resident_tables()}  # every model
    assert {"subscription", "residentkey"} <= names
    assert "user" not in names
    for table in SQLModel.metadata.sorted_tables:
        if "email" in table.c and table.name != "user":
            assert table.name in names


def test_a_problem_report_keeps_its_row_without_the_email(app, client):
    with Session(app.extensions["engine"]) as session:
        tables = residents.resident_tables(session)
    report = next((t for t in tables if t.name in residents.ANONYMISED), None)
    if report is None:
        pytest.skip("no problem report table in this tree yet")
    confirmed(app, client)
    engine = app.extensions["engine"]
    with Session(engine) as session:
        count = session.execute(select(report)).all()
        session.execute(update(report).values(email=EMAIL))
        session.commit()
    with Session(engine) as session:
        residents.forget(session, EMAIL)
        session.commit()
        assert len(session.execute(select(report)).all()) == len(count)
        assert session.execute(select(report).where(report.c.email.is_not(None))).all() == []


def test_expiry_uses_the_creation_time(app, client):
    ask(client)
    with Session(app.extensions["engine"]) as session:
        session.execute(update(Subscription).values(created_at=utcnow() - timedelta(hours=47)))
        session.commit()
    assert run_digests(app.extensions["engine"], app.config["SETTINGS"]).expired == 0


def test_asking_again_resends_the_confirmation_at_most_once_an_hour(app, client):
    ask(client)
    ask(client)
    assert len(outbox(app, "alert.confirm")) == 1
    age(app, 2)
    ask(client)
    assert len(outbox(app, "alert.confirm")) == 2 and len(subscriptions(app)) == 1


def test_a_malformed_item_is_not_found(app, client):
    confirmed(app, client)
    me = me_path(app)
    for item in ("subscription:abc", "nothing:1", "residentkey:x", "user:1"):
        data = {"item": item, "csrf_token": csrf_token(client, me)}
        response = client.post(me + "/delete", data=data)
        assert response.status_code == 404, item
    assert len(subscriptions(app)) == 1


def test_the_digest_command_reports_what_it_did(app, client, runner):
    from tracker.cli import main

    confirmed(app, client)
    ask(app.test_client(), email="bo@example.org")
    store(app, "council", works=[work("w1")])
    age(app, CONFIRM_HOURS + 1)
    result = runner.invoke(main, ["alerts", "digest"])
    assert result.exit_code == 0, result.output
    assert "1 digests queued, 0 with nothing new, 1 unconfirmed alerts expired." in result.output


def test_digests_for_one_area_each_list_only_what_came_after_their_own_last(app, client):
    confirmed(app, client)
    store(app, "council", works=[work("w1")])
    bo = app.test_client()
    assert ask(bo, email="bo@example.org").status_code == 200
    confirm = path_in(outbox(app, "alert.confirm")[-1], "/alerts/confirm")
    bo.post(confirm, data={"csrf_token": csrf_token(bo, confirm)})
    store(app, "council", works=[work("w2")])
    age(app, 25)
    assert run_digests(app.extensions["engine"], app.config["SETTINGS"]).queued == 2
    digests = {mail.to_address: mail.body for mail in outbox(app, "alert.digest")}
    assert "Work w1" in digests[EMAIL] and "Work w2" in digests[EMAIL]
    assert "Work w1" not in digests["bo@example.org"] and "Work w2" in digests["bo@example.org"]


def test_the_form_is_rate_limited_per_client(app, client):
    pytest.importorskip("tracker.ratelimit", reason="the shared limiter is not in this tree yet")
    from tracker.web.follow import FOLLOW_LIMIT

    for n in range(FOLLOW_LIMIT):
        assert ask(client, email=f"r{n}@example.org").status_code == 200
    refused = ask(client, email="one-more@example.org")
    assert refused.status_code == 429
    assert len(outbox(app)) == FOLLOW_LIMIT
    other = app.test_client()  # another client is not held back
    response = other.post(
        "/places/opawa/follow",
        data={"email": "x@example.org", "csrf_token": csrf_token(other, "/places/opawa/follow")},
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    )
    assert response.status_code == 200
