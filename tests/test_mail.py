"""The outbox sent over SMTP to a real local server (aiosmtpd on a random 127.0.0.1 port)."""

from datetime import timedelta

import pytest
from smtp_helpers import SmtpServer, free_port
from sqlmodel import Session, select

from tracker.errors import TrackerError
from tracker.mail import (
    BACKOFF_CAP,
    MAX_REFUSALS,
    backoff,
    deliver,
    link,
    queue_mail,
    send_outbox,
)
from tracker.models import OutboxMail, utcnow


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def mail_settings(settings, smtp):
    return settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_starttls": False}
    )


def _queue(engine, count=1, to="resident@example.org", **extra):
    with Session(engine, expire_on_commit=False) as session:
        for n in range(count):
            queue_mail(session, kind="test", to=to, subject=f"Mail {n}", body="Hello", **extra)
        session.commit()


def _send(engine, settings, *, now):
    with Session(engine) as session:
        return send_outbox(session, settings, now=now)


def _rows(engine):
    with Session(engine) as session:
        return session.scalars(select(OutboxMail).order_by(OutboxMail.id)).all()


def test_due_mail_is_sent_once_and_marked_sent(engine, mail_settings, smtp):
    _queue(engine, 3, headers={"List-Unsubscribe": "<https://example.org/u/1>"})
    assert deliver(engine, mail_settings) == 3
    assert deliver(engine, mail_settings) == 0  # nothing is sent twice
    assert len(smtp.inbox.messages) == 3
    recipients, message = smtp.inbox.messages[0]
    assert recipients == ["resident@example.org"]
    assert message["Subject"] == "Mail 0"
    assert message["From"] == mail_settings.mail_from
    assert message["List-Unsubscribe"] == "<https://example.org/u/1>"
    assert message["Message-ID"].endswith("@127.0.0.1>")
    assert message.get_content().strip() == "Hello"
    rows = _rows(engine)
    assert all(row.sent_at is not None and row.attempts == 1 for row in rows)


def test_without_an_smtp_host_mail_stays_queued(engine, settings):
    _queue(engine, 2)
    assert settings.smtp_host == ""
    assert deliver(engine, settings) == 0
    assert [(row.sent_at, row.attempts) for row in _rows(engine)] == [(None, 0), (None, 0)]


def test_mail_queued_while_the_server_is_down_is_sent_exactly_once_when_it_is_up(engine, settings):
    port = free_port()
    down = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    )
    _queue(engine, 4)
    start = utcnow()
    assert _send(engine, down, now=start) == 0
    rows = _rows(engine)
    assert all(row.sent_at is None and row.attempts == 1 for row in rows)
    assert all("ConnectionRefused" in row.last_error for row in rows)
    assert all(row.next_attempt_at == start + backoff(1) for row in rows)
    # Still down a minute later: a second failure doubles the wait.
    later = start + backoff(1)
    assert _send(engine, down, now=later) == 0
    assert all(row.next_attempt_at == later + backoff(2) for row in _rows(engine))
    # Not yet due: nothing is tried.
    server = SmtpServer(port).start()
    try:
        assert _send(engine, down, now=later + timedelta(seconds=1)) == 0
        assert server.inbox.messages == []
        due = later + backoff(2)
        assert _send(engine, down, now=due) == 4
        assert _send(engine, down, now=due + timedelta(hours=5)) == 0
        subjects = sorted(message["Subject"] for _to, message in server.inbox.messages)
        assert subjects == ["Mail 0", "Mail 1", "Mail 2", "Mail 3"]
    finally:
        server.stop()
    assert all(row.sent_at == due and row.attempts == 3 for row in _rows(engine))


def test_back_off_doubles_and_is_capped():
    assert [backoff(n) for n in (1, 2, 3)] == [timedelta(minutes=m) for m in (1, 2, 4)]
    assert backoff(50) == BACKOFF_CAP


def test_a_recipient_refused_for_good_is_given_up_after_the_limit(engine, mail_settings, smtp):
    _queue(engine, 1, to="refused@example.org")
    _queue(engine, 1, to="ok@example.org")
    now = utcnow()
    for attempt in range(1, MAX_REFUSALS + 1):
        sent = _send(engine, mail_settings, now=now)
        refused = _rows(engine)[0]
        assert refused.attempts == attempt and refused.sent_at is None
        assert "550" in refused.last_error
        assert sent == (1 if attempt == 1 else 0)  # the other mail goes through at once
        now = refused.next_attempt_at if refused.failed_at is None else now
    assert refused.failed_at is not None
    assert _send(engine, mail_settings, now=now + timedelta(days=30)) == 0
    assert _rows(engine)[0].attempts == MAX_REFUSALS
    assert [to for to, _message in smtp.inbox.messages] == [["ok@example.org"]]


def test_a_temporary_refusal_keeps_the_mail_queued_without_a_limit(engine, mail_settings):
    _queue(engine, 1, to="later@example.org")
    now = utcnow()
    for _attempt in range(MAX_REFUSALS + 2):
        _send(engine, mail_settings, now=now)
        now = _rows(engine)[0].next_attempt_at
    row = _rows(engine)[0]
    assert row.failed_at is None and row.sent_at is None
    assert row.attempts == MAX_REFUSALS + 2 and "451" in row.last_error


def test_starttls_is_required_when_set_and_the_mail_is_not_sent_in_clear(
    engine, mail_settings, smtp
):
    _queue(engine, 1)
    strict = mail_settings.model_copy(update={"smtp_starttls": True})
    assert deliver(engine, strict) == 0
    row = _rows(engine)[0]
    assert row.sent_at is None and row.attempts == 1 and "STARTTLS" in row.last_error
    assert smtp.inbox.messages == []


@pytest.mark.parametrize(
    "field", ["subject", "to", "List-Unsubscribe"], ids=["subject", "to", "header"]
)
@pytest.mark.parametrize("mark", ["\r\n", "\n", "\r", "\u2028"], ids=repr)
def test_a_line_break_in_user_text_cannot_queue_a_header(session, field, mark):
    evil = f"Ana{mark}Bcc: victim@example.org"
    values = {"to": "a@example.org", "subject": "Hello", "headers": {}}
    if field == "List-Unsubscribe":
        values["headers"] = {field: evil}
    else:
        values[field] = evil
    with pytest.raises(TrackerError, match="single line"):
        queue_mail(session, kind="test", body="x", **values)


@pytest.mark.parametrize("name", ["Bcc", "To", "Subject", "X-Evil: 1\r\nBcc", "Bad Name"])
def test_a_mail_cannot_set_reserved_or_malformed_header_names(session, name):
    with pytest.raises(TrackerError, match="not a header"):
        queue_mail(session, kind="test", to="a@example.org", subject="s", body="b",
                   headers={name: "x"})  # fmt: skip


def test_a_row_written_around_queue_mail_with_a_line_break_is_never_sent(
    engine, mail_settings, smtp
):
    with Session(engine) as session:
        session.add(
            OutboxMail(
                kind="test",
                to_address="a@example.org",
                subject="Hi Ana\r\nBcc: victim@example.org",
                body="x",
            )
        )
        session.commit()
    _queue(engine, 1)
    assert deliver(engine, mail_settings) == 1
    assert [to for to, _message in smtp.inbox.messages] == [["resident@example.org"]]
    _recipients, message = smtp.inbox.messages[0]
    assert message["Bcc"] is None
    bad = _rows(engine)[0]
    assert bad.failed_at is not None and "unsafe header" in bad.last_error


def test_a_name_with_a_line_break_in_the_body_adds_no_header(engine, mail_settings, smtp):
    _queue(engine, 1)
    with Session(engine) as session:
        row = session.scalars(select(OutboxMail)).one()
        row.body = "Dear Ana\r\nBcc: victim@example.org\r\n\r\nHello"
        session.commit()
    assert deliver(engine, mail_settings) == 1
    recipients, message = smtp.inbox.messages[0]
    assert recipients == ["resident@example.org"] and message["Bcc"] is None
    assert "Bcc: victim@example.org" in message.get_content()


def test_links_are_absolute_on_the_public_url(settings):
    site = settings.model_copy(update={"public_url": "https://tracker.example.nz/rebuild/"})
    assert link("/places/x", settings=site) == "https://tracker.example.nz/rebuild/places/x"
    assert link("me/abc", settings=site) == "https://tracker.example.nz/rebuild/me/abc"


def test_mail_send_command_reports_the_outbox(engine, runner, smtp, monkeypatch):
    _queue(engine, 2)
    result = runner.invoke(_cli(), ["mail", "send"])
    assert result.exit_code == 0, result.output
    assert "0 sent; 2 queued, 0 failed." in result.output
    assert "TRACKER_SMTP_HOST is not set" in result.output
    monkeypatch.setenv("TRACKER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TRACKER_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("TRACKER_SMTP_STARTTLS", "false")
    result = runner.invoke(_cli(), ["mail", "send"])
    assert result.exit_code == 0, result.output
    assert "2 sent; 0 queued, 0 failed." in result.output
    assert len(smtp.inbox.messages) == 2


def _cli():
    from tracker.cli import main

    return main


def test_the_scheduler_sends_the_outbox_as_tracker_mail_send_does(loaded, mail_settings, smtp):
    import threading
    import time

    from tracker.scheduler import FeedScheduler, Timing

    engine = loaded[0]
    _queue(engine, 2)
    timing = Timing(lease=1.5, sync=0.3, max_jitter=0, mail=0.2, alerts=0.2)
    scheduler = FeedScheduler(engine, holder="mail-test", timing=timing, settings=mail_settings)
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 8
        while len(smtp.inbox.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert sorted(m["Subject"] for _to, m in smtp.inbox.messages) == ["Mail 0", "Mail 1"]
    assert all(row.sent_at is not None for row in _rows(engine))
