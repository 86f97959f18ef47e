"""The public pages in a real browser: they load cleanly, pass axe, and work by keyboard."""

import pytest

# Serious or critical axe rules a page is known to break, and why it is not fixed here.
# Every other rule must pass; a known one that stops failing fails the test (remove it).
KNOWN_VIOLATIONS: dict[str, dict[str, str]] = {}  # path -> {rule: why it is not fixed yet}


@pytest.mark.parametrize(("path", "name"), [("/", "home"), ("/feeds", "feeds")])
def test_page_loads_cleanly_and_passes_axe(page, page_log, axe, screenshot, path, name):
    response = page.goto(path)
    assert response is not None and response.status == 200
    page.wait_for_load_state("networkidle")
    assert page.locator("main h1").count() >= 1
    screenshot(page, name)
    assert not page_log.problems(), page_log.problems()
    violations = axe(page)
    known = KNOWN_VIOLATIONS.get(path, {})
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
