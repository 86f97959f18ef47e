"""The city page (`/`): results, the choropleth and its table, works, filters, escaping."""

import json
import re

import pytest
from page_helpers import forget_pages, map_features, map_scripts, page, store, text

HOSTILE = "<img src=x onerror=alert(1)>`${alert(2)}`\\"


def work(ref, status="planned", lon=172.605, lat=-43.535, title=None):
    row = {
        "id": ref,
        "title": title or f"Work {ref}",
        "status": status,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }
    if status == "complete":
        row |= {"actual_start": "2014-01-01", "actual_end": "2014-02-01"}
    return row


def rollup_statuses(client, place, node_id):
    answer = client.get(f"/api/v1/rollup?place={place}").get_json()
    stack = list(answer["results"])
    while stack:
        node = stack.pop()
        if node["id"] == node_id:
            return node["status"]
        stack.extend(node["children"])
    return "no_data"  # the result takes no part here: the page says "no data" too


def test_every_neighbourhood_row_shows_the_api_status(app, client):
    store(
        app,
        "eqc",
        observations=[
            {"measure": "homes-repaired", "place": "opawa", "date": "2014-01-31", "value": 60},
            {"measure": "homes-repaired", "place": "st-albans", "date": "2014-01-31", "value": 5},
        ],
    )
    soup = page(client, "/?result=housing")
    rows = soup.select("#neighbourhoods tbody tr")
    assert len(rows) == 4  # every neighbourhood of the tiny city, reported or not
    for row in rows:
        place_id = row.th.a["href"].rsplit("/", 1)[1]
        shown = row.select_one(".status")["class"][1].removeprefix("status-")
        assert shown == rollup_statuses(client, place_id, "housing"), place_id


def test_no_data_reads_no_data_never_zero(client):
    soup = page(client, "/")
    table = text(soup.select_one("#neighbourhoods"))
    assert "no data" in table.lower()
    assert not re.search(r"\b0%", table)
    results = soup.select_one("#results")
    assert "0%" not in text(results)


def test_the_page_has_no_inline_script_and_its_map_draws_every_neighbourhood(client):
    soup = page(client, "/")
    assert soup.find_all("script", src=False) == []  # nothing for the CSP to let through
    (script,) = map_scripts(soup)
    (div,) = soup.select("div.folium-map")
    assert f'L.map(\n                "{div["id"]}"' in script  # the script draws this div
    names = {f["properties"].get("name") for f in map_features(script)}
    assert {"Ōpāwa", "St Albans", "Riccarton"} <= names


def test_the_map_script_is_cached_for_a_year_until_data_changes(app, client):
    soup = page(client, "/")
    (tag,) = [t for t in soup.find_all("script", src=True) if "map=" in t["src"]]
    response = client.get(tag["src"])
    assert response.cache_control.max_age == 365 * 24 * 3600
    store(app, "council", works=[work("new")])
    (fresh,) = [t for t in page(client, "/").find_all("script", src=True) if "map=" in t["src"]]
    assert fresh["src"] != tag["src"]  # a write moves the stamp: a new address
    assert "Work new" in client.get(fresh["src"]).get_data(as_text=True)
    # The old address still answers with the map its page was built with (a page open in
    # a browser, or served out of date while it is rebuilt), kept for a year too.
    old = client.get(tag["src"])
    assert old.cache_control.max_age == 365 * 24 * 3600
    assert "Work new" not in old.get_data(as_text=True)
    # Once this process no longer holds it (another worker), it gets today's map, not
    # to be kept.
    app.extensions["map_scripts"] = type(app.extensions["map_scripts"])(512)
    app.extensions["map_cache"] = type(app.extensions["map_cache"])()
    other = client.get(tag["src"])
    assert other.cache_control.no_cache
    assert "Work new" in other.get_data(as_text=True)


def test_the_page_loads_nothing_from_outside(client):
    soup = page(client, "/")
    for tag in soup.find_all(["script", "link", "img"]):
        url = tag.get("src") or tag.get("href") or ""
        assert not url.startswith(("http:", "https:", "//")), url


def test_work_titles_are_escaped_in_the_map(app, client):
    store(app, "council", works=[work("w1", title=HOSTILE)])
    soup = page(client, "/")
    (script,) = map_scripts(soup)
    assert "<img src=x" not in script and "${alert(2)}" not in script
    (feature,) = [f for f in map_features(script) if "title" in f["properties"]]
    assert feature["properties"]["title"] == (
        "&lt;img src=x onerror=alert(1)&gt;&#96;&#36;{alert(2)}&#96;&#92;"
    )


def test_status_filter_changes_the_works_on_the_map(app, client):
    store(app, "council", works=[work("a", "planned"), work("b", "complete", lon=172.615)])
    everything = map_scripts(page(client, "/"))[0]
    planned = map_scripts(page(client, "/?status=planned"))[0]
    assert "Work a" in everything and "Work b" in everything
    assert "Work a" in planned and "Work b" not in planned
    soup = page(client, "/?status=planned")
    assert soup.select_one('input[value="planned"]').has_attr("checked")


def test_works_by_agency_table_counts_each_status(app, client):
    store(app, "council", works=[work("a"), work("b"), work("c", "complete")])
    row = page(client, "/").select_one("#works tbody tr")
    assert "City Council" in text(row)
    assert [text(td) for td in row.find_all("td")] == ["2", "0", "1", "0"]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/?result=nope", 404),
        ("/?result=homes-repaired", 404),  # a measure, not a result
        ("/?dim.age=200", 400),
        ("/?status=done", 400),
    ],
)
def test_bad_filters_are_refused(client, url, status):
    assert client.get(url).status_code == status


def test_dimension_filter_shows_the_group_values(app, client):
    rows = [
        {
            "measure": "people-supported",
            "place": "opawa",
            "date": "2013-03-31",
            "value": 7,
            "dims": {"age": "65+"},
        },
        {
            "measure": "people-supported",
            "place": "opawa",
            "date": "2013-03-31",
            "value": 30,
            "dims": {"age": "15-64"},
        },
    ]
    store(app, "council", observations=rows)
    soup = page(client, "/?dim.age=65%2B")
    (row,) = [r for r in soup.select("#people tbody tr") if "People supported" in text(r)]
    assert "7 people" in text(row)


def test_the_map_geojson_is_compact(app, client):
    store(app, "council", works=[work("a")])
    (script,) = map_scripts(page(client, "/"))
    features = map_features(script)
    assert len(features) == 5  # four neighbourhoods and the work
    for feature in features:
        for number in re.findall(r"-?\d+\.\d+", json.dumps(feature["geometry"])):
            assert len(number.split(".")[1]) <= 5


def test_an_open_work_unchanged_for_eight_weeks_reads_status_unknown():
    from datetime import UTC, datetime, timedelta

    from tracker.models import Work
    from tracker.works import shown_status

    now = datetime(2026, 12, 1, tzinfo=UTC)
    fresh = Work(status="in_progress", updated_at=now - timedelta(weeks=8))
    old = Work(status="in_progress", updated_at=now - timedelta(weeks=8, seconds=1))
    done = Work(status="complete", updated_at=now - timedelta(weeks=80))
    assert shown_status(fresh, now) == "in_progress"
    assert shown_status(old, now) == "unknown"
    assert shown_status(done, now) == "complete"


def test_a_signed_in_page_is_never_served_to_anyone_else(app, client):
    from staff_helpers import add_user, sign_in

    anonymous = app.test_client()
    page(anonymous, "/")  # cached for anonymous visitors
    add_user(app, "staff@example.org")
    sign_in(client, "staff@example.org")
    assert "staff@example.org" in text(page(client, "/"))
    assert "staff@example.org" not in text(page(anonymous, "/"))
    assert "Sign in" in text(page(anonymous, "/"))


def map_address(client) -> str:
    soup = page(client, "/")
    (tag,) = [t for t in soup.find_all("script", src=True) if "map=" in t["src"]]
    return tag["src"]


def test_another_processs_write_reaches_the_pages_within_the_stamp_interval(
    app, client, monkeypatch
):
    from tracker.web import page_cache

    before = map_address(client)
    # A write this process did not make (another worker's): plain DB-API, no SQLAlchemy
    # commit event in this process.
    raw = app.extensions["engine"].raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(
            "INSERT INTO batch (agency_id, channel, received_at, accepted, revised, unchanged)"
            " VALUES ('eqc', 'api', '2026-01-01 00:00:00', 0, 0, 0)"
        )
        raw.commit()
    finally:
        raw.close()
    monkeypatch.setattr(page_cache, "STAMP_SECONDS", 600)
    assert map_address(client) == before  # the stamp was read less than its interval ago
    monkeypatch.setattr(page_cache, "STAMP_SECONDS", 0)
    assert map_address(client) != before  # its interval is over: read again


def test_the_status_filter_is_the_status_as_shown(app, client):
    from datetime import UTC, datetime, timedelta

    from sqlmodel import Session, select

    from tracker.models import Work

    store(app, "council", works=[work("fresh"), work("stale", lon=172.615)])
    with Session(app.extensions["engine"]) as session:
        row = session.scalar(select(Work).where(Work.ref == "stale"))
        row.updated_at = datetime.now(UTC) - timedelta(weeks=9)
        session.commit()
    forget_pages(app)
    planned = map_scripts(page(client, "/?status=planned"))[0]
    unknown = map_scripts(page(client, "/?status=unknown"))[0]
    assert "Work fresh" in planned and "Work stale" not in planned
    assert "Work stale" in unknown and "Work fresh" not in unknown


def test_the_same_query_in_another_order_is_the_same_cached_page(app, client):

    page(client, "/?status=planned&status=complete")
    cached = len(app.extensions["page_cache"]._entries)
    page(client, "/?status=complete&status=planned")
    assert len(app.extensions["page_cache"]._entries) == cached
