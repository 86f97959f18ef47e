""" "This isn't finished": a resident challenges a complete work, the owning agency answers or
hides it on /agency/challenges, and the work page shows counts, then notes with answers."""

import re

import pytest
from page_helpers import page, store, text
from smtp_helpers import SmtpServer
from sqlalchemy import select
from sqlmodel import Session
from staff_helpers import add_user, csrf_token, sign_in

from tracker.auth import disable_user
from tracker.mail import deliver
from tracker.models import Agency, Challenge, OutboxMail, User

RESIDENT = "ana@example.org"
STAFF = "works@council.example"
OTHER_STAFF = "staff@eqc.example"
WORK = "/works/council/w1"
FORM = WORK + "/challenge"


def work(ref="w1", status="complete", title=None):
    done = (
        {"actual_start": "2026-10-01", "actual_end": "2026-11-20"} if status == "complete" else {}
    )
    return {**done, "id": ref, "title": title or f"Footpath {ref}", "status": status,
            "geometry": {"type": "Point", "coordinates": [172.605, -43.535]}}  # fmt: skip


@pytest.fixture
def city(app):
    """A complete council work, a council staff account and an EQC one."""
    store(app, "council", works=[work()])
    add_user(app, STAFF, agency_id="council")
    add_user(app, OTHER_STAFF, agency_id="eqc")
    return app


def challenge(client, path=FORM, *, token_from=None, **fields):
    data = {"note": "The kerb on the north side\nis still broken.", "location": "outside 12",
            "author_name": "Ana Tui", "email": RESIDENT, **fields}  # fmt: skip
    token = csrf_token(client, token_from or path)
    return client.post(path, data={**data, "csrf_token": token})


def rows(app, model=Challenge):
    with Session(app.extensions["engine"]) as session:
        return session.scalars(select(model).order_by(model.id)).all()


def mails(app, kind=None):
    return [m for m in rows(app, OutboxMail) if kind is None or m.kind == kind]


def staff_client(app, email=STAFF):
    client = app.test_client()
    assert sign_in(client, email).status_code in (302, 303)
    return client


def staff_post(client, path, data=None):
    token = csrf_token(client, "/agency/challenges")
    return client.post(path, data={**(data or {}), "csrf_token": token})


def finished_section(client, path=WORK):
    return page(client, path).select_one("#finished")


def test_a_challenge_reaches_the_agency_and_the_page_shows_only_a_count(city, client):
    response = challenge(client)
    assert response.status_code == 200
    assert "has been told" in response.get_data(as_text=True)
    (row,) = rows(city)
    assert (row.status, row.author_name, row.location) == ("open", "Ana Tui", "outside 12")
    # Mail: an acknowledgement to the resident with the your-data link, one to the staff.
    (ack,) = mails(city, "challenge.received")
    assert ack.to_address == RESIDENT and "/me/" in ack.body and "Footpath w1" in ack.body
    (told,) = mails(city, "challenge.agency")
    assert told.to_address == STAFF and "is still broken" in told.body
    assert RESIDENT not in told.body + told.subject and "/agency/challenges" in told.body
    assert not [m for m in mails(city) if m.to_address == OTHER_STAFF]
    # The work page: a count and a date, not the note, the name or the email.
    section = finished_section(client)
    assert "1 resident says this isn't finished" in text(section)
    assert section.find("time") is not None
    html = client.get(WORK).get_data(as_text=True)
    assert "still broken" not in html and "Ana Tui" not in html and RESIDENT not in html
    # The agency sees it, with an answer form and a hide button.
    staff = staff_client(city)
    listing = page(staff, "/agency/challenges")
    item = listing.select_one(f"#challenge-{row.id}")
    assert "is still broken" in text(item) and "outside 12" in text(item)
    assert item.select_one("textarea[name=answer][required]") is not None
    assert [b.string for b in item.select("button")] == ["Publish the answer", "Hide (abusive)"]
    assert RESIDENT not in listing.decode()
    assert "Challenges" in [a.string for a in listing.select("nav.tabs a")]


def test_an_answer_publishes_the_note_and_mails_the_resident(city, client):
    challenge(client, note="Line one <b>bold</b>\nline two")
    (row,) = rows(city)
    staff = staff_client(city)
    response = staff_post(staff, f"/agency/challenges/{row.id}/answer",
                          {"answer": "A crew returns\non Monday."})  # fmt: skip
    assert response.status_code == 303
    (row,) = rows(city)
    assert row.status == "answered" and row.answered_at is not None and row.answered_by
    section = finished_section(client)
    quotes = section.select("blockquote.user-text")
    assert [q.get_text() for q in quotes] == ["Line one <b>bold</b>\nline two",
                                              "A crew returns\non Monday."]  # fmt: skip
    assert section.find("b") is None  # escaped, not markup
    assert "outside 12" in text(section) and "Ana Tui" in text(section)
    assert "resident says" not in text(section)  # no longer open
    (answered,) = mails(city, "challenge.answered")
    assert answered.to_address == RESIDENT and "A crew returns" in answered.body
    assert "/me/" in answered.body
    # The agency's list moves it below, answered; answering again is refused.
    closed = page(staff, "/agency/challenges").select_one(".challenges-closed")
    assert "answered" in text(closed) and "A crew returns" in text(closed)
    again = staff_post(staff, f"/agency/challenges/{row.id}/answer", {"answer": "Again"})
    assert again.status_code == 409
    # Hiding an answered challenge takes the note and the answer off the page.
    assert staff_post(staff, f"/agency/challenges/{row.id}/hide").status_code == 303
    assert "A crew returns" not in client.get(WORK).get_data(as_text=True)


def test_the_answer_is_required_and_limited(city, client):
    challenge(client)
    (row,) = rows(city)
    staff = staff_client(city)
    for answer, message in (("  ", "Answer: write the answer"), ("x" * 2001, "at most 2,000")):
        response = staff_post(staff, f"/agency/challenges/{row.id}/answer", {"answer": answer})
        assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert rows(city)[0].status == "open" and not mails(city, "challenge.answered")


def test_a_hidden_challenge_is_never_shown(city, client):
    challenge(client, note="abusive words")
    (row,) = rows(city)
    staff = staff_client(city)
    assert staff_post(staff, f"/agency/challenges/{row.id}/hide").status_code == 303
    assert rows(city)[0].status == "hidden"
    html = client.get(WORK).get_data(as_text=True)
    assert "abusive words" not in html and "resident says" not in html
    closed = page(staff, "/agency/challenges").select_one(".challenges-closed")
    assert "hidden" in text(closed)  # still listed for the agency
    response = staff_post(staff, f"/agency/challenges/{row.id}/answer", {"answer": "late"})
    assert response.status_code == 409


def test_only_a_complete_work_takes_a_challenge(city, client):
    store(city, "council", works=[work("w2", status="in_progress")])
    assert "This isn't finished?" in text(finished_section(client))
    assert "This isn't finished?" not in text(finished_section(client, "/works/council/w2"))
    get = client.get("/works/council/w2/challenge")
    assert get.status_code == 409 and "not marked complete" in get.get_data(as_text=True)
    post = challenge(client, "/works/council/w2/challenge", token_from=FORM)
    assert post.status_code == 409 and rows(city) == []
    # A work reopened while the form was open: the write path refuses it too.
    token = csrf_token(client, FORM)
    store(city, "council", works=[work("w1", status="in_progress")])
    data = {"note": "n", "author_name": "Ana", "email": RESIDENT, "csrf_token": token}
    late = client.post(FORM, data=data)
    assert late.status_code == 409 and "not marked complete" in late.get_data(as_text=True)
    assert rows(city) == [] and mails(city) == []


def test_the_form_route_is_not_taken_for_a_work_ref(city, client):
    """/works/A/R/challenge is the form, not the work page of a ref "R/challenge"."""
    soup = page(client, FORM)
    assert soup.select_one("form textarea[name=note]") is not None
    assert soup.select_one("input[name=website]") is not None
    assert client.get("/works/council/nope/challenge").status_code == 404
    assert client.get("/works/nobody/w1/challenge").status_code == 404
    assert challenge(client, "/works/council/nope/challenge", token_from=FORM).status_code == 404


BAD_FIELDS = [
    ({"note": "   "}, "Note: say what is not finished"),
    ({"note": "x" * 2001}, "Note: at most 2,000 characters"),
    ({"note": "bell \x07"}, "Note: remove the control characters"),
    ({"location": "x" * 301}, "Where: at most 300 characters"),
    ({"author_name": "  \n "}, "Your name: this is needed"),
    ({"author_name": "n" * 101}, "Your name: at most 100 characters"),
    ({"author_name": "a\x1bb"}, "Your name: remove the control characters"),
    ({"email": "not an address"}, "Your email: enter an address"),
    ({"email": "a@b.example\nBcc: x@y.example"}, "Your email: enter an address"),
    ({"email": "a" * 250 + "@b.nz"}, "Your email: enter an address"),
]


def test_bad_fields_are_refused_and_shown_back(city, client):
    """Every bad field in turn (one database per backend: a refusal counts no hit)."""
    for fields, message in BAD_FIELDS:
        response = challenge(client, **fields)
        html = response.get_data(as_text=True)
        assert response.status_code == 400 and message in html, fields
        assert rows(city) == [] and mails(city) == [], fields
        if "author_name" not in fields:
            assert 'value="Ana Tui"' in html  # what the resident typed stays in the form
    assert challenge(client).status_code == 200  # and the limit still lets a good one in


def test_whitespace_is_collapsed_and_limits_are_inclusive(city, client):
    response = challenge(client, note="n" * 2000, location="x" * 300,
                         author_name="  Ana \t  Tui  ")  # fmt: skip
    assert response.status_code == 200
    (row,) = rows(city)
    assert row.author_name == "Ana Tui" and len(row.note) == 2000 and len(row.location) == 300


def test_the_honeypot_stores_nothing(city, client):
    response = challenge(client, website="http://spam.example")
    assert response.status_code == 200 and "has been told" in response.get_data(as_text=True)
    assert rows(city) == [] and mails(city) == []


def test_a_client_may_challenge_five_times_an_hour(city, client):
    for _ in range(5):
        assert challenge(client).status_code == 200
    refused = challenge(client)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert len(rows(city)) == 5


def test_a_post_without_the_csrf_token_is_refused(city, client):
    fresh = city.test_client()
    data = {"note": "n", "author_name": "Ana", "email": RESIDENT}
    assert fresh.post(FORM, data=data).status_code == 400
    challenge(client)
    (row,) = rows(city)
    staff = staff_client(city)
    assert (
        staff.post(f"/agency/challenges/{row.id}/answer", data={"answer": "x"}).status_code == 400
    )
    assert staff.post(f"/agency/challenges/{row.id}/hide").status_code == 400
    assert rows(city)[0].status == "open" and len(rows(city)) == 1


def test_another_agency_neither_sees_nor_answers_nor_hides(city, client):
    challenge(client, note="council's kerb")
    (row,) = rows(city)
    other = staff_client(city, OTHER_STAFF)
    listing = other.get("/agency/challenges").get_data(as_text=True)
    assert "council's kerb" not in listing and "No open challenges" in listing
    answer = staff_post(other, f"/agency/challenges/{row.id}/answer", {"answer": "not ours"})
    assert answer.status_code == 404
    assert staff_post(other, f"/agency/challenges/{row.id}/hide").status_code == 404
    assert staff_post(other, "/agency/challenges/999/hide").status_code == 404
    assert rows(city)[0].status == "open"
    anonymous = city.test_client()
    assert anonymous.get("/agency/challenges").status_code == 303  # to the sign-in page
    add_user(city, "official@city.example", role="official")
    official = staff_client(city, "official@city.example")
    assert official.get("/agency/challenges").status_code == 403


def test_the_email_is_on_no_page(city, client):
    challenge(client)
    (row,) = rows(city)
    staff = staff_client(city)
    pages = [WORK, FORM, "/agencies/council", "/places/opawa"]
    seen = [client.get(p).get_data(as_text=True) for p in pages]
    seen.append(staff.get("/agency/challenges").get_data(as_text=True))
    staff_post(staff, f"/agency/challenges/{row.id}/answer", {"answer": "Fixed Monday"})
    seen += [client.get(WORK).get_data(as_text=True),
             staff.get("/agency/challenges").get_data(as_text=True)]  # fmt: skip
    assert "Fixed Monday" in seen[-2]
    assert not [html for html in seen if RESIDENT in html or "ana@" in html]


def test_the_your_data_page_lists_and_deletes_a_challenge(city, client):
    challenge(client)
    (ack,) = mails(city, "challenge.received")
    me = re.search(r"http://127\.0\.0\.1:8000(/me/\S+)", ack.body).group(1)
    soup = page(client, me)
    labels = [text(th) for th in soup.select("tbody th")]
    assert "“This isn't finished” note" in labels
    assert "is still broken" in text(soup)
    (row,) = rows(city)
    response = client.post(me + "/delete", data={"item": f"challenge:{row.id}",
                                                 "csrf_token": csrf_token(client, me)})  # fmt: skip
    assert response.status_code == 200 and rows(city) == []
    assert "resident says" not in client.get(WORK).get_data(as_text=True)


def test_the_mails_go_out_over_smtp(city, client):
    challenge(client, author_name="Ana\u00e9 Tui")
    settings = city.config["SETTINGS"]
    server = SmtpServer().start()
    try:
        live = settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_starttls": False}
        )
        assert deliver(city.extensions["engine"], live) == 2
        received = {tuple(to): message for to, message in server.inbox.messages}
    finally:
        server.stop()
    assert set(received) == {(RESIDENT,), (STAFF,)}
    assert received[(STAFF,)]["Subject"] == "A resident says Footpath w1 isn't finished"
    assert RESIDENT not in received[(STAFF,)].get_content()


def test_each_active_staff_account_of_the_agency_is_mailed_else_its_contact(city, client):
    second = add_user(city, "second@council.example", agency_id="council")
    add_user(city, "official@city.example", role="official")
    gone = add_user(city, "gone@council.example", agency_id="council")
    with Session(city.extensions["engine"]) as session:
        disable_user(session, gone)
        session.commit()
    challenge(client)
    told = sorted(m.to_address for m in mails(city, "challenge.agency"))
    assert told == ["second@council.example", STAFF]
    # An agency without active accounts: its contact address from the tree.
    with Session(city.extensions["engine"]) as session:
        for user_id in (second, *session.scalars(select(User.id).where(User.email == STAFF))):
            disable_user(session, user_id)
        session.get(Agency, "council").email = "works@council.example.nz"
        session.commit()
    challenge(client)
    assert [m.to_address for m in mails(city, "challenge.agency")][2:] == [
        "works@council.example.nz"
    ]


def test_a_work_of_a_retired_agency_takes_no_challenge(city, client):
    from datetime import UTC, datetime

    from tracker import challenges
    from tracker.errors import NotFound

    token = csrf_token(client, FORM)
    with Session(city.extensions["engine"]) as session:
        session.get(Agency, "council").retired_at = datetime.now(UTC)
        session.commit()
    assert "This isn't finished?" not in text(finished_section(client))  # the page stays
    assert client.get(FORM).status_code == 404
    data = {"note": "Still broken.", "author_name": "Ana", "email": RESIDENT, "csrf_token": token}
    assert client.post(FORM, data=data).status_code == 404
    with Session(city.extensions["engine"]) as session:
        from tracker.models import Work

        found = session.scalars(select(Work)).one()
        with pytest.raises(NotFound):
            challenges.submit_challenge(session, found, note="n", location=None,
                                        author_name="Ana", email=RESIDENT,
                                        settings=city.config["SETTINGS"])  # fmt: skip
    assert rows(city) == [] and mails(city) == []
