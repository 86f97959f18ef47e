"""The maps as a visitor's browser draws them: the city's choropleth says what the API says
for every neighbourhood, a street's works are on its map and in its list, and the city
page's filters change both the map and the address."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from browser_helpers import (
    all_works,
    api,
    fit_all,
    map_features,
    street_id,
    wait_for_maps,
    watch_maps,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tracker.maps import STATUS_STYLES, WORK_STYLES

UNKNOWN_AFTER = timedelta(weeks=8)  # tracker.works.STATUS_UNKNOWN_AFTER, as a resident reads it


@pytest.fixture(scope="module")
def rollups(live_server) -> dict[str, dict[str, str]]:
    """{neighbourhood id: {result id: status}} from /api/v1/rollup, for every neighbourhood
    (a result that takes no part in a place is left out of the API's answer)."""
    places = api(live_server, "/api/v1/places")["features"]
    statuses = {}
    for place in places:
        if place["properties"]["level"] != "neighbourhood":
            continue
        answer = api(live_server, f"/api/v1/rollup?place={place['properties']['id']}")
        statuses[place["properties"]["id"]] = {r["id"]: r["status"] for r in answer["results"]}
    return statuses


def _city_results(live_server) -> list[str]:
    return [r["id"] for r in api(live_server, "/api/v1/rollup?place=christchurch")["results"]]


@pytest.mark.parametrize("which", ["default", "last"])
def test_the_city_map_draws_every_neighbourhood_in_its_rollup_class(
    page, live_server, rollups, which
):
    results = _city_results(live_server)
    chosen = results[0] if which == "default" else results[-1]
    watch_maps(page)
    page.goto("/" if which == "default" else f"/?result={chosen}")
    wait_for_maps(page)
    [features] = map_features(page)
    areas = {f["id"]: f for f in features if f["kind"] == "area"}
    assert set(areas) == set(rollups), "the map's neighbourhoods are not the API's"
    # Every neighbourhood is an interactive SVG path of the map, drawn in its class's fill.
    paths = page.locator("figure.map path.leaflet-interactive").count()
    assert paths == len(features), (paths, len(features))
    wrong = {}
    for place_id, feature in areas.items():
        status = rollups[place_id].get(chosen, "no_data")
        expected = (STATUS_STYLES[status].fill, STATUS_STYLES[status].label)
        drawn = (feature["fill"], feature["props"]["status"])
        assert feature["inDom"] and feature["interactive"], place_id
        if drawn != expected:
            wrong[place_id] = (drawn, expected, status)
    assert not wrong, f"{len(wrong)} neighbourhoods drawn unlike /api/v1/rollup: {wrong}"
    # The classes are not all one: the test can tell a wrong colour from a right one.
    assert len({f["fill"] for f in areas.values()}) > 1
    # Zoomed out to the whole layer, every neighbourhood has a shape on screen.
    fit_all(page)
    [features] = map_features(page)
    empty = [f["id"] for f in features if f["kind"] == "area" and f["d"] in (None, "", "M0 0")]
    assert not empty, f"not drawn: {empty}"


# The neighbourhoods' centres that no work covers, in page coordinates, right now.
AREA_POINTS_JS = """
() => {
    const map = window.__maps[0];
    const box = map.getContainer().getBoundingClientRect();
    const found = [];
    map.eachLayer((group) => {
        if (!(group instanceof L.GeoJSON)) return;
        group.eachLayer((layer) => {
            const props = layer.feature.properties;
            if (!("summary" in props) || !layer._path) return;
            const at = map.latLngToContainerPoint(layer.getCenter());
            const x = box.left + at.x, y = box.top + at.y;
            if (x < box.left + 60 || x > box.right - 60) return;
            if (y < box.top + 90 || y > box.bottom - 40) return;
            if (document.elementFromPoint(x, y) === layer._path) {
                found.push({x, y, name: props.name, status: props.status});
            }
        });
    });
    return found;
}
"""


def _hover_areas(page, wanted: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Hover the real mouse over `wanted` neighbourhoods (a point inside each that no work
    covers); (name, status label, tooltip text) for each, and those that showed none."""
    seen, missed = [], []
    for index in range(wanted * 3):
        points = page.evaluate(AREA_POINTS_JS)
        if index >= len(points) or len(seen) == wanted:
            break
        point = points[index]
        page.mouse.move(point["x"], point["y"])
        tip = page.locator(".leaflet-tooltip", has_text=point["name"])
        try:
            tip.wait_for(state="visible", timeout=3000)
        except PlaywrightTimeout:
            missed.append(point["name"])
        else:
            seen.append((point["name"], point["status"], tip.inner_text()))
        page.mouse.move(2, 2)
    return seen, missed


def test_hovering_a_neighbourhood_names_it_and_its_status_in_words(page):
    watch_maps(page)
    page.goto("/")
    wait_for_maps(page)
    page.locator("figure.map").scroll_into_view_if_needed()
    seen, missed = _hover_areas(page, 4)
    assert len(seen) == 4 and len(missed) <= 1, f"hovered {seen}; no tooltip over {missed}"
    words = {style.label for style in STATUS_STYLES.values()}
    for name, status, tip in seen:
        lines = [line.strip() for line in tip.splitlines() if line.strip()]
        assert lines[0] == name, (name, tip)
        assert status in words and status in lines, (status, tip)


def test_a_street_search_opens_the_street_with_its_works_on_the_map_and_in_the_list(
    page, live_server
):
    watch_maps(page)
    page.goto("/")
    page.get_by_label("Street or neighbourhood").fill("Riccarton Road")
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(f"**/streets/{street_id(live_server, 'Riccarton Road')}")
    assert page.locator("h1").inner_text().startswith("Riccarton Road")
    wait_for_maps(page)
    listed = page.locator("ol.works li.work h3 a").evaluate_all(
        "links => links.map((a) => [a.getAttribute('href'), a.textContent.trim()])"
    )
    assert listed, "Riccarton Road has works in the demo city"
    [features] = map_features(page)
    works = [f for f in features if f["kind"] == "work"]
    assert len(works) == len(listed)
    assert {f"/works/{f['id']}" for f in works} == {href for href, _ in listed}
    titles = {f"/works/{f['id']}": f["props"]["title"] for f in works}
    assert titles == dict(listed)
    # Each work is an SVG shape on screen once the map shows them all, and the street too.
    assert page.locator("figure.map path.leaflet-interactive").count() == len(features)
    assert sum(f["kind"] == "line" for f in features) == 1
    fit_all(page)
    [features] = map_features(page)
    assert all(f["d"] not in (None, "", "M0 0") for f in features)
    # The page's works are those the API places on or near the street, newest first.
    shown = page.locator("ol.works li.work").count()
    total = int(re.search(r"(\d+) works? on or near", page.locator(".lede").inner_text())[1])
    assert shown == min(total, 25)
    on_street = api(live_server, "/api/v1/works?street=riccarton-road&limit=500")["total"]
    assert total >= on_street


def _expected_labels(live_server, status: str) -> dict[str, str]:
    """{work id: the label the map shows} for the stored works of `status`."""
    now = datetime.now(UTC)
    labels = {}
    for work in all_works(live_server):
        if work["status"] != status:
            continue
        updated = datetime.fromisoformat(work["updated_at"].replace("Z", "+00:00"))
        stale = status in ("planned", "in_progress") and now - updated > UNKNOWN_AFTER
        labels[work["id"]] = WORK_STYLES["unknown" if stale else status].label
    return labels


def test_filters_change_the_map_and_the_address(page, live_server):
    watch_maps(page)
    page.goto("/")
    wait_for_maps(page)
    [before] = map_features(page)
    results = _city_results(live_server)
    page.get_by_label("Planned").check()
    page.locator("select[name=result]").select_option(results[-1])
    page.locator("form.filters").first.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"status=planned"))
    assert f"result={results[-1]}" in page.url
    assert page.get_by_label("Planned").is_checked()
    wait_for_maps(page)
    [after] = map_features(page)
    expected = _expected_labels(live_server, "planned")
    assert expected, "the demo city has planned works"
    drawn = {f["id"]: f["props"]["status"] for f in after if f["kind"] == "work"}
    assert drawn == expected
    assert len(drawn) < sum(f["kind"] == "work" for f in before)
    note = page.locator("#map-section p.muted.small").inner_text()
    assert f"all {len(expected)} works that are planned" in note
    # The neighbourhoods are redrawn for the chosen result.
    assert sum(f["kind"] == "area" for f in after) == sum(f["kind"] == "area" for f in before)
    heading = page.locator("#map-heading").inner_text()
    assert heading == f"{page.locator('select[name=result] option:checked').inner_text()}" + (
        ", by neighbourhood"
    )
