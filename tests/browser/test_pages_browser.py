"""The public pages in a real browser: they load cleanly, pass axe, and work by keyboard."""

import pytest

# Serious or critical axe rules a page is known to break, and why it is not fixed here.
# Every other rule must pass; a known one that stops failing fails the test (remove it).
KNOWN_VIOLATIONS: dict[str, dict[str, str]] = {}  # page name -> {rule: why it is not fixed yet}

# The main pages, by name (the `demo_paths` fixture gives each one's address in the demo city).
PAGES = [
    "home",
    "search",
    "search-none",
    "street",
    "neighbourhood",
    "result",
    "measure",
    "work",
    "agency",
    "feeds",
    "not-found",
]
PHONE = 360
HEIGHT = 800


@pytest.mark.parametrize("name", PAGES)
def test_page_loads_cleanly_and_passes_axe(page, page_log, axe, screenshot, demo_paths, name):
    path = demo_paths[name]
    response = page.goto(path)
    assert response is not None and response.status == (404 if name == "not-found" else 200)
    assert page.locator("main h1").count() == 1, "a page has one <h1>"
    if page.locator("figure.map").count():
        page.wait_for_selector("figure.map .leaflet-interactive", state="attached")
    screenshot(page, name)
    page.set_viewport_size({"width": PHONE, "height": HEIGHT})
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE, f"{path} scrolls sideways at {PHONE} px: {width} px wide"
    page.set_viewport_size({"width": 1280, "height": HEIGHT})
    if name == "not-found":  # Chromium logs the page's own 404; nothing else may be logged
        expected = [e for e in page_log.console_errors if "status of 404" in e and path in e]
        assert len(expected) == 1, page_log.console_errors
        page_log.console_errors.remove(expected[0])
    assert not page_log.problems(), page_log.problems()
    violations = axe(page)
    known = KNOWN_VIOLATIONS.get(name, {})
    unknown = [v for v in violations if v["id"] not in known]
    assert not unknown, f"axe on {path}:\n" + "\n".join(
        f"{v['impact']} {v['id']}: {v['help']}, {len(v['nodes'])} nodes: {v['nodes'][:3]}"
        for v in unknown
    )
    fixed = set(known) - {v["id"] for v in violations}
    assert not fixed, f"fixed on {path}, remove from KNOWN_VIOLATIONS: {sorted(fixed)}"
    if known:
        pytest.xfail("; ".join(f"{rule}: {why}" for rule, why in known.items()))


def test_login_email_field_is_reached_by_tab_with_visible_focus(page, screenshot):
    page.goto("/login")
    email = page.locator("input[name=email]")
    for _ in range(30):
        page.keyboard.press("Tab")
        if email.evaluate("element => element === document.activeElement"):
            break
    else:
        pytest.fail("30 presses of Tab never reached the email field")
    focus = email.evaluate(
        """element => {
            const style = getComputedStyle(element);
            return {
                outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0,
                shadow: style.boxShadow !== "none",
                focusVisible: element.matches(":focus-visible"),
            };
        }"""
    )
    assert focus["focusVisible"]
    assert focus["outline"] or focus["shadow"], "the focused email field shows no focus ring"
    screenshot(page, "login-email-focused")
