"""The site by keyboard alone: no clicks, only Tab, Shift+Tab, typing and Enter; wherever
the focus is, a sighted user can see it."""

import pytest
from browser_helpers import focused, street_id, tab_to

STREET = "Riccarton Road"
MAP_PAGES = ["home", "street", "neighbourhood", "result", "work"]


def test_skip_to_content_is_the_first_tab_stop_and_jumps_past_the_header(page):
    page.goto("/")
    page.keyboard.press("Tab")
    first = focused(page)
    assert first["text"] == "Skip to content" and first["href"] == "#content", first
    assert first["visible"], "the skip link shows no focus"
    shown = page.locator("a.skip").bounding_box()
    assert shown and shown["width"] > 20 and shown["height"] > 10, "focused, it is on screen"
    page.keyboard.press("Enter")
    page.wait_for_url("**/#content")
    page.keyboard.press("Tab")
    after = focused(page)
    assert page.evaluate("() => document.querySelector('main').contains(document.activeElement)")
    assert after["id"] == "q", f"the first stop in the content is the search field: {after}"
    page.keyboard.press("Shift+Tab")
    assert not page.evaluate(
        "() => document.querySelector('main').contains(document.activeElement)"
    ), "Shift+Tab leaves the content backwards"


def test_by_keyboard_alone_a_resident_finds_their_street_and_reaches_its_works(page, live_server):
    page.goto("/")
    seen: list[dict] = []
    tab_to(page, "input#q", seen=seen)
    assert seen[0]["text"] == "Skip to content"
    page.keyboard.type(STREET)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/streets/{street_id(live_server, STREET)}")
    assert page.locator("h1").inner_text().startswith(STREET)
    first_work = page.locator("ol.works li.work h3 a").first
    href = first_work.get_attribute("href")
    # Through the page, past the map by its skip link, to the first work.
    tab_to(page, "a.skip-map", seen=seen)
    page.keyboard.press("Enter")
    reached = tab_to(page, "ol.works li.work h3 a", seen=seen, limit=3)
    assert reached["href"] == href, "the first work after the map is the list's first"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{href}")
    assert page.locator("h1").count() == 1


def test_tabbing_through_a_map_keeps_the_focus_visible(page, demo_paths):
    page.goto(demo_paths["street"])
    page.wait_for_selector("figure.map .leaflet-interactive", state="attached")
    seen: list[dict] = []
    # The long way, through the map's own controls: each shows its focus (tab_to checks).
    tab_to(page, "ol.works li.work h3 a", seen=seen, limit=80)
    in_map = page.evaluate(
        "(ids) => ids.filter((id) => id && document.getElementById(id)?.closest('figure.map'))",
        [s["id"] for s in seen],
    )
    assert in_map or any(s["text"] in ("+", "−", "Zoom in", "Zoom out") for s in seen), seen


@pytest.mark.parametrize("name", MAP_PAGES)
def test_each_maps_skip_link_jumps_past_the_map(page, demo_paths, name):
    page.goto(demo_paths[name])
    skips = page.locator("a.skip-map")
    assert skips.count() >= 1, "every map has a skip link"
    for index in range(skips.count()):
        target = skips.nth(index).get_attribute("href")
        assert target and target.startswith("#")
        assert page.locator(target).count() == 1, f"the skip link's target {target} exists"
        # Reach this skip link by Tab alone (each stop on the way shows its focus).
        for _ in range(80):
            if skips.nth(index).evaluate("a => a === document.activeElement"):
                break
            tab_to(page, "a.skip-map", limit=80)
        else:
            pytest.fail(f"Tab never reached skip link {index} on {name}")
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        where = skips.nth(index).evaluate(
            """(skip, target) => {
                const active = document.activeElement;
                const map = skip.nextElementSibling;
                const goal = document.querySelector(target);
                const after = (a, b) => !!(a.compareDocumentPosition(b)
                    & Node.DOCUMENT_POSITION_FOLLOWING);
                return {
                    isMap: map.matches("figure.map"),
                    pastMap: !map.contains(active) && after(map, active),
                    atTarget: goal.contains(active) || after(goal, active),
                    body: active === document.body,
                };
            }""",
            target,
        )
        assert where["isMap"], "the skip link comes just before its map"
        assert not where["body"] and where["pastMap"], (name, target, where)
        assert where["atTarget"], f"on {name}, the skip link's next stop is before {target}"
