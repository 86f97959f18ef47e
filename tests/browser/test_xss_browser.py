"""Hostile work titles, stored through the API as an agency would, run nothing in a real
browser: not in the pages' lists, not in the maps' tooltips (Folium fills those through
innerHTML from JavaScript template literals), not on the works' own pages."""

import pytest
from browser_helpers import api, post_json, street_id, wait_for_maps, watch_maps
from sqlmodel import Session

from tracker.auth import issue_token

AGENCY = "ccc"
STREET = "Riccarton Road"
# Each would set window.__xss (or add an element, or fetch /x) if it ever ran.
HOSTILE = {
    "xss-img": '<img src=x onerror="window.__xss=1">',
    "xss-script": "</script><script>window.__xss=2</script>",
    "xss-template": "${window.__xss=3}",
    "xss-backtick": "`+(window.__xss=5)+` \\`${window.__xss=6}\\`",
    "xss-url": "javascript:window.__xss=4",
    "xss-separator": "line\u2028separator\u2029<b id=xss>bold</b>",
}

# Every feature of every map: hovered (a DOM mouseover at a point of it, as the mouse
# gives, which opens its tooltip), clicked, then left; the tooltips' texts, by feature id.
HOVER_ALL_JS = """
() => {
  const texts = {};
  let count = 0;
  window.__maps.forEach((map) => {
    const box = map.getContainer().getBoundingClientRect();
    map.eachLayer((group) => {
      if (!(group instanceof L.GeoJSON)) return;
      group.eachLayer((layer) => {
        const path = layer._path;
        if (!path) return;
        const where = layer.getLatLng ? layer.getLatLng() : layer.getCenter();
        const at = map.latLngToContainerPoint(where);
        const init = {bubbles: true, cancelable: true, view: window,
                      clientX: box.left + at.x, clientY: box.top + at.y};
        path.dispatchEvent(new MouseEvent("mouseover", init));
        path.dispatchEvent(new MouseEvent("mousemove", init));
        const tip = layer.getTooltip() || group.getTooltip();
        const open = tip && tip.isOpen() ? tip.getElement().textContent : null;
        const key = layer.feature.id || layer.feature.properties.name || String(count);
        texts[key] = open;
        path.dispatchEvent(new MouseEvent("mousedown", init));
        path.dispatchEvent(new MouseEvent("mouseup", init));
        path.dispatchEvent(new MouseEvent("click", init));
        path.dispatchEvent(new MouseEvent("mouseout", init));
        count += 1;
      });
    });
  });
  return {texts, count};
}
"""


@pytest.fixture(scope="module")
def hostile_works(live_server, demo_city) -> list[dict]:
    """The hostile works stored through POST /api/v1/works with an agency's token; their
    properties as the API gives them back."""
    with Session(demo_city) as session:
        token = issue_token(session, AGENCY, "browser tests")
        session.commit()
    rows = [
        {
            "id": ref,
            "title": title,
            "status": "planned",
            "street": STREET,
            "planned_start": "2027-01-01",
            "planned_end": "2027-06-30",
        }
        for ref, title in HOSTILE.items()
    ]
    status, answer = post_json(live_server, "/api/v1/works", {"works": rows}, token)
    assert status == 201, answer
    found = api(live_server, f"/api/v1/works?street={street_id(live_server, STREET)}&limit=500")
    mine = [f["properties"] for f in found["features"] if f["properties"]["ref"] in HOSTILE]
    assert {w["ref"] for w in mine} == set(HOSTILE)
    assert {w["ref"]: w["title"] for w in mine} == HOSTILE, "the titles were stored as sent"
    return mine


def _pages(live_server, works) -> list[str]:
    places = sorted({place for work in works for place in work["places"]})
    return [
        "/?status=planned",
        f"/streets/{street_id(live_server, STREET)}",
        *[f"/places/{place}" for place in places],
        *[f"/works/{AGENCY}/{work['ref']}" for work in works],
        f"/agencies/{AGENCY}",
    ]


def test_hostile_titles_run_nothing_in_pages_or_map_tooltips(
    page, page_log, live_server, hostile_works
):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    watch_maps(page)
    seen_in_tooltips: set[str] = set()
    seen_in_text: set[str] = set()
    for path in _pages(live_server, hostile_works):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        if page.locator("figure.map").count():
            wait_for_maps(page, page.locator("figure.map").count())
        hovered = page.evaluate(HOVER_ALL_JS)
        assert hovered["count"] > 0 or path.startswith("/agencies/"), f"no map on {path}"
        assert page.evaluate("() => window.__xss") is None, f"script ran on {path}"
        assert page.locator("#xss").count() == 0, f"markup from a title was parsed on {path}"
        for ref, title in HOSTILE.items():
            tip = hovered["texts"].get(f"{AGENCY}/{ref}")
            if tip is not None:
                assert title in tip, (path, ref, tip)
                seen_in_tooltips.add(ref)
        body = page.evaluate("() => document.querySelector('main').textContent")
        seen_in_text |= {ref for ref, title in HOSTILE.items() if title in body}
    assert not dialogs, dialogs
    assert not page_log.problems(), page_log.problems()
    # The test saw every title, as text, in a tooltip and on a page: it could have failed.
    assert seen_in_tooltips == set(HOSTILE)
    assert seen_in_text == set(HOSTILE)
