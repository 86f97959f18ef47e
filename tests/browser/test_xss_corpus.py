"""The XSS corpus (xss_corpus.py) sent through every user-controlled field that reaches a
page, a map, a feed, a mail or an export, then every page crawled in headless Chromium:
no payload runs, each is shown as text.

A second small live server serves a hostile copy of the tiny city: its neighbourhoods and
streets are named with the payloads (a hostile gazetteer), and the payloads arrive as work
titles through the API (JSON and CSV), as rows of a works feed served by a real local HTTP
server and run through the tracker's import, as observation notes, and through the
participation write paths: comments and their authors' names, challenges of a complete
work (note, where, the agency's answer) and problem reports (description, the agency's
notes). Everything is stored once for the module; each page is visited once.

A field is one entry in FIELDS: its code (the suffix of its instances), the longest text
it takes, and how it is stored. Pages are listed once in `crawl_paths`.
"""

import csv
import io
import json
import re
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import parse_qsl, urlencode
from urllib.request import Request, urlopen

import pytest
import yaml
from browser_helpers import wait_for_maps, watch_maps
from conftest import LOCAL_HOST, ROOT, _new_page
from sqlalchemy import select
from sqlmodel import Session
from test_xss_browser import HOVER_ALL_JS
from werkzeug.serving import make_server
from xss_corpus import PAYLOADS, RAN_JS, instances

from tracker import create_app
from tracker.auth import create_user, issue_token
from tracker.challenges import answer as answer_challenge
from tracker.challenges import submit_challenge
from tracker.comments import find_target, publish, submit_comment
from tracker.comments import report as report_comment
from tracker.errors import TrackerError
from tracker.feeds import run_feed
from tracker.mail import build_message, queue_mail
from tracker.models import Feed, OutboxMail, Street, Work
from tracker.reports import submit_report, update_report
from tracker.settings import Settings
from tracker.works import find_work

TINY = ROOT / "tests" / "fixtures" / "tiny_city"
PASSWORD = "correct horse battery"
WORKS_AGENCY = "council"
NOTES_AGENCY = "eqc"
NOTES_MEASURE = "homes-repaired"
COLUMNS = 6
SIZE = 0.01  # degrees: each neighbourhood a square this wide
WEST, SOUTH = 172.60, -43.58
FIRST_IDS = ["opawa", "st-albans", "riccarton"]  # the tree's targets name these


@dataclass(frozen=True)
class Hostile:
    """The hostile city as served: its base URL, and every instance stored, by field."""

    url: str
    engine: object
    sent: dict[str, dict[str, str]]  # field code -> payload name -> instance
    places: list[str]
    streets: list[str]
    api_refs: list[str]
    settings: Settings
    reports: list[int]


# --- the hostile city --------------------------------------------------------------------


def _square(index: int) -> list[list[float]]:
    west = WEST + (index % COLUMNS) * SIZE
    south = SOUTH + (index // COLUMNS) * SIZE
    return [[west, south], [west + SIZE, south], [west + SIZE, south + SIZE],
            [west, south + SIZE], [west, south]]  # fmt: skip


def _centre(index: int) -> tuple[float, float]:
    west, south = _square(index)[0]
    return round(west + SIZE / 2, 5), round(south + SIZE / 2, 5)


def _place_ids() -> list[str]:
    return FIRST_IDS + [f"n{index:02d}" for index in range(len(FIRST_IDS), len(PAYLOADS))]


def _write_city(folder: Path, names: dict[str, str], streets: dict[str, str]) -> Path:
    """A copy of the tiny city's tree whose neighbourhoods and streets carry the payloads."""
    ids = _place_ids()
    boundaries = [
        {
            "type": "Feature",
            "properties": {"id": ids[i], "name": name, "ward": f"Ward {i % 2 + 1}"},
            "geometry": {"type": "Polygon", "coordinates": [_square(i)]},
        }
        for i, name in enumerate(names.values())
    ]
    lines = []
    for i, name in enumerate(streets.values()):
        lon, lat = _centre(i)
        line = [[lon - SIZE / 3, lat], [lon + SIZE / 3, lat]]
        lines.append({"type": "Feature", "properties": {"name": name},
                      "geometry": {"type": "LineString", "coordinates": line}})  # fmt: skip
    (folder / "neighbourhoods.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": boundaries})
    )
    (folder / "streets.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": lines})
    )
    tree = yaml.safe_load((TINY / "tree.yaml").read_text())
    tree["report_categories"] = [{"code": "pothole", "name": "Pothole", "agency": WORKS_AGENCY,
                                  "description": "A hole in a road."}]  # fmt: skip
    path = folder / "tree.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    return path


class _FeedServer:
    """A real HTTP server on 127.0.0.1 serving one works feed (CSV)."""

    def __init__(self, body: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/csv; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer((LOCAL_HOST, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://{LOCAL_HOST}:{self.httpd.server_port}/works.csv"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _post(url: str, body: bytes, content_type: str, token: str) -> tuple[int, dict]:
    request = Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    try:
        with urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except HTTPError as error:
        return error.code, json.load(error)


def _work_rows(sent: dict[str, str], prefix: str, street_ids: list[str]) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "title": title, "status": "planned", "street": street_ids[i],
         "planned_start": "2027-01-01", "planned_end": "2027-06-30"}
        for i, title in enumerate(sent.values())
    ]  # fmt: skip


def _store_api_json(city, code, sent) -> None:
    rows = _work_rows(sent, "api", city["street_ids"])
    status, answer = _post(
        city["url"] + "/api/v1/works", json.dumps({"works": rows}).encode(),
        "application/json", city["token"],
    )  # fmt: skip
    assert status == 201, answer


def _store_api_csv(city, code, sent) -> None:
    rows = _work_rows(sent, "csv", city["street_ids"])
    status, answer = _post(city["url"] + "/api/v1/works", _csv(rows), "text/csv", city["token"])
    assert status == 201, answer


def _store_feed(city, code, sent) -> None:
    """A works feed on a real HTTP server, run through the tracker's import; its rows carry
    the payloads as titles, and as statuses the import refuses (shown with the reason)."""
    rows = []
    for i, title in enumerate(sent.values()):
        lon, lat = _centre(i)
        rows.append({"id": f"feed-{i}", "title": title, "status": "in_progress",
                     "lon": lon, "lat": lat})  # fmt: skip
    for i, title in enumerate(list(sent.values())[:10]):
        lon, lat = _centre(i)
        rows.append({"id": f"bad-{i}", "title": "refused", "status": title, "lon": lon, "lat": lat})
    server = _FeedServer(_csv(rows))
    try:
        with Session(city["engine"]) as session:
            session.add(Feed(id="council-hostile", agency_id=WORKS_AGENCY, url=server.url,
                             format="csv", every="1d", provides="works", fields={},
                             place_match="id", timeout=5))  # fmt: skip
            session.commit()
        run = run_feed(city["engine"], "council-hostile")
    finally:
        server.close()
    assert (run.status, run.rows) == ("ok", len(sent)), (run.status, run.rows, run.error)


def _store_notes(city, code, sent) -> None:
    rows = [
        {"measure": NOTES_MEASURE, "place": FIRST_IDS[i % 3],
         "date": f"{2012 + i // 12}-{i % 12 + 1:02d}-28", "value": i, "note": note}
        for i, note in enumerate(sent.values())
    ]  # fmt: skip
    status, answer = _post(
        city["url"] + "/api/v1/observations", json.dumps({"observations": rows}).encode(),
        "application/json", city["notes_token"],
    )  # fmt: skip
    assert status == 201, answer


def _stored(session, sent: dict[str, str], name: str, write) -> None:
    """write(session, instance) for each instance; one the write path refuses (its own
    check, as a resident would see on the form) is left out of what must be shown."""
    for key, instance in list(sent.items()):
        try:
            with session.begin_nested():
                write(session, instance)
        except TrackerError:
            del sent[key]
            REFUSED.append(f"{name}:{key}")


REFUSED: list[str] = []  # instances a write path refused, as field:payload
PARTICIPANT = "participant@example.com"  # who comments, challenges and reports


def _store_comments(city, code, sent) -> None:
    """Published comments with the payloads as their text, on places, a work and a
    measure, then each reported once: back in the officials' queue as well."""
    with Session(city["engine"]) as session:
        targets = [*(find_target(session, "place", p) for p in FIRST_IDS),
                   find_target(session, "work", WORKS_AGENCY, "api-0"),
                   find_target(session, "measure", NOTES_MEASURE)]  # fmt: skip
        count = iter(range(len(sent)))

        def write(session, body):
            comment = submit_comment(session, target=targets[next(count) % len(targets)],
                                     author_name="Resident", email=PARTICIPANT, body=body,
                                     settings=city["settings"])  # fmt: skip
            publish(session, comment.id, city["official_id"], settings=city["settings"])
            report_comment(session, comment.id)

        _stored(session, sent, code, write)
        session.commit()


def _store_comment_names(city, code, sent) -> None:
    with Session(city["engine"]) as session:
        target = find_target(session, "place", FIRST_IDS[0])

        def write(session, name):
            comment = submit_comment(session, target=target, author_name=name, email=PARTICIPANT,
                                     body="A comment.", settings=city["settings"])  # fmt: skip
            publish(session, comment.id, city["official_id"], settings=city["settings"])

        _stored(session, sent, code, write)
        session.commit()


def _complete_work(city):
    """The one work marked complete (its page shows every challenge), made once."""
    if "complete" not in city:
        row = {"id": "done-0", "title": "A finished work", "status": "complete",
               "street": city["street_ids"][0], "actual_start": "2025-01-01",
               "actual_end": "2025-06-30"}  # fmt: skip
        status, answer = _post(city["url"] + "/api/v1/works", json.dumps({"works": [row]}).encode(),
                               "application/json", city["token"])  # fmt: skip
        assert status == 201, answer
        with Session(city["engine"]) as session:
            city["complete"] = find_work(session, WORKS_AGENCY, "done-0").id
    return city["complete"]


def _challenges(city, code, sent, part: str) -> None:
    """Challenges of the complete work with the payloads as `part` (note, location or the
    agency's answer), each answered, so the work page shows them."""
    work_id = _complete_work(city)
    with Session(city["engine"]) as session:
        work = session.get(Work, work_id)

        def write(session, text):
            given = {"note": "Not finished.", "location": None} | (
                {part: text} if part != "answer" else {}
            )
            challenge = submit_challenge(session, work, author_name="Resident", email=PARTICIPANT,
                                         settings=city["settings"], **given)  # fmt: skip
            answer_challenge(session, challenge.id, agency_id=WORKS_AGENCY,
                             user_id=city["agency_id"],
                             answer=text if part == "answer" else "Answered.")  # fmt: skip

        _stored(session, sent, code, write)
        session.commit()


def _reports(city, code, sent, part: str) -> None:
    """Problem reports with the payloads as their description, or as the agency's notes
    when it closes them."""
    with Session(city["engine"]) as session:
        count = iter(range(len(sent)))

        def write(session, text):
            lon, lat = _centre(next(count) % len(FIRST_IDS))
            description = text if part == "description" else "A hole."
            report = submit_report(session, category_code="pothole", description=description,
                                   name="Resident", email=PARTICIPANT, lon=lon, lat=lat,
                                   settings=city["settings"])  # fmt: skip
            city.setdefault("reports", []).append(report.id)
            if part == "notes":
                update_report(session, report.id, agency_id=WORKS_AGENCY,
                              user_id=city["agency_id"], status="closed", status_notes=text,
                              settings=city["settings"])  # fmt: skip

        _stored(session, sent, code, write)
        session.commit()


@dataclass(frozen=True)
class FieldSpec:
    code: str  # the instances' suffix
    label: str
    max_length: int
    store: object = None  # store(city, code, sent); None: stored with the city itself


# Every user-controlled text field the corpus goes through. Add one here (and, when it
# shows on a page not yet crawled, that page to crawl_paths).
FIELDS = [
    FieldSpec("pl", "place name (gazetteer)", 200),
    FieldSpec("st", "street name (gazetteer)", 100),
    FieldSpec("wj", "work title, API JSON", 300, _store_api_json),
    FieldSpec("wc", "work title, API CSV", 300, _store_api_csv),
    FieldSpec("wf", "work title, feed row", 300, _store_feed),
    FieldSpec("on", "observation note, API", 1000, _store_notes),
    FieldSpec("cb", "comment text", 2000, _store_comments),
    FieldSpec("cn", "comment author's name", 100, _store_comment_names),
    FieldSpec("ch", "challenge note", 2000, partial(_challenges, part="note")),
    FieldSpec("cl", "challenge: where", 300, partial(_challenges, part="location")),
    FieldSpec("ca", "agency's answer to a challenge", 2000, partial(_challenges, part="answer")),
    FieldSpec("rd", "problem report description", 2000, partial(_reports, part="description")),
    FieldSpec("rn", "agency's notes on a report", 2000, partial(_reports, part="notes")),
]


def _serve(app) -> tuple[str, callable]:
    server = make_server(LOCAL_HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="hostile-server", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()

    return f"http://{LOCAL_HOST}:{server.server_port}", stop


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Hostile:
    from tracker.cli import initialise

    folder = tmp_path_factory.mktemp("hostile")
    sent = {f.code: instances(f.code, f.max_length) for f in FIELDS}
    tree = _write_city(folder, sent["pl"], sent["st"])
    settings = Settings(
        database_url=f"sqlite:///{folder / 'hostile.sqlite3'}",
        tree=tree,
        instance_path=folder / "instance",
        secret_key="hostile-test-secret",
        secure_cookies=False,
        map_tiles="",
        _env_file=None,
    )
    engine, _ = initialise(settings)
    with Session(engine) as session:
        streets = {s.name: s.id for s in session.scalars(select(Street))}
        token = issue_token(session, WORKS_AGENCY, "xss corpus")
        notes_token = issue_token(session, NOTES_AGENCY, "xss corpus")
        agency = create_user(session, "agency@example.com", PASSWORD, "agency", WORKS_AGENCY)
        create_user(session, "eqc@example.com", PASSWORD, "agency", NOTES_AGENCY)
        official = create_user(session, "official@example.com", PASSWORD, "official", None)
        session.commit()
        agency_id, official_id = agency.id, official.id
    street_names = [" ".join(name.split()) for name in sent["st"].values()]
    street_ids = [streets[name] for name in street_names]
    app = create_app(settings)
    url, stop = _serve(app)
    city = {"url": url, "engine": engine, "token": token, "notes_token": notes_token,
            "street_ids": street_ids, "settings": settings, "agency_id": agency_id,
            "official_id": official_id}  # fmt: skip
    for spec in FIELDS:
        if spec.store:
            spec.store(city, spec.code, sent[spec.code])
    yield Hostile(
        url,
        engine,
        sent,
        _place_ids(),
        street_ids,
        [f"api-{i}" for i in range(len(PAYLOADS))],
        settings,
        city.get("reports", []),
    )
    stop()
    app.extensions["engine"].dispose()
    engine.dispose()


# --- the crawl ---------------------------------------------------------------------------


def crawl_paths(city: Hostile) -> list[str]:
    """Every public page where a stored payload shows, once each."""
    return [
        "/",
        "/?status=planned&status=in_progress",
        *[f"/places/{place}" for place in city.places],
        *[f"/streets/{street}" for street in city.streets],
        *[f"/works/{WORKS_AGENCY}/{ref}" for ref in city.api_refs],
        f"/agencies/{WORKS_AGENCY}",
        f"/agencies/{NOTES_AGENCY}",
        f"/measures/{NOTES_MEASURE}",
        "/results/housing",
        "/feeds",
        "/exports/",
        "/search?q=script",
        "/search?q=img",
        f"/works/{WORKS_AGENCY}/done-0",  # every challenge, note, where and answer
        "/reports",
        "/reports?page=2",
        *[f"/reports/{report}" for report in city.reports],
    ]


# Staff pages, by the account that sees them.
STAFF_PATHS = {
    "agency@example.com": ["/agency", "/agency/works", "/agency/challenges", "/agency/reports"],
    "eqc@example.com": ["/agency", f"/agency/observations?measure={NOTES_MEASURE}"],
    "official@example.com": ["/admin", "/admin/audit", "/admin/comments"],
}


def _normal(text: str) -> str:
    return " ".join(text.split())


class Crawler:
    """Visits pages in one browser page; after each, checks that nothing ran, and keeps the
    text shown (the page's and its map tooltips') to check every instance was seen."""

    def __init__(self, page, page_log) -> None:
        self.page = page
        self.log = page_log
        self.dialogs: list[str] = []
        self.shown: list[str] = []
        self.visited = 0
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        watch_maps(page)

    def visit(self, path: str, statuses=(200,), hover: bool = True) -> None:
        response = self.page.goto(path)
        assert response is not None and response.status in statuses, (path, response.status)
        self.visited += 1
        maps = self.page.locator("figure.map").count()
        tips = {}
        if maps and hover:
            wait_for_maps(self.page, maps)
            tips = self.page.evaluate(HOVER_ALL_JS)["texts"]
        ran = self.page.evaluate(RAN_JS)
        assert ran == {"xss": None, "parsed": []}, f"a payload ran on {path}: {ran}"
        assert not self.dialogs, f"a dialog opened on {path}: {self.dialogs}"
        if response.status != 200:  # the refused page itself is the one expected error
            expected = f"status of {response.status}"
            self.log.console_errors[:] = [e for e in self.log.console_errors if expected not in e]
        assert not self.log.problems(), (path, self.log.problems())
        self.shown.append(_normal(self.page.evaluate("() => document.body.innerText")))
        self.shown.append(_normal(self.page.evaluate("() => document.body.textContent")))
        self.shown.extend(_normal(t) for t in tips.values() if t)

    def unseen(self, sent: dict[str, str]) -> list[str]:
        everything = "\n".join(self.shown)
        return [name for name, text in sent.items() if _normal(text) not in everything]


def test_every_stored_payload_runs_nothing_on_any_public_page(page, page_log, hostile):
    page.context.set_default_timeout(15_000)
    page.goto(hostile.url + "/")  # the context's base URL is the demo server's
    crawler = Crawler(page, page_log)
    started = time.monotonic()
    for path in crawl_paths(hostile):
        crawler.visit(hostile.url + path)
    took = time.monotonic() - started
    # Each field's every instance was seen as text somewhere: the crawl could have failed.
    for spec in FIELDS:
        if spec.code == "on":
            continue  # notes show on the agency's own pages (the staff test)
        assert crawler.unseen(hostile.sent[spec.code]) == [], spec.label
    print(
        f"\n{crawler.visited} public pages in {took:.1f} s; refused by a write path: "
        f"{', '.join(REFUSED) or 'none'}"
    )


def _sign_in(page, base: str, email: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit], form input[type=submit]")
    page.wait_for_load_state()


def test_every_stored_payload_runs_nothing_on_the_staff_pages(browser, page_log, hostile):
    seen = Crawler.__new__(Crawler)
    shown: list[str] = []
    for email, paths in STAFF_PATHS.items():
        page = _new_page(browser, hostile.url, page_log)
        try:
            _sign_in(page, hostile.url, email)
            crawler = Crawler(page, page_log)
            for path in paths:
                crawler.visit(hostile.url + path)
            shown += crawler.shown
        finally:
            page.context.close()
    seen.shown = shown
    assert seen.unseen(hostile.sent["on"]) == [], "observation notes on the agency's page"
    assert seen.unseen(hostile.sent["wj"]) == [], "work titles on the agency's works page"
    assert seen.unseen(hostile.sent["cb"]) == [], "reported comments in the officials' queue"
    assert seen.unseen(hostile.sent["ch"]) == [], "challenges on the agency's tab"


# --- query strings -----------------------------------------------------------------------

# Each page and the query parameters it reads (the 400 pages included).
QUERY_PAGES = {
    "/": ["status", "result", "dim.age", "after"],
    "/places/opawa": ["date", "result", "status", "after"],
    "/streets/{street}": ["after"],
    "/results/housing": ["sort", "order", "date"],
    "/measures/homes-repaired": ["place", "date"],
    "/search": ["q"],
    f"/agencies/{WORKS_AGENCY}": ["after"],
    "/login": ["next"],
    "/exports/rollup.csv": ["date"],
    "/report": ["q", "lat"],
    "/reports": ["page"],
}


def _query_urls(city: Hostile) -> list[str]:
    """Every page x parameter x payload."""
    return [
        f"{path.format(street=city.streets[0])}?{urlencode({param: payload})}"
        for path, params in QUERY_PAGES.items()
        for param in params
        for payload in instances("q").values()
    ]


def _answer(url: str) -> tuple[int, str]:
    try:
        with urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def _pool(page, log, size: int) -> list:
    """`page` and size - 1 more pages in its context, logging to `log` like the first."""
    pages = [page]
    for _ in range(size - 1):
        extra = page.context.new_page()
        extra.on("console", lambda m: m.type == "error" and log.console_errors.append(m.text))
        extra.on("pageerror", lambda error: log.page_errors.append(str(error)))
        pages.append(extra)
    return pages


def test_payloads_in_query_strings_run_nothing(page, page_log, hostile):
    # Only the answers that show the payload back can run it (no script of the site reads
    # the address): every one of those is opened in the browser, a few pages at a time.
    urls = _query_urls(hostile)
    echoing = [u for u in urls if "//q" in _answer(hostile.url + u)[1]]
    dialogs: list[str] = []
    pages = _pool(page, page_log, 4)
    for each in pages:
        each.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for start in range(0, len(echoing), len(pages)):
        batch = list(zip(pages, echoing[start : start + len(pages)], strict=False))
        answers = [
            (each, url, each.goto(hostile.url + url, wait_until="commit")) for each, url in batch
        ]
        for each, url, response in answers:
            each.wait_for_load_state("load")
            assert response.status in (200, 400, 404), (url, response.status)
            ran = each.evaluate(RAN_JS)
            assert ran == {"xss": None, "parsed": []}, f"a payload ran on {url}: {ran}"
    assert not dialogs, dialogs
    # The refusals themselves are the only errors the pages logged.
    page_log.console_errors[:] = [
        e for e in page_log.console_errors if not re.search("status of 40[04]", e)
    ]
    assert not page_log.problems(), page_log.problems()
    print(f"\n{len(echoing)} of {len(urls)} query-string answers show the payload back")


def test_payloads_in_query_strings_come_back_escaped_in_every_answer(hostile):
    # Every page x parameter x payload read as HTTP: no markup comes back as sent.
    for url in _query_urls(hostile):
        status, body = _answer(hostile.url + url)
        assert status in (200, 400, 404), (url, status)
        [(_, payload)] = parse_qsl(url.split("?", 1)[1])
        assert payload not in body or not re.search("[<\"']", payload), url


# --- feeds, exports, API docs ------------------------------------------------------------


ATOM = "{http://www.w3.org/2005/Atom}"


def _markup_problems(markup: str) -> list[str]:
    """Scripts, event handlers and javascript: links in an HTML fragment."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag in ("script", "iframe", "object", "embed"):
                found.append(tag)
            for name, value in attrs:
                if name.startswith("on") or (value or "").strip().lower().startswith("javascript"):
                    found.append(f"{tag} {name}={value}")

    Parser().feed(markup)
    return found


def test_atom_feeds_carry_the_payloads_as_text_with_no_script_elements(hostile):
    import xml.etree.ElementTree as ET

    import feedparser

    paths = [f"/places/{p}.atom" for p in hostile.places] + [
        f"/streets/{s}.atom" for s in hostile.streets
    ]
    titles = set()
    for path in paths:
        with urlopen(hostile.url + path) as answer:
            raw = answer.read()
        assert answer.status == 200
        feed = feedparser.parse(raw)
        assert not feed.bozo, (path, feed.bozo_exception)
        # The raw XML, not feedparser's sanitised reading: a text construct is inert text;
        # an html or xhtml one may hold no script, handler or javascript: link.
        for element in ET.fromstring(raw).iter():
            kind = element.get("type", "text")
            if kind == "html":
                assert _markup_problems(element.text or "") == [], (path, element.text)
            elif kind == "xhtml":
                inner = "".join(ET.tostring(child, encoding="unicode") for child in element)
                assert _markup_problems(inner) == [], (path, inner)
            href = element.get("href", "")
            assert not href.strip().lower().startswith("javascript"), (path, href)
        titles |= {_normal(entry.get("title", "")) for entry in feed.entries}
    everything = "\n".join(titles)
    missing = [n for n, t in hostile.sent["wj"].items() if _normal(t) not in everything]
    assert missing == [], missing


FORMULA = re.compile(r"^[=+\-@\t\r]")


def test_csv_exports_hold_the_payloads_and_no_cell_starts_a_formula(hostile):
    for path in ("/exports/observations.csv", "/exports/revisions.csv", "/exports/rollup.csv"):
        with urlopen(hostile.url + path) as answer:
            text = answer.read().decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) > 1, path
        cells = [cell for row in rows[1:] for cell in row]
        bad = [c for c in cells if FORMULA.match(c) and not _number(c)]
        assert bad == [], (path, bad[:5])


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_geojson_exports_keep_the_payloads_as_plain_strings(hostile):
    with urlopen(hostile.url + "/exports/works.geojson") as answer:
        works = json.load(answer)
    titles = {f["properties"].get("title") for f in works["features"]}
    assert set(hostile.sent["wj"].values()) <= titles
    with urlopen(hostile.url + "/exports/places.geojson") as answer:
        places = json.load(answer)
    names = {f["properties"].get("name") for f in places["features"]}
    # Names are stored as one line of single spaces (the boundary loader collapses them).
    assert {_normal(name) for name in hostile.sent["pl"].values()} <= names


# --- mail headers --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["to", "subject", "header"])
def test_a_line_break_in_a_mail_header_is_refused_before_it_is_queued(hostile, where):
    payload = PAYLOADS["crlf"]
    values = {"to": "a@example.com", "subject": "Hello", "headers": {"X-Name": "plain"}}
    if where == "header":
        values["headers"] = {"X-Name": payload}
    else:
        values[where] = payload
    with Session(hostile.engine) as session:
        with pytest.raises(TrackerError, match="single line"):
            queue_mail(session, kind="test", body="body", **values)
        session.rollback()


def test_a_stored_mail_with_a_line_break_in_its_subject_is_never_built(hostile):
    # A row written around queue_mail (or an old one) meets the same check when sent.
    settings = Settings(database_url="sqlite://", secret_key="x", _env_file=None)
    from tracker.models import utcnow

    mail = OutboxMail(id=1, kind="test", to_address="a@example.com",
                      subject=PAYLOADS["crlf"], body="body", created_at=utcnow())  # fmt: skip
    with pytest.raises(TrackerError):
        build_message(mail, settings)
    clean = OutboxMail(id=2, kind="test", to_address="a@example.com", subject="Hi",
                       body=PAYLOADS["crlf"], created_at=utcnow())  # fmt: skip
    message = build_message(clean, settings).as_string()
    head = message.split("\r\n\r\n", 1)[0]
    assert "Bcc:" not in head and "victim@example.com" not in head


# --- alerts, their mails and the "your data" page -------------------------------------

RESIDENT = "resident@example.com"


def _breaks(text: str) -> bool:
    return any(mark in text for mark in ("\r", "\n", "\u2028", "\u2029", "\x85"))


SAFE_HEADERS = {
    "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "List-Unsubscribe", "List-Unsubscribe-Post", "Auto-Submitted",
}  # fmt: skip


def test_participation_mails_about_hostile_places_and_works_inject_no_header(hostile):
    """Comment, challenge and report mails name hostile places and works in their
    subjects and quote hostile text in their bodies: every one builds with safe headers."""
    with Session(hostile.engine) as session:
        mails = session.scalars(select(OutboxMail).where(OutboxMail.kind.notlike("alert%"))).all()
    kinds = {mail.kind for mail in mails}
    wanted = {"comment.received", "comment.published", "challenge.received",
              "challenge.agency", "challenge.answered", "report.received"}  # fmt: skip
    assert wanted <= kinds, kinds
    for mail in mails:
        message = build_message(mail, hostile.settings)
        assert set(message.keys()) <= SAFE_HEADERS, (mail.kind, message.keys())
        assert not _breaks(message["Subject"]), mail.subject


def test_alerts_for_hostile_areas_inject_no_header_and_run_nothing_on_the_resident_pages(
    browser, page_log, hostile
):
    from tracker.alerts import request_alert, token
    from tracker.atom import find_area
    from tracker.models import Subscription
    from tracker.residents import resident_key

    areas = [("place", p) for p in hostile.places] + [("street", s) for s in hostile.streets]
    refused = []
    with Session(hostile.engine) as session:
        for kind, area_id in areas:
            area = find_area(session, kind, area_id)
            try:
                request_alert(session, area, RESIDENT, settings=hostile.settings)
                session.commit()
            except TrackerError as error:
                session.rollback()
                refused.append((area.name, str(error)))
        mails = session.scalars(select(OutboxMail).where(OutboxMail.to_address == RESIDENT)).all()
        built = [build_message(mail, hostile.settings) for mail in mails]
        confirm_links = [
            f"/alerts/confirm/{token(sub, 'confirm', hostile.settings)}"
            for sub in session.scalars(select(Subscription).where(Subscription.email == RESIDENT))
        ]
    # Only a name holding a line break is refused, as a header it would have broken.
    assert all(_breaks(name) for name, _ in refused), refused
    assert all("single line" in message for _, message in refused), refused
    assert len(mails) == len(areas) - len(refused) > 0
    for message in built:
        assert set(message.keys()) <= SAFE_HEADERS, message.keys()
        assert message["To"] == RESIDENT
    page = _new_page(browser, hostile.url, page_log)
    try:
        crawler = Crawler(page, page_log)
        for path in confirm_links[:10]:
            crawler.visit(hostile.url + path)
        crawler.visit(hostile.url + f"/me/{resident_key(RESIDENT, settings=hostile.settings)}")
    finally:
        page.context.close()
    followed = {n: t for n, t in hostile.sent["pl"].items() if not _breaks(t)}
    assert crawler.unseen(followed) == [], "place names on the your-data page"


def test_payloads_as_an_email_on_the_follow_forms_are_refused_and_run_nothing(
    page, page_log, hostile
):
    # Each hostile place's and street's follow form (its name in the page), sent with a
    # payload as the address: form.submit() skips the browser's own checks, as a script
    # or curl would. The refusal shows the address back in the field, as text.
    crawler = Crawler(page, page_log)
    sent = instances("em", 254)
    areas = [f"/places/{p}" for p in hostile.places] + [f"/streets/{s}" for s in hostile.streets]
    echoed = []
    for i, payload in enumerate(sent.values()):
        crawler.visit(hostile.url + areas[i % len(areas)] + "/follow")
        with page.expect_navigation():
            page.evaluate(
                """(value) => {
                    const form = document.querySelector("form.follow-form");
                    form.querySelector("input[name=email]").value = value;
                    form.submit();
                }""",
                payload,
            )
        ran = page.evaluate(RAN_JS)
        assert ran == {"xss": None, "parsed": []}, (payload, ran)
        assert not crawler.dialogs, crawler.dialogs
        value = page.evaluate("() => document.querySelector('input[name=email]')?.value")
        echoed.append(value)
        # The refusal itself (400; 429 once the shared limiter counts these posts).
        refused = [e for e in page_log.console_errors if re.search("status of 4(00|29)", e)]
        assert len(refused) == 1, (payload, page_log.console_errors)
        page_log.console_errors.remove(refused[0])
    assert not page_log.problems(), page_log.problems()
    # The field shows what was sent (a browser drops line breaks from an email input).
    kept = [v for v, p in zip(echoed, sent.values(), strict=True) if v == p or v is None]
    assert len(kept) >= len(sent) - 2, echoed


# --- the detector itself ---------------------------------------------------------------

# Pasted raw into a page with no policy, or into a template literal that goes to innerHTML
# (as Folium does with tooltips), these payloads run: the crawl's checks see each one.
RUN_WHEN_RAW = {
    "script-breakout", "img-onerror", "svg-onload", "details-ontoggle", "template",
    "backtick", "unicode-escape", "hex-escape", "textarea", "comment", "title",
    "style-breakout", "separators", "outside-request", "anchor", "json-breakout", "mutation",
    "iframe-srcdoc", "crlf", "long",
}  # fmt: skip


def test_the_checks_see_every_payload_that_runs_unescaped_and_none_after_map_text(
    browser, page_log
):
    from tracker.maps import map_text

    dialogs: list[str] = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    outside: list[str] = []
    page.route("http://203.0.113.9/**", lambda route: (outside.append(1), route.abort()))

    def runs(text: str) -> bool:
        dialogs.clear()
        outside.clear()
        page.goto("about:blank")  # a new window: nothing set by the last payload remains
        page.set_content(
            f"<html><body><div id=a>{text}</div><div id=b></div>"
            f"<script>document.getElementById('b').innerHTML = `{text}`;</script>"
            "</body></html>"
        )
        page.wait_for_timeout(50)
        ran = page.evaluate(RAN_JS)
        return bool(ran["xss"] or ran["parsed"] or dialogs or outside)

    try:
        raw = {name for name, payload in PAYLOADS.items() if runs(payload)}
        escaped = {name for name, payload in PAYLOADS.items() if runs(map_text(payload))}
    finally:
        page.close()
    assert raw >= RUN_WHEN_RAW, sorted(RUN_WHEN_RAW - raw)
    assert escaped == set(), sorted(escaped)
