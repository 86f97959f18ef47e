"""The browser harness itself: what it must catch, it catches."""

OUTSIDE = "http://192.0.2.1/pixel.png"  # TEST-NET-1: never routed, and aborted anyway


def test_outside_requests_and_errors_are_recorded(page, page_log):
    # about:blank has no CSP, so the image request reaches the router, which aborts it.
    page.set_content(
        f'<img src="{OUTSIDE}" alt="">'
        '<script>console.error("logged"); throw new Error("boom")</script>'
    )
    page.wait_for_load_state("load")
    assert page_log.outside_requests == [OUTSIDE]
    assert any("logged" in text for text in page_log.console_errors)
    assert any("boom" in text for text in page_log.page_errors)
    page_log.clear()  # expected here; anything left would fail the test


def test_axe_runs_under_the_sites_csp_and_reports_serious_violations(page, axe):
    page.goto("/login")
    assert axe(page) == []
    # An unlabelled field is a critical violation (label).
    page.evaluate(
        "() => document.querySelector('input[name=email]').closest('label')"
        ".replaceWith(Object.assign(document.createElement('input'), {type: 'text'}))"
    )
    assert "label" in [violation["id"] for violation in axe(page)]
