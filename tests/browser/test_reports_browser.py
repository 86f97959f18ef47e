"""Reporting a problem in a real browser: the whole flow with JavaScript off, by keyboard
and labels alone; the report's point on its place's map opens a popup linking to it; a
hostile description runs nothing."""

import re

import pytest
from browser_helpers import wait_for_maps, watch_maps
from conftest import _new_page

HOSTILE = (
    '<img src=x onerror="window.__xss=1"></script><script>window.__xss=2</script>${window.__xss=3}`'
)

# Click one report's point on the first map, as the mouse would; the popup's link.
CLICK_REPORT_JS = """
(id) => {
  const map = window.__maps[0];
  let found = null;
  map.eachLayer((group) => {
    if (!(group instanceof L.GeoJSON)) return;
    group.eachLayer((layer) => {
      if (layer.feature.id !== "report-" + id) return;
      layer.fire("click", {latlng: layer.getLatLng()}, true);  // bubbles to the group
      const popup = layer.getPopup() || group.getPopup();
      const link = popup && popup.getElement() && popup.getElement().querySelector("a");
      found = link ? [link.getAttribute("href"), link.textContent] : "no link";
    });
  });
  return found;
}
"""


@pytest.fixture
def no_js_page(browser, live_server, page_log):
    page = _new_page(browser, live_server, page_log, java_script_enabled=False)
    yield page
    page.context.close()


def test_a_report_made_with_javascript_off_and_the_keyboard(no_js_page, page):
    p = no_js_page
    p.goto("/")
    p.get_by_role("link", name="Report a problem").first.click()
    p.get_by_label("Street name").fill("riccarton road")
    p.keyboard.press("Enter")
    p.get_by_role("radio").first.focus()
    p.keyboard.press("Space")
    p.get_by_role("button", name="Continue with this street").press("Enter")
    assert "Step 2 of 2" in p.content()
    p.get_by_role("radio", name=re.compile("Pothole or damaged road surface")).check()
    p.get_by_label("Describe the problem").fill("A deep hole\nby the bus stop. " + HOSTILE)
    p.get_by_label("Your email").fill("browser.resident@example.org")
    p.get_by_role("button", name="Send the report").press("Enter")
    message = p.get_by_role("status").inner_text()
    assert "has gone to Christchurch City Council" in message
    report = re.search(r"Report (\d+)", message).group(1)

    # The public page, with JavaScript on: the description is text, and runs nothing.
    page.goto(f"/reports/{report}")
    text = page.locator("p.report-text").first.inner_text()
    assert text.startswith("A deep hole\nby the bus stop.") and "<img" in text
    assert page.evaluate("() => window.__xss") is None
    assert "browser.resident" not in page.content()

    # Its place's map: the point's popup links to the report.
    place = page.locator("dl.report-facts a[href^='/places/']").get_attribute("href")
    watch_maps(page)
    page.goto(place)
    wait_for_maps(page)
    link = page.evaluate(CLICK_REPORT_JS, report)
    assert link == [f"/reports/{report}", f"Report {report}: Pothole or damaged road surface"]
    assert page.evaluate("() => window.__xss") is None
    # An opened popup may pan the map to show itself: a click while the link still moves
    # can press on it and let go beside it, which follows no link.
    page.wait_for_function("() => !(window.__maps[0]._panAnim || {})._inProgress")
    page.locator(f'.leaflet-popup a[href="/reports/{report}"]').first.click()
    page.wait_for_url(f"**/reports/{report}")


def _violations(axe, page) -> list[str]:
    return [f"{v['impact']} {v['id']}: {v['help']} {v['nodes'][:3]}" for v in axe(page)]


def test_the_report_pages_pass_axe_and_are_reached_by_tab(page, page_log, axe, screenshot):
    from browser_helpers import tab_to

    for path in ("/report", "/report?q=colombo", "/report?street=riccarton-road",
                 "/report?lat=-41.29&lon=174.78", "/reports"):  # fmt: skip
        page.goto(path)
        assert page.locator("main h1").count() == 1, path
        assert _violations(axe, page) == [], path
    page_log.clear()  # the point outside the city is a 400, as it should be
    # A refused step 2: the error is announced, linked to its field, and the page passes.
    page.goto("/report?street=riccarton-road")
    tab_to(page, "input[name=category_code]")
    page.keyboard.press("Space")
    page.get_by_label("Describe the problem").fill("x")
    page.get_by_label("Your email").fill("not an email")
    page.evaluate("() => document.querySelector('form.report-form').noValidate = true")
    page.get_by_role("button", name="Send the report").press("Enter")
    alert = page.get_by_role("alert")
    assert "Enter an email address" in alert.inner_text()
    assert page.get_by_label("Your email").get_attribute("aria-invalid") == "true"
    assert _violations(axe, page) == []
    screenshot(page, "report-refused")
    alert.get_by_role("link").click()
    assert page.evaluate("() => document.activeElement.id") == "report-email"
    page_log.clear()  # the refused form is a 400 too
