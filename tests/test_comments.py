"""Residents' comments on places, works and measures: written on a form page of their own,
pre-moderated on /admin/comments, shown (escaped) on the page they are about, reported
back into the queue; the email is never shown and the author can delete it on /me."""

import re
from zoneinfo import ZoneInfo

import feedparser
import pytest
from page_helpers import page, store, text
from smtp_helpers import SmtpServer
from sqlalchemy import select
from sqlmodel import Session
from staff_helpers import add_user, csrf_token, sign_in

from tracker import comments
from tracker.errors import TrackerError
from tracker.mail import deliver
from tracker.models import AuditEvent, Comment, OutboxMail

EMAIL = "ana.comment@example.org"
FORM = "/places/opawa/comment"
GOOD = {"author_name": "  Ana   Tūhoe ", "email": EMAIL, "body": "The footpath is\nstill shut."}


def work(ref="w1"):
    return {"id": ref, "title": f"Work {ref}", "status": "in_progress",
            "geometry": {"type": "Point", "coordinates": [172.605, -43.535]}}  # fmt: skip


def send(client, path=FORM, **fields):
    data = GOOD | fields
    return client.post(path, data={**data, "csrf_token": csrf_token(client, path)})


def rows(app, model=Comment, *where):
    with Session(app.extensions["engine"]) as session:
        return session.scalars(select(model).where(*where).order_by(model.id)).all()


def mails(app, kind=None):
    where = [OutboxMail.kind == kind] if kind else []
    return rows(app, OutboxMail, *where)


def official(app, client, email="mod@ccc.example"):
    user_id = add_user(app, email, "official")
    sign_in(client, email)
    return user_id


def moderate(client, comment_id, action, **data):
    path = f"/admin/comments/{comment_id}/{action}"
    token = csrf_token(client, "/admin/comments")
    return client.post(path, data={**data, "csrf_token": token})


def comment_texts(soup):
    return [text(a) for a in soup.select("#comments article.comment")]


# --- the path to publication --------------------------------------------------------------


def test_a_comment_waits_for_moderation_then_shows_on_its_page_and_feed(app, client):
    answer = send(client)
    assert answer.status_code == 200 and "Thank you" in answer.get_data(as_text=True)
    (comment,) = rows(app)
    assert (comment.status, comment.author_name, comment.place_id) == (
        "pending",
        "Ana Tūhoe",
        "opawa",
    )
    assert comment.body == "The footpath is\nstill shut."  # CRLF from the form is one \n
    (ack,) = mails(app)
    assert (ack.kind, ack.to_address) == ("comment.received", EMAIL)
    assert "awaits moderation" in ack.subject and "/me/" in ack.body
    soup = page(client, "/places/opawa")
    assert comment_texts(soup) == []
    assert "No comments on Ōpāwa yet." in text(soup.select_one("#comments"))
    entries = feedparser.parse(client.get("/places/opawa.atom").data).entries
    assert [e for e in entries if e.title.startswith("Comment")] == []

    mod = app.test_client()
    moderator = official(app, mod)
    queue = page(mod, "/admin/comments")
    assert "Ana Tūhoe" in text(queue.select_one(f"#comment-{comment.id}"))
    assert EMAIL not in str(queue)
    assert moderate(mod, comment.id, "publish").status_code == 303
    assert page(mod, "/admin/comments").select("article.moderation") == []

    (shown,) = rows(app)
    assert (shown.status, shown.moderated_by, shown.reports) == ("published", moderator, 0)
    soup = page(client, "/places/opawa")
    (article,) = soup.select("#comments article.comment")
    assert article["id"] == f"comment-{comment.id}"
    assert text(article.select_one(".comment-body")) == "The footpath is still shut."
    assert article.select_one(".comment-body").string == "The footpath is\nstill shut."
    assert article.select_one("strong").string == "Ana Tūhoe"
    local = shown.published_at.astimezone(ZoneInfo("Pacific/Auckland"))
    assert article.select_one("time").string == local.strftime("%-d %b %Y")
    report = article.select_one("form.comment-report")
    assert report["method"] == "get" and report["action"] == f"/comments/{comment.id}/report"
    assert soup.select_one("#comments a[href='/places/opawa/comment']")
    entries = feedparser.parse(client.get("/places/opawa.atom").data).entries
    assert [(e.title, e.summary) for e in entries if e.title.startswith("Comment")] == [
        ("Comment from Ana Tūhoe", "The footpath is\nstill shut.")
    ]
    published = mails(app, "comment.published")
    assert [m.to_address for m in published] == [EMAIL]
    assert f"/places/opawa#comment-{comment.id}" in published[0].body
    assert "/me/" in published[0].body
    (event,) = rows(app, AuditEvent, AuditEvent.action.like("comment.%"))
    assert (event.action, event.entity_id, event.user_id, event.channel) == (
        "comment.publish",
        f"comment/{comment.id}",
        moderator,
        "web",
    )
    assert EMAIL not in repr((event.old, event.new))


def test_mail_to_the_author_goes_through_a_real_smtp_server(app, client):
    send(client)
    server = SmtpServer().start()
    try:
        settings = app.config["SETTINGS"].model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_starttls": False}
        )
        assert deliver(app.extensions["engine"], settings) == 1
        ((recipients, message),) = server.inbox.messages
    finally:
        server.stop()
    assert recipients == [EMAIL]
    assert message["Subject"] == "Your comment on Ōpāwa awaits moderation"
    body = message.get_content().replace("\r\n", "\n")
    assert "> The footpath is\n> still shut." in body
    assert re.search(r"http://127\.0\.0\.1:8000/me/\S+", body)


def test_a_rejected_comment_is_never_shown_and_its_author_is_told_why(app, client):
    send(client, body="<b>spam</b> buy now")
    (comment,) = rows(app)
    mod = app.test_client()
    official(app, mod)
    refused = moderate(mod, comment.id, "reject", reason="   ")
    assert refused.status_code == 400
    assert "Reason: it is empty." in refused.get_data(as_text=True)
    assert rows(app)[0].status == "pending" and mails(app, "comment.rejected") == []
    assert (
        moderate(mod, comment.id, "reject", reason="Advertising is not allowed.").status_code == 303
    )
    (rejected,) = rows(app)
    assert (rejected.status, rejected.reason) == ("rejected", "Advertising is not allowed.")
    (mail,) = mails(app, "comment.rejected")
    assert mail.to_address == EMAIL and "Advertising is not allowed." in mail.body
    assert "was not published" in mail.subject and "/me/" in mail.body
    assert "spam" not in client.get("/places/opawa").get_data(as_text=True)
    assert client.get(f"/comments/{comment.id}/report").status_code == 404
    assert moderate(mod, comment.id, "publish").status_code == 409  # a rejection stands
    assert [e.action for e in rows(app, AuditEvent, AuditEvent.action.like("comment.%"))] == [
        "comment.reject"
    ]


@pytest.mark.parametrize(
    ("path", "page_path", "column", "label"),
    [
        ("/works/council/w1/comment", "/works/council/w1", "work_id", "this work"),
        ("/measures/homes-repaired/comment", "/measures/homes-repaired", "measure_id",
         "this measure"),
    ],
)  # fmt: skip
def test_works_and_measures_take_comments_too(app, client, path, page_path, column, label):
    store(app, "council", works=[work()])
    assert f"No comments on {label} yet." in text(page(client, page_path).select_one("#comments"))
    assert page(client, page_path).select_one(f"#comments a[href='{path}']")
    assert send(client, path).status_code == 200
    (comment,) = rows(app)
    assert getattr(comment, column) is not None and comment.place_id is None
    mod = app.test_client()
    official(app, mod)
    moderate(mod, comment.id, "publish")
    soup = page(client, page_path)
    assert [a["id"] for a in soup.select("#comments article.comment")] == [f"comment-{comment.id}"]
    assert EMAIL not in str(soup)


def test_a_work_whose_title_has_a_line_break_takes_comments_and_their_mails(app, client):
    """Mail subjects name the work on one line (a subject with a line break is refused)."""
    store(app, "council", works=[work() | {"title": "Footpath\nrenewal"}])
    assert send(client, "/works/council/w1/comment").status_code == 200
    (comment,) = rows(app)
    mod = app.test_client()
    official(app, mod)
    assert moderate(mod, comment.id, "publish").status_code in (200, 303)
    subjects = [mail.subject for mail in mails(app)]
    assert "Your comment on Footpath renewal awaits moderation" in subjects
    assert "Your comment on Footpath renewal is published" in subjects


def test_comments_are_listed_newest_first(app, client):
    mod = app.test_client()
    official(app, mod)
    for n in range(3):
        send(client, body=f"Comment {n}")
    for comment in rows(app):
        moderate(mod, comment.id, "publish")
    with Session(app.extensions["engine"]) as session:
        listed = comments.published_for(session, place_id="opawa")
    assert [c.body for c in listed] == ["Comment 2", "Comment 1", "Comment 0"]
    bodies = [text(b) for b in page(client, "/places/opawa").select(".comment-body")]
    assert bodies == ["Comment 2", "Comment 1", "Comment 0"]


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"author_name": "   "}, "Name: enter the name"),
        ({"author_name": "x" * 101}, "Name: at most 100 characters"),
        ({"author_name": "Ana\x07"}, "Name: it holds a control character"),
        ({"email": "not-an-address"}, "Email: enter an email address"),
        ({"email": ""}, "Email: enter an email address"),
        ({"email": "a" * 64 + "@" + "b" * 186 + ".org"}, "Email: enter an email address"),
        ({"email": "ana@example.org\nBcc: x@example.org"}, "Email: enter an email address"),
        ({"body": " \n "}, "Comment: it is empty."),
        ({"body": "x" * 2001}, "Comment: at most 2,000 characters"),
        ({"body": "bell\x07"}, "Comment: it holds a control character (U+0007)"),
        ({"body": "tab\there"}, "Comment: it holds a control character (U+0009)"),
        ({"body": "line\u2028separator"}, "Comment: it holds a control character (U+2028)"),
    ],
)
def test_bad_fields_are_refused_naming_the_field_and_shown_back(app, client, fields, message):
    answer = send(client, **fields)
    assert answer.status_code == 400
    soup = BeautifulSoupOf(answer)
    assert message in text(soup.select_one("#comment-error"))
    assert soup.select_one("[aria-invalid=true]") is not None
    assert rows(app) == [] and mails(app) == []
    if "body" in fields:
        assert soup.select_one("textarea[name=body]").string == fields["body"].replace("\r", "")


def BeautifulSoupOf(answer):
    from bs4 import BeautifulSoup

    return BeautifulSoup(answer.get_data(as_text=True), "html.parser")


def test_a_body_of_exactly_2000_characters_and_a_name_of_100_are_taken(app, client):
    assert send(client, author_name="n" * 100, body="b" * 2000).status_code == 200
    (comment,) = rows(app)
    assert len(comment.body) == 2000 and len(comment.author_name) == 100


def test_the_honeypot_answers_as_if_accepted_and_stores_nothing(app, client):
    answer = send(client, website="http://spam.example")
    assert answer.status_code == 200 and "Thank you" in answer.get_data(as_text=True)
    assert rows(app) == [] and mails(app) == []


def test_a_post_without_the_csrf_token_is_refused(app, client):
    assert client.post(FORM, data=GOOD).status_code == 400
    client.get(FORM)
    assert client.post(FORM, data={**GOOD, "csrf_token": "forged"}).status_code == 400
    assert rows(app) == []


def test_the_sixth_comment_in_an_hour_is_refused_with_retry_after(app, client):
    for n in range(5):
        assert send(client, body=f"Comment {n}").status_code == 200
    answer = send(client, body="One too many")
    assert answer.status_code == 429
    assert 0 < int(answer.headers["Retry-After"]) <= 3600
    assert "Too many comments" in answer.get_data(as_text=True)
    assert "One too many" in answer.get_data(as_text=True)  # the text is kept to send later
    assert len(rows(app)) == 5


@pytest.mark.parametrize(
    "path",
    ["/places/nowhere/comment", "/places/tiny/comment", "/works/council/nope/comment",
     "/works/nobody/w1/comment", "/measures/nope/comment", "/measures/housing/comment"],
)  # fmt: skip
def test_an_unknown_target_is_a_404(app, client, path):
    store(app, "council", works=[work()])
    assert client.get(path).status_code == 404
    client.get("/places/opawa/comment")  # a session with a CSRF token
    token = csrf_token(client, FORM)
    assert client.post(path, data={**GOOD, "csrf_token": token}).status_code == 404
    assert rows(app) == []


def test_only_officials_may_moderate(app, client):
    send(client)
    (comment,) = rows(app)
    assert client.get("/admin/comments").status_code == 303  # anonymous: to the sign-in page
    token = csrf_token(client, FORM)
    assert client.post(f"/admin/comments/{comment.id}/publish",
                       data={"csrf_token": token}).status_code == 303  # fmt: skip
    staff = app.test_client()
    add_user(app, "eqc@eqc.example", "agency", "eqc")
    sign_in(staff, "eqc@eqc.example")
    assert staff.get("/admin/comments").status_code == 403
    token = csrf_token(staff, "/agency")
    for action, data in (("publish", {}), ("reject", {"reason": "no"})):
        answer = staff.post(f"/admin/comments/{comment.id}/{action}",
                            data={**data, "csrf_token": token})  # fmt: skip
        assert answer.status_code == 403
    mod = app.test_client()
    official(app, mod)
    assert mod.post(f"/admin/comments/{comment.id}/publish").status_code == 400  # no token
    assert rows(app)[0].status == "pending"
    assert rows(app, AuditEvent, AuditEvent.action.like("comment.%")) == []


# --- reports ----------------------------------------------------------------------------


def published(app, client, **fields):
    send(client, **fields)
    comment = rows(app)[-1]
    mod = app.test_client()
    official(app, mod, f"mod{comment.id}@ccc.example")
    assert moderate(mod, comment.id, "publish").status_code == 303
    return comment, mod


def test_a_reported_comment_goes_back_to_the_queue_until_kept_or_taken_down(app, client):
    comment, mod = published(app, client)
    reporter = app.test_client()
    confirm = f"/comments/{comment.id}/report"
    soup = page(reporter, confirm)
    assert "The footpath is" in text(soup) and EMAIL not in str(soup)
    assert reporter.post(confirm).status_code == 400  # no CSRF token
    for _ in range(2):
        answer = reporter.post(confirm, data={"csrf_token": csrf_token(reporter, confirm)})
        assert answer.status_code == 200 and "Thank you" in answer.get_data(as_text=True)
    assert rows(app)[0].reports == 2
    assert text(page(reporter, "/places/opawa").select_one(".comment-body"))  # still shown
    item = page(mod, "/admin/comments").select_one(f"#comment-{comment.id}")
    assert "reported 2 times" in text(item)
    assert item.select_one("button").string == "Keep it published"
    assert moderate(mod, comment.id, "publish").status_code == 303
    assert rows(app)[0].reports == 0
    assert page(mod, "/admin/comments").select("article.moderation") == []
    assert len(mails(app, "comment.published")) == 1  # kept: no second "published" mail

    reporter.post(confirm, data={"csrf_token": csrf_token(reporter, confirm)})
    assert moderate(mod, comment.id, "reject", reason="Names a private person.").status_code == 303
    assert page(client, "/places/opawa").select("#comments article.comment") == []
    (mail,) = mails(app, "comment.rejected")
    assert "has been taken down" in mail.subject and "Names a private person." in mail.body
    actions = [e.action for e in rows(app, AuditEvent, AuditEvent.action.like("comment.%"))]
    assert actions == ["comment.publish", "comment.publish", "comment.reject"]


def test_reporting_a_pending_rejected_or_unknown_comment_is_a_404(app, client):
    send(client)
    (comment,) = rows(app)
    token = csrf_token(client, FORM)
    for comment_id in (comment.id, 999):
        assert client.get(f"/comments/{comment_id}/report").status_code == 404
        path = f"/comments/{comment_id}/report"
        assert client.post(path, data={"csrf_token": token}).status_code == 404
    assert rows(app)[0].reports == 0


def test_reports_are_rate_limited(app, client):
    comment, _mod = published(app, client)
    confirm = f"/comments/{comment.id}/report"
    token = csrf_token(client, confirm)
    from tracker.web.comments import REPORT_LIMIT

    for _ in range(REPORT_LIMIT):
        assert client.post(confirm, data={"csrf_token": token}).status_code == 200
    answer = client.post(confirm, data={"csrf_token": token})
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert rows(app)[0].reports == REPORT_LIMIT


# --- privacy and escaping ---------------------------------------------------------------


def test_the_email_never_appears_on_any_page_or_feed(app, client):
    store(app, "council", works=[work()])
    published(app, client)
    send(client, "/works/council/w1/comment")
    comment, mod = rows(app)[-1], app.test_client()
    official(app, mod, "mod2@ccc.example")
    moderate(mod, comment.id, "publish")
    for path in ("/places/opawa", "/works/council/w1", "/places/opawa.atom",
                 f"/comments/{comment.id}/report", "/admin/comments", "/admin/audit",
                 "/places/opawa/comment"):  # fmt: skip
        for who in (client, mod):
            assert EMAIL not in who.get(path).get_data(as_text=True), path


def test_a_hostile_body_and_name_are_shown_as_text(app, client):
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)"> ${x} `y`'
    comment, mod = published(app, client, author_name="<b>Ana</b>", body=hostile)
    for who, path in ((client, "/places/opawa"), (client, f"/comments/{comment.id}/report")):
        html = who.get(path).get_data(as_text=True)
        assert "<script>alert(1)" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;Ana&lt;/b&gt;" in html
    soup = page(client, "/places/opawa")
    assert soup.select_one(".comment-body").string == hostile
    assert soup.select("#comments script, #comments img") == []
    send(client, author_name="<i>x</i>", body="<script>pending()</script>")
    queue = mod.get("/admin/comments").get_data(as_text=True)
    assert "<script>pending()" not in queue and "&lt;script&gt;pending()" in queue


def test_the_your_data_page_lists_and_deletes_the_comment(app, client):
    comment, _mod = published(app, client)
    me = re.search(r"http://127\.0\.0\.1:8000(/me/\S+)", mails(app)[0].body).group(1)
    soup = page(client, me)
    listed = [text(row) for row in soup.select("table.me-items tbody tr")]
    assert any(row.startswith("Comment Ōpāwa: The footpath is still shut.") for row in listed)
    answer = client.post(me + "/delete", data={"item": f"comment:{comment.id}",
                                               "csrf_token": csrf_token(client, me)})  # fmt: skip
    assert answer.status_code == 200
    assert rows(app) == []
    assert page(client, "/places/opawa").select("#comments article.comment") == []


def test_submit_comment_refuses_in_python_with_the_field_named(app):
    with app.app_context(), Session(app.extensions["engine"]) as session:
        target = comments.find_target(session, "place", "opawa")
        with pytest.raises(TrackerError) as refused:
            comments.submit_comment(session, target=target, author_name="Ana", email=EMAIL,
                                    body="", settings=app.config["SETTINGS"])  # fmt: skip
        assert refused.value.field == "body" and refused.value.status == 400
        with pytest.raises(TrackerError, match=r"U\+0000"):  # the site refuses it sooner
            comments.submit_comment(session, target=target, author_name="Ana", email=EMAIL,
                                    body="nul\x00", settings=app.config["SETTINGS"])  # fmt: skip
        with pytest.raises(TrackerError) as refused:
            comments.reject(session, 1, 1, "why")
        assert refused.value.status == 404


def test_pages_with_comments_carry_no_csrf_token_so_they_stay_cached(app, client):
    published(app, client)
    visitor = app.test_client()
    for path in ("/places/opawa", "/measures/homes-repaired"):
        html = visitor.get(path).get_data(as_text=True)
        assert 'name="csrf_token"' not in html, path
    with visitor.session_transaction() as session:
        assert "csrf" not in session  # reading the page gave this visitor no token


def test_a_work_of_a_retired_agency_takes_no_comment(app, client):
    from datetime import UTC, datetime

    from tracker.models import Agency

    store(app, "council", works=[work()])
    path = "/works/council/w1/comment"
    token = csrf_token(client, path)
    with Session(app.extensions["engine"]) as session:
        session.get(Agency, "council").retired_at = datetime.now(UTC)
        session.commit()
    soup = page(client, "/works/council/w1")  # its page stays, with no link to the form
    assert soup.select_one("#comments") and not soup.find("a", href=path)
    assert client.get(path).status_code == 404
    assert client.post(path, data={**GOOD, "csrf_token": token}).status_code == 404
    assert rows(app) == [] and mails(app) == []
