"""A street's page (`/streets/ID`): its works near its line, newest first, with shown
status, dates, agency and last update; the map; the neighbourhoods it runs through."""

from datetime import UTC, datetime, timedelta

import pytest
from page_helpers import map_features, map_scripts, page, store, text
from pyproj import Transformer
from sqlalchemy import update
from sqlmodel import Session

import tracker.web.streets
from tracker.models import Work
from tracker.web.pages import whole_percent

HOSTILE = "<img src=x onerror=alert(1)>`${alert(2)}`\\"
_TO_NZTM = Transformer.from_crs("EPSG:4326", "EPSG:2193", always_xy=True)
_FROM_NZTM = Transformer.from_crs("EPSG:2193", "EPSG:4326", always_xy=True)


def north_of(lon: float, lat: float, metres: float) -> list[float]:
    """The point `metres` north of (lon, lat) on the NZTM grid; Ōpāwa Road runs along
    latitude -43.535 from 172.601 to 172.615."""
    x, y = _TO_NZTM.transform(lon, lat)
    return list(_FROM_NZTM.transform(x, y + metres))


def work(ref, metres=0.0, lon=172.605, status="planned", title=None, **dates):
    return {
        "id": ref,
        "title": title or f"Work {ref}",
        "status": status,
        "geometry": {"type": "Point", "coordinates": north_of(lon, -43.535, metres)},
        **dates,
    }


def set_updated(app, ref: str, moment: datetime) -> None:
    with Session(app.extensions["engine"]) as session:
        session.execute(update(Work).where(Work.ref == ref).values(updated_at=moment))
        session.commit()


def listed(soup) -> list[str]:
    """The AGENCY/REF of each work listed, in order."""
    return [a["href"].removeprefix("/works/") for a in soup.select("#works ol.works li.work h3 a")]


def test_a_work_20_m_away_is_listed_and_one_40_m_away_is_not(app, client):
    store(app, "council", works=[work("near", 20), work("far", 40, lon=172.607)])
    soup = page(client, "/streets/opawa-road")
    assert listed(soup) == ["council/near"]
    assert "within 25 m of its line" in text(soup.select_one(".lede"))
    (item,) = soup.select("li.work")
    assert "20 m from the street" in text(item)
    features = [f for f in map_features(map_scripts(soup)[0]) if "title" in f["properties"]]
    assert [f["id"] for f in features] == ["council/near"]


def line(ref, *points):
    return {"id": ref, "title": f"Work {ref}", "status": "planned",
            "geometry": {"type": "LineString", "coordinates": list(points)}}  # fmt: skip


def test_a_work_across_the_street_is_told_apart_from_one_along_it(app, client):
    store(
        app,
        "council",
        works=[
            line("along", north_of(172.603, -43.535, 0), north_of(172.609, -43.535, 0)),
            line("across", north_of(172.605, -43.535, -200), north_of(172.605, -43.535, 200)),
            line("side", north_of(172.611, -43.535, 0), north_of(172.611, -43.535, 300)),
            work("point"),
        ],
    )
    soup = page(client, "/streets/opawa-road")
    where = {}
    for item in soup.select("li.work"):
        ref = item.h3.a["href"].removeprefix("/works/council/")
        where[ref] = text(item.find("dt", string="Where").find_next("dd"))
    assert where == {
        "along": "on the street",
        "across": "crosses or meets the street",
        "side": "crosses or meets the street",
        "point": "on the street",
    }


def test_works_are_newest_first_by_last_update(app, client):
    store(app, "council", works=[work("a"), work("b", lon=172.606), work("c", lon=172.607)])
    now = datetime.now(UTC)
    set_updated(app, "a", now - timedelta(days=3))
    set_updated(app, "b", now - timedelta(days=1))
    set_updated(app, "c", now - timedelta(days=2))
    soup = page(client, "/streets/opawa-road")
    assert listed(soup) == ["council/b", "council/c", "council/a"]


def test_an_open_work_unchanged_8_weeks_reads_status_unknown(app, client):
    store(
        app,
        "council",
        works=[
            work("old", status="in_progress", actual_start="2014-01-01"),
            work(
                "done",
                lon=172.606,
                status="complete",
                actual_start="2014-01-01",
                actual_end="2014-02-01",
            ),
            work("fresh", lon=172.607),
        ],
    )
    long_ago = datetime.now(UTC) - timedelta(weeks=8, days=1)
    set_updated(app, "old", long_ago)
    set_updated(app, "done", long_ago)
    soup = page(client, "/streets/opawa-road")
    shown = {
        li.h3.a["href"].rsplit("/", 1)[1]: text(li.select_one(".work-status"))
        for li in soup.select("li.work")
    }
    assert shown["old"] == "Status unknown (last reported as under way)"
    assert shown["done"] == "Done"
    assert shown["fresh"] == "Planned"
    statuses = {
        f["id"]: f["properties"]["status"]
        for f in map_features(map_scripts(soup)[0])
        if "title" in f["properties"]
    }
    assert statuses == {
        "council/old": "Status unknown",
        "council/done": "Done",
        "council/fresh": "Planned",
    }


def test_each_work_shows_dates_agency_and_last_update_in_christchurch_time(app, client):
    store(
        app,
        "eqc",
        works=[
            work(
                "w1",
                planned_start="2014-03-02",
                planned_end="2014-12-20",
                actual_start="2014-04-01",
            )
        ],
    )
    set_updated(app, "w1", datetime(2026, 1, 31, 23, 30, tzinfo=UTC))  # 1 Feb, 12:30 PM NZDT
    soup = page(client, "/streets/opawa-road")
    (item,) = soup.select("li.work")
    words = text(item)
    assert "Planned 2 Mar 2014 – 20 Dec 2014" in words
    assert "Actual from 1 Apr 2014" in words
    assert "Last updated 1 Feb 2026, 12:30 PM" in words
    agency = item.select_one('a[href="/agencies/eqc"]')
    assert text(agency) == "Earthquake Commission"
    assert item.h3.a["href"] == "/works/eqc/w1"


def test_a_hostile_title_is_escaped_in_the_list_and_the_map(app, client):
    store(app, "council", works=[work("w1", title=HOSTILE)])
    response = client.get("/streets/opawa-road")
    body = response.get_data(as_text=True)
    assert "<img src=x" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    soup = page(client, "/streets/opawa-road")
    assert soup.select_one("li.work h3 a").get_text() == HOSTILE
    (script,) = map_scripts(soup)
    assert "<img src=x" not in script and "${alert(2)}" not in script
    (feature,) = [f for f in map_features(script) if "title" in f["properties"]]
    assert feature["properties"]["title"] == (
        "&lt;img src=x onerror=alert(1)&gt;&#96;&#36;{alert(2)}&#96;&#92;"
    )


def test_the_street_is_on_the_map_with_its_works_and_the_list_is_paired(app, client):
    store(app, "council", works=[work("w1")])
    soup = page(client, "/streets/opawa-road")
    (script,) = map_scripts(soup)
    names = [f["properties"].get("name") for f in map_features(script)]
    assert "Ōpāwa Road" in names
    assert soup.select_one("a.skip-map")["href"] == "#works"
    assert soup.select_one("#works ol.works") is not None


def test_paging_follows_the_older_link_through_every_work_once(app, client, monkeypatch):
    monkeypatch.setattr(tracker.web.streets, "STREET_WORKS_PAGE", 2)
    store(app, "council", works=[work(f"w{i}", lon=172.602 + i * 0.001) for i in range(5)])
    now = datetime.now(UTC)
    for i in range(5):
        set_updated(app, f"w{i}", now - timedelta(hours=i))
    url, seen = "/streets/opawa-road", []
    while url:
        soup = page(client, url)
        assert "of 5 works" in text(soup.select_one("#works"))
        seen += listed(soup)
        older = soup.select_one('nav.pager a[rel="next"]')
        url = older["href"] if older else None
    assert seen == [f"council/w{i}" for i in range(5)]


@pytest.mark.parametrize("after", ["council/nope", "no-slash", "x/" + "y" * 300])
def test_a_bad_cursor_is_refused(app, client, after):
    store(app, "council", works=[work("w1")])
    assert client.get("/streets/opawa-road", query_string={"after": after}).status_code == 400


def test_an_unknown_street_is_404(client):
    response = client.get("/streets/no-such-road")
    assert response.status_code == 404


def test_heading_and_breadcrumbs_name_the_suburb(client):
    soup = page(client, "/streets/opawa-road")
    assert text(soup.h1) == "Ōpāwa Road , Ōpāwa"
    crumbs = [(a["href"], text(a)) for a in soup.select("nav.breadcrumbs a")]
    assert crumbs[0][0] == "/" and crumbs[-1] == ("/streets/opawa-road", "Ōpāwa Road")
    assert ("/places/opawa", "Ōpāwa") in crumbs
    assert soup.select("nav.breadcrumbs a")[-1]["aria-current"] == "page"
    assert "No works have been reported" in text(soup.select_one(".lede"))


def rollup_node(client, place, node_id):
    answer = client.get(f"/api/v1/rollup?place={place}").get_json()
    stack = list(answer["results"])
    while stack:
        node = stack.pop()
        if node["id"] == node_id:
            return node
        stack.extend(node["children"])
    return None


def test_the_neighbourhoods_it_runs_through_show_the_apis_results(app, client):
    store(
        app,
        "eqc",
        observations=[
            {"measure": "homes-repaired", "place": "opawa", "date": "2014-01-31", "value": 60}
        ],
    )
    soup = page(client, "/streets/opawa-road")
    section = soup.select_one("#places")
    headings = [(h.a["href"], text(h)) for h in section.find_all("h3")]
    assert headings == [("/places/opawa", "Ōpāwa"), ("/places/st-albans", "St Albans")]
    for table, (href, _) in zip(section.find_all("table"), headings, strict=True):
        place = href.rsplit("/", 1)[1]
        for row in table.tbody.find_all("tr"):
            node_id = row.th.a["href"].rsplit("/", 1)[1]
            expected = rollup_node(client, place, node_id)
            shown = row.select_one(".status")["class"][1].removeprefix("status-")
            assert shown == expected["status"], (place, node_id)
            if expected["progress"] is None:
                assert "no data" in text(row) and "0%" not in text(row)
            else:
                bar = row.select_one('[role="progressbar"]')
                assert bar["aria-valuenow"] == str(whole_percent(expected["progress"]))
