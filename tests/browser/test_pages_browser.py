"""The public pages in a real browser: they load cleanly, pass axe, and work by keyboard."""

import pytest


@pytest.mark.parametrize(("path", "name"), [("/", "home"), ("/feeds", "feeds")])
def test_page_loads_cleanly_and_passes_axe(page, axe, screenshot, path, name):
    response = page.goto(path)
    assert response is not None and response.status == 200
    page.wait_for_load_state("networkidle")
    assert page.locator("main h1").count() >= 1
    screenshot(page, name)
    violations = axe(page)
    assert not violations, f"axe on {path}:\n" + "\n".join(
        f"{v['impact']} {v['id']}: {v['help']}, {len(v['nodes'])} nodes: {v['nodes'][:3]}"
        for v in violations
    )


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
