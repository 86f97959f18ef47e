"""Helpers for the browser tests: the live server's API, the Leaflet maps a page drew, and
the focus a keyboard user sees."""

import json
from urllib.parse import quote
from urllib.request import Request, urlopen

from playwright.sync_api import Page

# Folium's script runs inside a function (tracker/web/page_cache.py), so its map variables
# never reach `window`. Before any page script runs, this catches Leaflet as it defines
# `window.L` and registers an init hook (Leaflet's public API) that keeps every map made.
LEAFLET_HOOK = """
(() => {
  window.__maps = [];
  let leaflet;
  Object.defineProperty(window, "L", {
    configurable: true,
    get() { return leaflet; },
    set(value) {
      leaflet = value;
      if (value && value.Map && value.Map.addInitHook) {
        value.Map.addInitHook(function () { window.__maps.push(this); });
      }
    },
  });
})();
"""

# Every GeoJSON feature of every map, as Leaflet drew it: its layer's kind (area, work or
# line, told by its properties), its id and texts, and its SVG path's drawn attributes.
FEATURES_JS = """
() => window.__maps.map((map, index) => {
  const features = [];
  map.eachLayer((group) => {
    if (!(group instanceof L.GeoJSON)) return;
    group.eachLayer((layer) => {
      const props = layer.feature.properties;
      const path = layer._path || null;
      features.push({
        map: index,
        kind: "summary" in props ? "area" : "title" in props ? "work" : "line",
        id: layer.feature.id === undefined ? null : layer.feature.id,
        props: props,
        inDom: !!(path && path.isConnected && map.getContainer().contains(path)),
        interactive: !!(path && path.classList.contains("leaflet-interactive")),
        d: path ? path.getAttribute("d") : null,
        fill: path ? path.getAttribute("fill") : null,
        stroke: path ? path.getAttribute("stroke") : null,
      });
    });
  });
  return features;
})
"""


def api(base_url: str, path: str) -> dict | list:
    """GET an /api/v1 answer from the live server, as JSON."""
    with urlopen(base_url + path, timeout=30) as answer:
        return json.load(answer)


def post_json(base_url: str, path: str, body: dict, token: str) -> tuple[int, dict]:
    """POST JSON with a bearer token; (status, answer)."""
    request = Request(
        base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urlopen(request, timeout=60) as answer:
        return answer.status, json.load(answer)


def all_works(base_url: str) -> list[dict]:
    """Every stored work's properties, through /api/v1/works (paged)."""
    path = "/api/v1/works?limit=500&bbox=170,-45,175,-42"
    works = []
    while path:
        answer = api(base_url, path)
        works += [feature["properties"] for feature in answer["features"]]
        path = answer["next"].removeprefix(base_url) if answer["next"] else None
    return works


def street_id(base_url: str, name: str) -> str:
    """The id of the one street called `name` (the API's search)."""
    matches = api(base_url, f"/api/v1/streets?q={quote(name)}")
    [match] = [m for m in matches if m["name"].lower() == name.lower()]
    return match["id"]


def watch_maps(page: Page) -> None:
    """Keep every Leaflet map the page makes in window.__maps (before the page loads)."""
    page.add_init_script(LEAFLET_HOOK)


def wait_for_maps(page: Page, count: int = 1) -> None:
    """Wait until `count` maps exist, have drawn their SVG features and stand still: a map
    may still be zooming to its place after it loads, and whatever a test opens or clicks
    on it meanwhile moves once the zoom ends."""
    page.wait_for_function(
        """(count) => window.__maps && window.__maps.length >= count
            && window.__maps.every((m) => m._loaded && !m._animatingZoom
                                    && !(m._panAnim && m._panAnim._inProgress))""",
        arg=count,
    )


def map_features(page: Page) -> list[list[dict]]:
    """Per map on the page, its GeoJSON features as drawn (see FEATURES_JS)."""
    return page.evaluate(FEATURES_JS)


def fit_all(page: Page, index: int = 0) -> None:
    """Zoom map `index` out to all of its features, so that each one is on screen."""
    page.evaluate(
        """(index) => {
            const map = window.__maps[index];
            let bounds = null;
            map.eachLayer((layer) => {
                if (layer instanceof L.GeoJSON) {
                    bounds = bounds ? bounds.extend(layer.getBounds()) : layer.getBounds();
                }
            });
            map.fitBounds(bounds, {animate: false});
        }""",
        index,
    )


def focused(page: Page, selector: str = "*") -> dict:
    """What has the keyboard focus, whether a sighted user can see where it is, and whether
    it matches `selector`."""
    return page.evaluate(
        """(selector) => {
            const element = document.activeElement;
            const style = getComputedStyle(element);
            return {
                tag: element.tagName.toLowerCase(),
                id: element.id,
                href: element.getAttribute("href"),
                text: (element.innerText || element.value || "").trim().slice(0, 80),
                visible: (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0)
                    || style.boxShadow !== "none",
                body: element === document.body,
                matches: element.matches(selector),
            };
        }""",
        selector,
    )


def tab_to(page: Page, selector: str, *, limit: int = 60, seen: list | None = None) -> dict:
    """Press Tab until the element matching `selector` has the focus; every element on the
    way must show its focus. Returns the focused element's description."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focused(page, selector)
        if seen is not None:
            seen.append(now)
        assert now["visible"], f"no visible focus indicator on {now}"
        if now["matches"]:
            return now
    raise AssertionError(f"{limit} presses of Tab never reached {selector}")
