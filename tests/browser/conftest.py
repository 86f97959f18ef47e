"""Browser tests: Debian's Chromium, driven by Playwright, against a live server.

One session-wide server (the demo city in SQLite, served by werkzeug on 127.0.0.1 on a
free port) and one Chromium; every test gets a fresh context and page. Every page records
its console errors, page errors and any request for a host other than 127.0.0.1 (those
are aborted); a test that leaves any fails. Helpers, as fixtures: `axe(page)` returns the
serious and critical accessibility violations, `screenshot(page, name)` saves full-page
PNGs at 360 and 1280 px wide under test-artifacts/screenshots/.

Every test under tests/browser is marked `browser` (`-m "not browser"` leaves them out).
Browser tests run on SQLite only: the pages' code is the same on both backends, and the
rest of the suite covers PostgreSQL.
"""

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# Also importable as `from conftest import …` when this file is the `conftest` pytest
# loaded last (see tests/helpers.py): the names test modules take from tests/conftest.py.
from helpers import PG_SERVER, TINY_TREE  # noqa: F401
from helpers import empty_postgres as _empty_postgres  # noqa: F401
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, sync_playwright
from werkzeug.serving import make_server

from tracker import create_app
from tracker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, never a browser Playwright downloads; nothing phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Fetched by `make axe` (a dependency of `make test`), never committed.
AXE_JS = ROOT / ".cache" / "axe" / "axe.min.js"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
WIDTHS = (360, 1280)
HEIGHT = 800
LOCAL_HOST = "127.0.0.1"
BLOCKING_IMPACTS = ("serious", "critical")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items) -> None:
    # Before -m selects: every test in this folder is a browser test. (They all run on one
    # xdist worker: see pytest_xdist_make_scheduler in tests/conftest.py.)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# --- the live server -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory) -> Settings:
    """Settings for the demo city in a session-wide SQLite file, served over plain HTTP."""
    folder = tmp_path_factory.mktemp("browser")
    return Settings(
        database_url=f"sqlite:///{folder / 'demo.sqlite3'}",
        tree=ROOT / "results_tree.yaml",
        instance_path=folder / "instance",
        secret_key="browser-test-secret",
        secure_cookies=False,
        map_tiles="",  # no tiles: a page loads nothing from outside the site
        _env_file=None,
    )


@pytest.fixture(scope="session")
def demo_city(demo_settings):
    """The database migrated and the demo city loaded, once a session (as `tracker demo`)."""
    from tracker.cli import initialise
    from tracker.db import session_scope
    from tracker.demo import load_demo
    from tracker.places import read_streets

    engine, tree = initialise(demo_settings)
    streets = read_streets(tree.places.streets, tree.boundaries) if tree.places.streets else []
    with session_scope(engine) as session:
        load_demo(session, tree, streets)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def live_server(demo_settings, demo_city) -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT) of the app serving the demo city."""
    app = create_app(demo_settings)
    server = make_server(LOCAL_HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://{LOCAL_HOST}:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()
    app.extensions["engine"].dispose()


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} missing: apt-get install -y chromium chromium-driver")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@dataclass
class PageLog:
    """What a page did that fails a test: console errors, page errors, outside requests."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return (
            [f"console error: {text}" for text in self.console_errors]
            + [f"page error: {text}" for text in self.page_errors]
            + [f"request outside {LOCAL_HOST}: {url}" for url in self.outside_requests]
        )

    def clear(self) -> None:
        """Forget what was recorded so far (after a test checked an expected error)."""
        self.console_errors.clear()
        self.page_errors.clear()
        self.outside_requests.clear()


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


def _new_page(browser: Browser, base_url: str, log: PageLog, **options) -> Page:
    context = browser.new_context(
        base_url=base_url, viewport={"width": WIDTHS[-1], "height": HEIGHT}, **options
    )

    def route(route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname == LOCAL_HOST:
            route.continue_()
        else:
            log.outside_requests.append(request.url)
            route.abort("blockedbyclient")

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location
            log.console_errors.append(
                f"{message.text} ({where.get('url')}:{where.get('lineNumber')})"
            )

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", console)
    page.on("pageerror", lambda error: log.page_errors.append(str(error)))
    return page


@pytest.fixture
def page(browser, live_server, page_log) -> Iterator[Page]:
    """A fresh context and page at 1280 x 800; relative URLs go to the live server."""
    page = _new_page(browser, live_server, page_log)
    yield page
    page.context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item) -> Iterator[None]:
    # After the test body, inside its call phase: what the page logged fails the test.
    result = yield
    log = getattr(item, "funcargs", {}).get("page_log")
    if log is not None and log.problems():
        raise AssertionError("the page logged problems:\n  " + "\n  ".join(log.problems()))
    return result


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} missing: run `make axe` (make test does)")
    return AXE_JS.read_text(encoding="utf-8")


@pytest.fixture
def axe(axe_source) -> Callable[..., list[dict]]:
    """axe(page, context=None): the serious and critical violations on the page as shown.

    The site's CSP allows only scripts carrying the page's nonce, so an injected script
    tag (page.add_script_tag) would be blocked. axe is run with page.evaluate instead,
    which the DevTools protocol runs outside the CSP; the page itself keeps its policy
    (no bypass_csp), so the test still sees what a visitor's browser enforces.
    """

    def run(page: Page, context: str | None = None) -> list[dict]:
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.evaluate(axe_source)
        results = page.evaluate(
            """async (context) => axe.run(context || document, {
                resultTypes: ["violations"],
            })""",
            context,
        )
        return [
            {
                "id": violation["id"],
                "impact": violation["impact"],
                "help": violation["help"],
                "nodes": [node["target"] for node in violation["nodes"]],
            }
            for violation in results["violations"]
            if violation["impact"] in BLOCKING_IMPACTS
        ]

    return run


_saved: list[Path] = []


@pytest.fixture
def screenshot(request) -> Callable[[Page, str], list[Path]]:
    """screenshot(page, name): full-page PNGs NAME-360.png and NAME-1280.png; their paths."""

    def save(page: Page, name: str) -> list[Path]:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        original = page.viewport_size
        paths = []
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": HEIGHT})
            path = SCREENSHOTS / f"{name}-{width}.png"
            page.screenshot(path=path, full_page=True)
            paths.append(path)
            request.node.user_properties.append(("screenshot", str(path)))
        if original:
            page.set_viewport_size(original)
        _saved.extend(paths)
        return paths

    return save


def pytest_terminal_summary(terminalreporter) -> None:
    if _saved:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(_saved)} saved in {SCREENSHOTS.relative_to(ROOT)}/")


# --- the demo city's pages -----------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_paths(live_server) -> dict[str, str]:
    """The address of each main page for real ids of the demo city, read from its API
    (the city itself is `/`: /places/CITY redirects there)."""
    from browser_helpers import api, street_id

    city = api(live_server, "/api/v1/rollup?place=christchurch")
    result = city["results"][0]
    node = result
    while node["kind"] != "measure":
        node = node["children"][0]
    neighbourhood = "riccarton"
    work = api(live_server, f"/api/v1/works?place={neighbourhood}")["features"][0]["properties"]
    return {
        "home": "/",
        "search": "/search?q=riccarton",
        "search-none": "/search?q=zzqx",
        "street": f"/streets/{street_id(live_server, 'Riccarton Road')}",
        "neighbourhood": f"/places/{neighbourhood}",
        "result": f"/results/{result['id']}",
        "measure": f"/measures/{node['id']}",
        "work": f"/works/{work['agency']}/{work['ref']}",
        "agency": f"/agencies/{work['agency']}",
        "feeds": "/feeds",
        "not-found": "/streets/no-such-street",
    }
