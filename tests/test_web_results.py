"""A result's page (`/results/ID`) and a measure's (`/measures/ID`): figures equal the API's,
no data is never zero nor ranked, sorting, the equity view, the SVG chart, escaping, errors."""

import re
import xml.etree.ElementTree as ET
from datetime import date
from fractions import Fraction

import pytest
from page_helpers import map_features, map_scripts, page, store, text

from tracker.charts import Milestone, SeriesPoint, progress_chart
from tracker.maps import STATUS_STYLES
from tracker.web.pages import number, percent, whole_percent
from tracker.web.results import equity, sort_rows

HOSTILE = "<img src=x onerror=alert(1)>`${alert(2)}`\\"
SVG = "{http://www.w3.org/2000/svg}"


def obs(measure, place, day, value, **dims):
    row = {"measure": measure, "place": place, "date": day, "value": value}
    return row | ({"dims": dims} if dims else {})


def api_node(client, place, node_id, query=""):
    """The node as /api/v1/rollup shows it at `place`, or None when it takes no part there."""
    answer = client.get(f"/api/v1/rollup?place={place}{query}").get_json()
    stack = list(answer["results"])
    while stack:
        node = stack.pop()
        if node["id"] == node_id:
            return node
        stack.extend(node["children"])
    return None


def homes(app):
    """Ōpāwa 60 of 100 homes, St Albans 5 of 200, Riccarton complete, Red Zone Park none."""
    store(
        app,
        "eqc",
        observations=[
            obs("homes-repaired", "opawa", "2013-01-31", 30),
            obs("homes-repaired", "opawa", "2014-01-31", 60),
            obs("homes-repaired", "st-albans", "2014-01-31", 5),
            obs("homes-repaired", "riccarton", "2015-06-30", 300),
        ],
    )


def rows_of(soup):
    return soup.select("#neighbourhoods tbody tr")


def place_of(row):
    return row.th.a["href"].rsplit("/", 1)[1]


# /results/ID


def test_every_neighbourhood_row_equals_the_api(app, client):
    homes(app)
    soup = page(client, "/results/housing")
    rows = rows_of(soup)
    assert len(rows) == 4  # every neighbourhood of the tiny city
    for row in rows:
        node = api_node(client, place_of(row), "housing")
        shown = row.select_one(".status")["class"][1].removeprefix("status-")
        assert shown == (node["status"] if node else "no_data")
        progress = text(row.select_one("td.progress"))
        expected = text(row.select_one("td.expected"))
        if node is None or node["progress"] is None:
            assert progress == "no data"
            assert expected == "–"
        else:
            assert progress == percent(node["progress"])
            assert expected == percent(node["expected"])


@pytest.mark.parametrize("day", ["2013-06-30", "2014-06-30"])
def test_figures_on_a_past_day_equal_the_api_on_that_day(app, client, day):
    homes(app)
    soup = page(client, f"/results/housing?date={day}&sort=progress")
    shown = date.fromisoformat(day).strftime("%-d %b %Y")
    assert f"Showing figures for {shown}" in text(soup)
    assert "by today" not in text(soup) and f"expected to be by {shown}" in text(soup)
    for row in rows_of(soup):
        node = api_node(client, place_of(row), "housing", f"&date={day}")
        shown = row.select_one(".status")["class"][1].removeprefix("status-")
        assert shown == (node["status"] if node else "no_data")
    city = api_node(client, "tiny", "housing", f"&date={day}")
    bar = soup.select_one("#city-figures .headline [role=progressbar]")
    assert int(bar["aria-valuenow"]) == whole_percent(city["progress"])
    # Sorting keeps the day, and the trail link explains the figure on that day.
    assert all(f"date={day}" in a["href"] for a in soup.select("a[data-sort]"))
    assert soup.find("a", string="How this figure is made")["href"].endswith(f"date={day}")


def test_city_figures_equal_the_api(app, client):
    homes(app)
    soup = page(client, "/results/housing")
    city = api_node(client, "tiny", "housing")
    bar = soup.select_one("#city-figures .headline [role=progressbar]")
    assert int(bar["aria-valuenow"]) == whole_percent(city["progress"])
    assert "based on 1 of 1 measures" in text(soup.select_one("#city-figures .headline"))
    (child,) = soup.select("#city-figures tbody tr")
    assert child.th.a["href"] == "/results/eqc-repairs"
    output = api_node(client, "tiny", "eqc-repairs")
    assert child.select_one(".status")["class"][1] == f"status-{output['status']}"


def test_no_data_reads_no_data_and_is_never_ranked(app, client):
    store(app, "eqc", observations=[obs("homes-repaired", "opawa", "2014-01-31", 60)])
    soup = page(client, "/results/housing")
    table = text(soup.select_one("#neighbourhoods"))
    assert "no data" in table and not re.search(r"\b0%", table)
    equity_text = text(soup.select_one("#equity"))
    behind = [a["href"] for a in soup.select("#equity ol.behind a")]
    assert behind == ["/places/opawa"]
    no_data = [a["href"].rsplit("/", 1)[1] for a in soup.select("#equity ul.places a")]
    assert "st-albans" in no_data and "riccarton" in no_data and "opawa" not in no_data
    assert "Only Ōpāwa has figures so far (60%)" in equity_text
    # Sorted by progress, the rows without figures come last in both orders.
    for order in ("asc", "desc"):
        ids = [
            place_of(r)
            for r in rows_of(page(client, f"/results/housing?sort=progress&order={order}"))
        ]
        assert ids[0] == "opawa"


def test_nothing_reported_compares_nothing(client):
    soup = page(client, "/results/housing")
    assert "No neighbourhood has figures" in text(soup.select_one("#equity"))
    assert "0%" not in text(soup.select_one("main"))


def test_sorting_by_progress_orders_the_rows(app, client):
    homes(app)
    ascending = page(client, "/results/housing?sort=progress&order=asc")
    ids = [place_of(r) for r in rows_of(ascending)]
    assert ids[:3] == ["st-albans", "opawa", "riccarton"]
    header = ascending.select_one("#neighbourhoods th[aria-sort]")
    assert header["aria-sort"] == "ascending" and "Progress" in text(header)
    # The sorted column's link turns the order round; the others start ascending.
    assert header.a["href"].startswith("/results/housing?sort=progress&order=desc")
    descending = page(client, "/results/housing?sort=progress&order=desc")
    ids = [place_of(r) for r in rows_of(descending)]
    assert ids[:3] == ["riccarton", "opawa", "st-albans"]
    assert descending.select_one("#neighbourhoods th[aria-sort]")["aria-sort"] == "descending"
    by_name = [text(r.th) for r in rows_of(page(client, "/results/housing?sort=name&order=desc"))]
    assert by_name == sorted(by_name, key=str.casefold, reverse=True)


def test_the_furthest_behind_are_listed_largest_gap_first(app, client):
    homes(app)
    soup = page(client, "/results/housing")
    items = soup.select("#equity ol.behind li")
    assert [li.a["href"] for li in items] == ["/places/st-albans", "/places/opawa"]
    for li in items:
        node = api_node(client, li.a["href"].rsplit("/", 1)[1], "housing")
        gap = round((node["expected"] - node["progress"]) * 100)
        assert f"{gap} points behind" in text(li)
    spread = text(soup.select_one("#equity dl.spread"))
    assert "Riccarton : 100%" in spread and "St Albans : 2%" in spread  # 5 of 200 homes


def test_equity_on_a_constructed_case():
    def row(name, progress, expected, measured=True):
        p = None if progress is None else Fraction(progress)
        e = None if expected is None else Fraction(expected)
        return {
            "id": name,
            "name": name,
            "measured": measured,
            "progress": p,
            "expected": e,
            "gap": e - p if p is not None else None,
            "coverage": Fraction(1) if p is not None else None,
        }

    rows = [
        row("a", "0.9", "0.5"),  # ahead
        row("b", "0.5", "0.9"),  # 0.4 behind
        row("c", "0.2", "0.3"),  # worst progress, only 0.1 behind
        row("d", "0.6", "0.8"),  # 0.2 behind
        row("e", None, None),  # no data: not ranked
        row("f", None, None, measured=False),  # not measured here
    ]
    answer = equity(rows)
    assert [r["id"] for r in answer["behind"]] == ["b", "d", "c"]
    assert answer["best"]["id"] == "a" and answer["worst"]["id"] == "c"
    assert answer["ranked"] == 4 and answer["quarter"] == 1
    assert answer["spread"] == Fraction("0.7")
    assert [r["id"] for r in answer["no_data"]] == ["e"] and answer["not_measured"] == 1
    assert [r["id"] for r in sort_rows(rows, "gap", "desc")] == ["b", "d", "c", "a", "e", "f"]
    assert [r["id"] for r in sort_rows(rows, "progress", "asc")][-2:] == ["e", "f"]


def test_the_map_draws_each_neighbourhood_in_its_status(app, client):
    homes(app)
    soup = page(client, "/results/housing")
    (script,) = map_scripts(soup)
    features = {f["id"]: f["properties"] for f in map_features(script)}
    assert set(features) == {"opawa", "st-albans", "riccarton", "red-zone-park"}
    for place, props in features.items():
        node = api_node(client, place, "housing")
        assert props["status"] == STATUS_STYLES[node["status"] if node else "no_data"].label
    assert "60% done" in features["opawa"]["summary"]
    assert soup.select_one("a.skip-map")["href"] == "#neighbourhoods"


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/results/nope", 404),
        ("/results/housing?sort=value", 400),
        ("/results/housing?order=up", 400),
        ("/results/housing?date=junk", 400),
        ("/results/housing?date=2200-01-01", 400),
        ("/measures/nope", 404),
        ("/measures/homes-repaired?place=nowhere", 404),
    ],
)
def test_bad_addresses_are_refused(client, url, status):
    assert client.get(url).status_code == status


def test_a_measure_id_goes_to_the_measure_page_and_back(client):
    response = client.get("/results/homes-repaired")
    assert response.status_code == 302 and response.location.endswith("/measures/homes-repaired")
    response = client.get("/measures/housing")
    assert response.status_code == 302 and response.location.endswith("/results/housing")


# /measures/ID


@pytest.mark.parametrize("place", ["tiny", "opawa"])
def test_the_series_table_equals_the_api(app, client, place):
    homes(app)
    soup = page(client, f"/measures/homes-repaired?place={place}")
    series = client.get(f"/api/v1/measures/homes-repaired/series?place={place}").get_json()
    rows = soup.select("#series tbody tr")
    assert len(rows) == len(series) > 0
    for row, point in zip(rows, series, strict=True):
        assert row.time["datetime"] == point["date"]
        assert text(row.select_one(".value")) == number(point["value"], "homes")
        shown = text(row.select_one(".expected"))
        assert shown == (
            "no target" if point["expected"] is None else number(point["expected"], "homes")
        )


def test_the_chart_is_svg_with_one_point_per_series_point(app, client):
    homes(app)
    soup = page(client, "/measures/homes-repaired")
    svg = soup.select_one("#over-time svg")
    root = ET.fromstring(str(svg))
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby").split()
    assert root.find(f"{SVG}title").get("id") == title_id
    assert root.find(f"{SVG}desc").get("id") == desc_id
    series = client.get("/api/v1/measures/homes-repaired/series").get_json()
    circles = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "actual"]
    assert len(circles) == len(series)
    assert root.find(f".//{SVG}polyline[@class='expected']") is not None
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Date" in texts and "homes" in texts


def test_the_figures_now_and_per_place_equal_the_api(app, client):
    homes(app)
    soup = page(client, "/measures/homes-repaired")
    city = api_node(client, "tiny", "homes-repaired")
    now = text(soup.select_one("#now"))
    assert f"Value {number(city['value'], 'homes')}" in now
    assert f"Target {number(city['target'], 'homes')}" in now
    rows = soup.select("#places tbody tr")
    assert {r["data-place"] for r in rows} == {"opawa", "st-albans", "riccarton"}
    for row in rows:
        node = api_node(client, row["data-place"], "homes-repaired")
        assert text(row.select_one(".value")) == number(node["value"], "homes")
        assert text(row.select_one(".target")) == number(node["target"], "homes")
        assert row.select_one(".status")["class"][1] == f"status-{node['status']}"
    links = {a["href"] for a in soup.select("main a")}
    assert "/agencies/eqc" in links
    assert "/api/v1/explain?node=homes-repaired&place=tiny" in links


def test_no_data_reads_no_data_on_a_measure(client):
    soup = page(client, "/measures/wellbeing-score")
    assert soup.select_one("#over-time svg") is None
    main = text(soup.select_one("main"))
    assert "no data" in main and not re.search(r"\b0%", main)


def test_dimension_breakdown_equals_the_filtered_rollup(app, client):
    store(
        app,
        "council",
        observations=[
            obs("people-supported", "opawa", "2013-03-31", 7, age="65+"),
            obs("people-supported", "opawa", "2013-03-31", 30, age="15-64"),
            obs("people-supported", "riccarton", "2013-06-30", 4, age="65+"),
        ],
    )
    soup = page(client, "/measures/people-supported")
    rows = {text(r.th): text(r.select_one(".value")) for r in soup.select("#by-age tbody tr")}
    assert set(rows) == {"0-14", "15-64", "65+"}
    for value, shown in rows.items():
        node = api_node(client, "tiny", "people-supported", f"&dim.age={value.replace('+', '%2B')}")
        assert shown == number(node["value"], "people")
    assert rows["65+"] == "11 people"


def test_hostile_text_is_escaped_in_the_chart():
    svg = progress_chart(
        chart_id=HOSTILE,
        title=HOSTILE,
        description=HOSTILE,
        points=[SeriesPoint(date(2014, 1, 1), 1.0, 2.0), SeriesPoint(date(2015, 1, 1), 3.0, 4.0)],
        milestones=[Milestone(date(2014, 6, 1), 2.5, HOSTILE)],
        forecast=date(2016, 1, 1),
        target=10.0,
        value_label=HOSTILE,
        fmt=lambda v: f"{v} {HOSTILE}",
    )
    assert "<img" not in svg
    root = ET.fromstring(svg)  # still well-formed XML
    assert root.find(f"{SVG}title").text == HOSTILE
    assert root.find(f"{SVG}desc").text == HOSTILE
    assert root.find(f".//{SVG}path[@class='milestone']/{SVG}title").text == HOSTILE
    assert len([c for c in root.iter(f"{SVG}circle") if c.get("class") == "actual"]) == 2


def test_a_chart_without_points_is_empty():
    assert progress_chart(chart_id="c", title="t", description="d", points=[]) == ""


@pytest.mark.parametrize("url", ["/results/housing", "/measures/homes-repaired"])
def test_no_inline_script_and_nothing_from_outside(client, url):
    soup = page(client, url)
    assert soup.find_all("script", src=False) == []
    for tag in soup.find_all(["script", "link", "img"]):
        address = tag.get("src") or tag.get("href") or ""
        assert not address.startswith(("http:", "https:", "//")), address
    if url.startswith("/results"):
        (sortable,) = [t for t in soup.find_all("script") if "sortable.js" in t["src"]]
        assert sortable.has_attr("defer")


def test_the_place_asked_for_is_the_one_chosen(client):
    soup = page(client, "/measures/homes-repaired?place=red-zone-park")
    assert soup.select_one("select[name=place] option[selected]")["value"] == "red-zone-park"
    assert soup.h1.get_text(" ", strip=True).endswith("in Red Zone Park")
