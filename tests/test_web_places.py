"""A place's page (`/places/ID`): its results tree equal to the API's, the city beside it,
its works in a table and on a map (paged, filtered by status, escaped), 404s and 400s."""

import itertools
import re
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from page_helpers import map_features, map_scripts, page, store, text
from sqlalchemy import update
from sqlmodel import Session

from tracker.models import Work
from tracker.web.pages import number, whole_percent

HOSTILE = "<img src=x onerror=alert(1)>`${alert(2)}`\\"
ON = "2015-01-01"


def work(ref, status="planned", lon=172.605, lat=-43.535, title=None):
    """A work in Ōpāwa (the south-west square of the tiny city) by default."""
    row = {
        "id": ref,
        "title": title or f"Work {ref}",
        "status": status,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "planned_start": "2013-02-01",
        "planned_end": "2013-06-30",
    }
    if status == "complete":
        row |= {"actual_start": "2014-01-01", "actual_end": "2014-02-01"}
    return row


def observation(measure, place, day, value, **extra):
    return {"measure": measure, "place": place, "date": day, "value": value, **extra}


def some_figures(app):
    store(
        app,
        "eqc",
        observations=[
            observation("homes-repaired", "opawa", "2014-06-30", 60),
            observation("homes-repaired", "st-albans", "2014-06-30", 150),
        ],
    )
    store(
        app,
        "council",
        observations=[
            observation("wellbeing-score", "opawa", "2014-12-31", 65),
            observation("people-supported", "opawa", "2014-03-31", 40, dims={"age": "65+"}),
        ],
    )


def api_nodes(client, place, day=None):
    """Every node of /api/v1/rollup for the place (and day), by id."""
    url = f"/api/v1/rollup?place={place}" + (f"&date={day}" if day else "")
    answer = client.get(url).get_json()
    nodes, stack = {}, list(answer["results"])
    while stack:
        node = stack.pop()
        nodes[node["id"]] = node
        stack.extend(node["children"])
    return answer, nodes


def shown_status(element) -> str:
    return element.select_one(".status")["class"][1].removeprefix("status-")


def place_map(client, soup) -> str:
    """The script of the page's one map (loaded from the page's own address)."""
    (script,) = map_scripts(soup)
    return script


# --- the results tree, equal to the API's -------------------------------------------------


@pytest.mark.parametrize("place", ["opawa", "heathcote"])
@pytest.mark.parametrize("day", [None, ON])
def test_every_figure_on_the_page_equals_the_api(app, client, place, day):
    some_figures(app)
    answer, nodes = api_nodes(client, place, day)
    soup = page(client, f"/places/{place}" + (f"?date={day}" if day else ""))
    assert nodes, "the tiny city measures something here"
    for node_id, node in nodes.items():
        (element,) = soup.select(f"#results [data-node='{node_id}']")
        assert shown_status(element) == node["status"], node_id
        bar = element.find(role="progressbar")
        if node["progress"] is None:
            assert bar is None or element.select_one(".no-data"), node_id
        else:
            assert bar["aria-valuenow"] == str(whole_percent(node["progress"])), node_id
            assert bar["aria-valuetext"].startswith(f"{whole_percent(node['progress'])}% done")
        if node["kind"] != "measure":
            continue
        assert text(element.select_one(".value")) == number(node["value"], node["unit"])
        target = text(element.select_one(".target"))
        if node["target"] is None:
            assert target == "No local target"
        else:
            assert target == number(node["target"], node["unit"])
        trail = element.select_one(".value a")["href"]
        assert trail == f"/api/v1/explain?node={node_id}&place={place}&date={answer['date']}"
        assert client.get(trail).status_code == 200
        measure_link = element.select_one(".measure-title a")["href"]
        assert measure_link == f"/measures/{node_id}?place={place}"
    # Nothing the API leaves out is shown.
    shown = {e["data-node"] for e in soup.select("#results [data-node]")}
    assert shown == set(nodes)


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (1, "schools", "1 school"),
        (2, "schools", "2 schools"),
        (1, "pump stations", "1 pump station"),
        (1, "properties", "1 property"),
        (1, "people", "1 person"),
        (1, "boxes", "1 box"),
        (1, "km", "1 km"),
        (1, "%", "1 %"),
        (1, "km of pipes", "1 km of pipes"),
        (1.5, "homes", "1.50 homes"),
        (0, "homes", "0 homes"),
        (1, None, "1"),
    ],
)
def test_a_value_of_one_takes_its_unit_in_the_singular(value, unit, shown):
    assert number(value, unit) == shown


@pytest.mark.parametrize(
    ("share", "shown"),
    [(0, 0), (0.004, 1), (0.015, 2), (0.5, 50), (0.994, 99), (0.998, 99), (1, 100), (1.2, 120)],
)
def test_a_share_short_of_the_whole_never_reads_100_percent(share, shown):
    assert whole_percent(share) == shown


def test_results_link_to_their_pages_and_trails(app, client):
    some_figures(app)
    soup = page(client, f"/places/opawa?date={ON}")
    housing = soup.select_one("#results article[data-node='housing']")
    assert housing.h3.a["href"] == "/results/housing"
    trail = housing.select_one("a.trail")["href"]
    assert trail == f"/api/v1/explain?node=housing&place=opawa&date={ON}"
    assert "based on 1 of 1 measures" in text(housing)
    assert client.get(trail).get_json()


def test_a_measure_with_no_data_reads_no_data_never_zero(client):
    soup = page(client, "/places/opawa")
    results = soup.select_one("#results")
    measure = results.select_one("[data-node='homes-repaired']")
    assert text(measure.select_one(".value")) == "no data"
    assert "no data" in text(measure.select_one(".as-of"))
    assert not re.search(r"\b0\s*%", text(results))
    assert not re.search(r"\b0\s*%", text(soup.select_one("#compare")))


def test_no_local_target_and_stale_are_said(app, client):
    some_figures(app)
    soup = page(client, "/places/opawa")  # today, long after these figures
    people = soup.select_one("#results [data-node='people-supported']")
    # A city-wide number on a sum measure: a neighbourhood has no target of its own.
    assert shown_status(people) == "no_target"
    assert "No local target" in text(people)
    assert text(people.select_one(".target")) == "No local target"
    # Its output says why that measure adds nothing to its progress.
    support = soup.select_one("#results [data-node='council-support']")
    assert re.search(r"based on \d of 2 measures; 1 with no local target", text(support))
    homes = soup.select_one("#results [data-node='homes-repaired']")
    assert "Stale" in text(homes) and "(stale)" in text(homes.select_one(".as-of"))
    fresh = page(client, "/places/opawa?date=2014-07-01").select_one(
        "#results [data-node='homes-repaired']"
    )
    assert "stale" not in text(fresh).lower()
    assert "30 Jun 2014" in text(fresh.select_one(".as-of"))


def test_a_forecast_is_shown_when_the_trend_reaches_the_target(app, client):
    rows = [
        observation("homes-repaired", "opawa", f"2013-{month:02d}-28", 10 * month)
        for month in (1, 2, 3, 4)
    ]
    store(app, "eqc", observations=rows)
    _, nodes = api_nodes(client, "opawa", "2013-05-01")
    forecast = datetime.fromisoformat(nodes["homes-repaired"]["forecast"]).date()
    soup = page(client, "/places/opawa?date=2013-05-01")
    shown = text(soup.select_one("#results [data-node='homes-repaired'] .forecast"))
    assert forecast.strftime("%-d %b %Y") in shown


# --- the page around the figures ----------------------------------------------------------


def test_breadcrumbs_and_what_kind_of_place(client):
    soup = page(client, "/places/opawa")
    crumbs = soup.select("nav.breadcrumbs li a")
    assert [text(a) for a in crumbs] == ["Tiny City / Ōtautahi Iti", "Heathcote", "Ōpāwa"]
    assert [a["href"] for a in crumbs] == ["/", "/places/heathcote", "/places/opawa"]
    assert crumbs[-1]["aria-current"] == "page"
    (h1,) = soup.find_all("h1")
    assert text(h1) == "Ōpāwa"
    assert "A neighbourhood in the Heathcote area" in text(soup.select_one(".lede"))

    area = page(client, "/places/heathcote")
    assert text(area.h1) == "Heathcote"
    assert "An area of Tiny City / Ōtautahi Iti, made up of 2 neighbourhoods" in text(
        area.select_one(".lede")
    )
    links = [(a["href"], text(a)) for a in area.select("ul.children a")]
    assert links == [("/places/opawa", "Ōpāwa"), ("/places/st-albans", "St Albans")]


def test_headings_are_in_order(app, client):
    some_figures(app)
    soup = page(client, "/places/heathcote")
    levels = [int(h.name[1]) for h in soup.find_all(re.compile(r"^h[1-6]$"))]
    assert levels[0] == 1
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, levels


def test_the_city_id_goes_to_the_city_page(client):
    response = client.get("/places/tiny")
    assert response.status_code in (301, 302, 303)
    assert response.headers["Location"].endswith("/")


def test_the_place_beside_the_city_equals_the_api(app, client):
    some_figures(app)
    _, here = api_nodes(client, "opawa", ON)
    _, city = api_nodes(client, "tiny", ON)
    soup = page(client, f"/places/opawa?date={ON}")
    rows = soup.select("#compare tbody tr")
    assert {r["data-node"] for r in rows} == {"housing", "wellbeing", "water"}
    for row in rows:
        node_id = row["data-node"]
        assert shown_status(row.select_one("td.here")) == here[node_id]["status"]
        assert shown_status(row.select_one("td.city")) == city[node_id]["status"]
        for cell, place in (("here", "opawa"), ("city", "tiny")):
            trail = row.select_one(f"td.{cell} a.trail")["href"]
            assert trail == f"/api/v1/explain?node={node_id}&place={place}&date={ON}"
        bar = row.select_one("td.city [role=progressbar]")
        if city[node_id]["progress"] is not None:
            assert bar["aria-valuenow"] == str(whole_percent(city[node_id]["progress"]))


@pytest.mark.parametrize(
    "url",
    ["/places/nowhere", "/places/opawa?result=nope", "/places/opawa?result=homes-repaired"],
)
def test_unknown_places_and_results_are_404(client, url):
    assert client.get(url).status_code == 404


@pytest.mark.parametrize(
    "date", ["2015-1-1", "2015-02-30", "1800-01-01", "2200-01-01", "yesterday", "2015-01-01T00:00"]
)
def test_a_bad_date_is_400_as_on_the_api(client, date):
    api = client.get(f"/api/v1/rollup?place=opawa&date={date}")
    assert api.status_code == 400
    response = client.get(f"/places/opawa?date={date}")
    assert response.status_code == 400
    assert "date" in response.get_data(as_text=True)


def test_a_bad_status_filter_is_400(client):
    assert client.get("/places/opawa?status=finished").status_code == 400


def test_a_retired_place_is_404(app, client, settings, tmp_path):
    import json

    from tracker.cli import initialise

    assert client.get("/places/red-zone-park").status_code == 200
    folder = tmp_path / "city"
    shutil.copytree(settings.tree.parent, folder)
    boundaries = json.loads((folder / "neighbourhoods.geojson").read_text())
    boundaries["features"] = [
        f for f in boundaries["features"] if f["properties"]["id"] != "red-zone-park"
    ]
    (folder / "neighbourhoods.geojson").write_text(json.dumps(boundaries))
    engine, _ = initialise(settings.model_copy(update={"tree": folder / "tree.yaml"}))
    engine.dispose()
    assert client.get("/places/red-zone-park").status_code == 404
    assert client.get("/places/riccarton").status_code == 200


# --- works: table, map, paging, status --------------------------------------------------------


def works_rows(soup):
    return soup.select("#works-table tbody tr")


def test_works_table_and_map_show_the_works_here(app, client):
    store(
        app,
        "council",
        works=[
            work("a"),
            work("b", "complete"),
            work("far", lon=172.615, lat=-43.525),  # in Red Zone Park
        ],
    )
    soup = page(client, "/places/opawa")
    rows = works_rows(soup)
    assert [text(r.th) for r in rows] == ["Work a", "Work b"]
    first = rows[0]
    assert first.th.a["href"] == "/works/council/a"
    cells = [text(td) for td in first.find_all("td")]
    assert cells[0] == "Planned" and cells[1] == "City Council"
    assert cells[2] == "1 Feb 2013 – 30 Jun 2013"
    assert first.find_all("td")[1].a["href"] == "/agencies/council"
    assert "1 Jan 2014 – 1 Feb 2014" in text(rows[1])
    assert text(rows[1].select_one("td.shown-status")) == "Done"
    script = place_map(client, soup)
    features = map_features(script)
    titles = {f["properties"].get("title") for f in features} - {None}
    assert titles == {"Work a", "Work b"}
    (area,) = [f for f in features if f["properties"].get("name")]
    assert area["properties"]["name"] == "Ōpāwa"
    assert soup.select_one("a.skip-map")["href"] == "#works-table"
    (data,) = [a for a in soup.select("#works a") if text(a) == "GeoJSON"]
    assert data["href"] == "/api/v1/works?place=opawa"
    listed = client.get(data["href"]).get_json()["features"]
    assert {f["properties"]["title"] for f in listed} == {"Work a", "Work b"}
    assert soup.find(id="works-table") is not None


def test_the_map_draws_works_whole_not_as_points(app, client):
    line = {
        "id": "pipe",
        "title": "Pipe",
        "status": "in_progress",
        "geometry": {"type": "LineString", "coordinates": [[172.601, -43.535], [172.609, -43.536]]},
    }
    store(app, "council", works=[line])
    features = map_features(place_map(client, page(client, "/places/opawa")))
    (pipe,) = [f for f in features if f["properties"].get("title") == "Pipe"]
    assert pipe["geometry"]["type"] == "LineString"


def test_work_titles_are_escaped_in_table_and_map(app, client):
    store(app, "council", works=[work("w1", title=HOSTILE)])
    response = client.get("/places/opawa")
    html = response.get_data(as_text=True)
    assert "<img src=x" not in html
    soup = page(client, "/places/opawa")
    (row,) = works_rows(soup)
    assert row.th.a.string == HOSTILE  # shown as text, exactly as sent
    script = place_map(client, soup)
    assert "<img src=x" not in script and "${alert(2)}" not in script
    (feature,) = [f for f in map_features(script) if "title" in f["properties"]]
    assert feature["properties"]["title"] == (
        "&lt;img src=x onerror=alert(1)&gt;&#96;&#36;{alert(2)}&#96;&#92;"
    )


def test_works_are_paged_with_a_next_page_link(app, client, monkeypatch):
    from tracker.web import places

    monkeypatch.setattr(places, "PAGE_SIZE", 2)
    store(app, "council", works=[work(ref) for ref in ("a", "b", "c")])
    store(app, "eqc", works=[work("d", "complete")])
    soup = page(client, "/places/opawa")
    assert [text(r.th) for r in works_rows(soup)] == ["Work a", "Work b"]
    assert "4 works; this page shows 2" in text(soup.select_one("#works-table"))
    next_link = soup.select_one("#works-table a[rel=next]")["href"]
    assert "after=council%2Fb" in next_link or "after=council/b" in next_link
    second = page(client, next_link.split("#")[0])
    assert [text(r.th) for r in works_rows(second)] == ["Work c", "Work d"]
    assert second.select_one("#works-table a[rel=next]") is None
    assert "First page" in text(second.select_one("#works-table"))
    titles = {f["properties"].get("title") for f in map_features(place_map(client, second))}
    assert titles - {None} == {"Work c", "Work d"}  # the map shows the page the table shows


def test_works_filter_by_status_as_shown(app, client):
    store(
        app,
        "council",
        works=[work("a", "planned"), work("b", "complete"), work("c", "in_progress")],
    )
    # Work c has not changed for nine weeks: it reads "status unknown".
    with Session(app.extensions["engine"]) as session:
        session.exec(
            update(Work)
            .where(Work.ref == "c")
            .values(updated_at=datetime.now(UTC) - timedelta(weeks=9))
        )
        session.commit()
    everything = page(client, "/places/opawa")
    assert [text(r.th) for r in works_rows(everything)] == ["Work a", "Work b", "Work c"]
    (c,) = [r for r in works_rows(everything) if text(r.th) == "Work c"]
    assert text(c.select_one("td.shown-status")) == "Status unknown"
    labels = {i["value"]: text(i.parent) for i in everything.select("#works input[name=status]")}
    assert labels["planned"] == "Planned (1)" and labels["unknown"] == "Status unknown (1)"
    assert labels["in_progress"] == "Under way (0)"

    planned = page(client, "/places/opawa?status=planned")
    assert [text(r.th) for r in works_rows(planned)] == ["Work a"]
    assert planned.select_one('input[type=checkbox][value="planned"]').has_attr("checked")
    titles = {f["properties"].get("title") for f in map_features(place_map(client, planned))}
    assert titles - {None} == {"Work a"}
    unknown = page(client, "/places/opawa?status=unknown&status=complete")
    assert [text(r.th) for r in works_rows(unknown)] == ["Work b", "Work c"]
    assert works_rows(page(client, "/places/opawa?status=in_progress")) == []


def test_an_area_lists_the_works_of_its_neighbourhoods(app, client):
    store(
        app,
        "council",
        works=[work("a"), work("b", lon=172.615), work("far", lon=172.615, lat=-43.525)],
    )
    soup = page(client, "/places/heathcote")
    assert [text(r.th) for r in works_rows(soup)] == ["Work a", "Work b"]


def test_the_map_colours_the_place_by_the_chosen_result(app, client):
    some_figures(app)
    _, nodes = api_nodes(client, "opawa")
    for result in ("housing", "wellbeing"):
        soup = page(client, f"/places/opawa?result={result}")
        (area,) = [f for f in map_features(place_map(client, soup)) if f["properties"].get("name")]
        label = soup.select_one("figure.map figcaption")
        assert (
            area["properties"]["status"]
            == {
                "at_risk": "At risk",
                "off_track": "Off track",
                "on_track": "On track",
                "complete": "Complete",
                "no_target": "No local target",
                "no_data": "No data",
            }[nodes[result]["status"]]
        )
        assert area["properties"]["status"] in text(label)


def test_a_measures_problem_is_shown(app, client, loaded):
    from test_hostile_input import store_legacy_rows  # values stored before the bounds rule

    store_legacy_rows(loaded[0])
    _, nodes = api_nodes(client, "heathcote", ON)
    problem = nodes["homes-repaired"]["problem"]
    assert problem.startswith("opawa: a stored value is outside")
    soup = page(client, f"/places/heathcote?date={ON}")
    shown = soup.select_one("#results [data-node='homes-repaired'] .problem")
    assert problem in text(shown)
    assert soup.select_one("#results [data-node='wellbeing-score'] .problem") is None


@pytest.mark.parametrize("after", ["zzz", "/w1", "council/", "a/" + "x" * 300])
def test_a_cursor_not_of_the_pages_own_links_is_refused(client, after):
    response = client.get(f"/places/opawa?after={after}")
    assert response.status_code == 400
    assert "AGENCY/REF" in response.get_data(as_text=True)
