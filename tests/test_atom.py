"""Atom feeds of a place and a street (`/places/ID.atom`, `/streets/ID.atom`): new works,
status changes, new figures and published comments, valid Atom 1.0 (feedparser)."""

from datetime import timedelta

import feedparser
from page_helpers import page, store
from sqlalchemy import select, update
from sqlmodel import Session

from tracker.atom import FEED_SIZE
from tracker.models import Comment, Work, WorkStatusChange

HOSTILE = "<script>alert(1)</script>&amp;\x0b]]>${x}"


def work(ref, status="planned", lon=172.605, lat=-43.535, title=None):
    """A work on Ōpāwa Road, in Ōpāwa."""
    return {
        "id": ref,
        "title": title or f"Work {ref}",
        "status": status,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def feed(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/atom+xml"
    parsed = feedparser.parse(response.get_data())
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return parsed


def test_a_place_feed_has_new_works_status_changes_and_figures(app, client):
    store(app, "council", works=[work("w1")])
    store(app, "council", works=[work("w1", status="in_progress")])
    store(
        app,
        "eqc",
        observations=[
            {"measure": "homes-repaired", "place": "opawa", "date": "2014-06-30", "value": 60}
        ],
    )
    parsed = feed(client, "/places/opawa.atom")
    titles = [entry.title for entry in parsed.entries]
    assert titles[0].startswith("New figures from")
    assert titles[1:] == ["Work w1: now in progress", "New work: Work w1"]
    assert parsed.feed.link == "http://127.0.0.1:8000/places/opawa"
    assert all(entry.id.startswith("tag:127.0.0.1,2026:") for entry in parsed.entries)
    assert parsed.entries[1].link == "http://127.0.0.1:8000/works/council/w1"
    assert "1 value received for" in parsed.entries[0].summary
    assert [entry.updated_parsed for entry in parsed.entries] == sorted(
        (entry.updated_parsed for entry in parsed.entries), reverse=True
    )


def test_entry_ids_are_stable_across_new_data(app, client):
    store(app, "council", works=[work("w1")])
    first = {entry.id for entry in feed(client, "/places/opawa.atom").entries}
    store(app, "council", works=[work("w2")])
    second = {entry.id for entry in feed(client, "/places/opawa.atom").entries}
    assert first < second and len(second) == 2


def test_an_area_feed_has_its_neighbourhoods_works_and_another_place_does_not(app, client):
    store(app, "council", works=[work("w1")])
    area = app.extensions["engine"]
    with Session(area) as session:
        from tracker.models import Place

        parent = session.get(Place, "opawa").parent_id
    assert [e.title for e in feed(client, f"/places/{parent}.atom").entries] == [
        "New work: Work w1"
    ]
    assert feed(client, "/places/st-albans.atom").entries == []


def test_a_street_feed_has_its_works_and_its_neighbourhoods_figures(app, client):
    store(app, "council", works=[work("near")])
    store(app, "council", works=[work("elsewhere", lon=172.615, lat=-43.525)])
    store(
        app,
        "eqc",
        observations=[
            {"measure": "homes-repaired", "place": "opawa", "date": "2014-06-30", "value": 60}
        ],
    )
    titles = [entry.title for entry in feed(client, "/streets/opawa-road.atom").entries]
    assert "New work: Work near" in titles
    assert not any("elsewhere" in title for title in titles)
    assert any(title.startswith("New figures") for title in titles)


def test_published_comments_appear_and_others_do_not(app, client):
    with Session(app.extensions["engine"]) as session:
        for name, body, status in (("Ana", "Great work", "published"), ("Bo", "Hm", "pending")):
            session.add(
                Comment(place_id="opawa", author_name=name, body=body, status=status, **_email())
            )
        session.commit()
    parsed = feed(client, "/places/opawa.atom")
    assert [(e.title, e.summary) for e in parsed.entries] == [("Comment from Ana", "Great work")]
    assert "ana@example.org" not in client.get("/places/opawa.atom").get_data(as_text=True)


def _email() -> dict:
    return {"email": "ana@example.org"} if "email" in Comment.model_fields else {}


def test_hostile_titles_stay_text_and_the_feed_stays_valid(app, client):
    store(app, "council", works=[work("w1", title=HOSTILE)])
    parsed = feed(client, "/places/opawa.atom")
    assert parsed.entries[0].title == "New work: " + HOSTILE.replace("\x0b", "")
    body = client.get("/places/opawa.atom").get_data(as_text=True)
    assert "<script>" not in body


def test_the_feed_holds_the_newest_50(app, client):
    store(app, "council", works=[work(f"w{n}") for n in range(FEED_SIZE + 5)])
    with Session(app.extensions["engine"]) as session:
        changes = session.scalars(select(WorkStatusChange).order_by(WorkStatusChange.id)).all()
        for n, change in enumerate(changes):  # one a minute, oldest first
            session.execute(
                update(WorkStatusChange)
                .where(WorkStatusChange.id == change.id)
                .values(changed_at=change.changed_at + timedelta(minutes=n))
            )
        session.execute(update(Work).values(title=Work.title))
        session.commit()
        newest = {f"Work w{n}" for n in range(5, FEED_SIZE + 5)}
    client.application.extensions.pop("atom_cache", None)
    parsed = feed(client, "/places/opawa.atom")
    assert len(parsed.entries) == FEED_SIZE
    assert {e.title.removeprefix("New work: ") for e in parsed.entries} == newest


def test_feeds_of_unknown_places_and_streets_are_404(client):
    assert client.get("/places/nowhere.atom").status_code == 404
    assert client.get("/streets/nowhere.atom").status_code == 404


def test_place_and_street_pages_link_their_feed_and_alert_form(app, client):
    soup = page(client, "/places/opawa")
    (alternate,) = soup.select('head link[rel="alternate"][type="application/atom+xml"]')
    assert alternate["href"] == "/places/opawa.atom"
    box = soup.select_one(".follow-box")
    assert {a["href"] for a in box.select("a")} == {"/places/opawa/follow", "/places/opawa.atom"}
    soup = page(client, "/streets/opawa-road")
    (alternate,) = soup.select('head link[rel="alternate"][type="application/atom+xml"]')
    assert alternate["href"] == "/streets/opawa-road.atom"
    box = soup.select_one(".follow-box")
    assert {a["href"] for a in box.select("a")} == {
        "/streets/opawa-road/follow",
        "/streets/opawa-road.atom",
    }


def test_a_comment_published_after_the_feed_was_cached_appears_at_once(app, client):
    assert feed(client, "/places/opawa.atom").entries == []
    with Session(app.extensions["engine"]) as session:
        comment = Comment(place_id="opawa", author_name="Ana", body="Hi", status="published",
                          **_email())  # fmt: skip
        session.add(comment)
        session.commit()
        assert [e.title for e in feed(client, "/places/opawa.atom").entries] == ["Comment from Ana"]
        session.delete(comment)  # the resident deleted it from their data page
        session.commit()
    assert feed(client, "/places/opawa.atom").entries == []
