"""Reporting a problem, FixMyStreet-style: the no-JavaScript form (by street or by point),
routing to the category's agency, mails, the public pages and map, the agency's tab,
and every refusal."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import shapely
from bs4 import BeautifulSoup
from page_helpers import map_features, map_scripts, page, text
from shapely.geometry import Point
from sqlalchemy import select
from sqlmodel import Session
from staff_helpers import add_user, csrf_token, sign_in

from tracker import reports
from tracker.errors import TrackerError
from tracker.models import AuditEvent, OutboxMail, Place, RateCounter, Report, ReportCategory
from tracker.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "tiny_city"
EMAIL = "ana.reporter@example.org"
CATEGORIES = """
report_categories:
  - code: pothole
    name: Pothole or damaged road surface
    description: Holes, cracks or sunken patches in a road.
    agency: council
    group: Roads
    keywords: [road, pothole]
  - code: home-repair
    name: Concern about a home repair
    description: An EQC repair that is unfinished or faulty.
    agency: eqc
    group: Homes
  - code: old-thing
    name: Something no longer reported
    agency: council
"""


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """The tiny city with report categories (its own copy: other tests keep theirs)."""
    tree = (FIXTURES / "tree.yaml").read_text(encoding="utf-8")
    for name in ("neighbourhoods.geojson", "streets.geojson"):
        tree = tree.replace(f": {name}", f": {FIXTURES / name}")
    path = tmp_path / "tree.yaml"
    path.write_text(tree + CATEGORIES, encoding="utf-8")
    return Settings(
        database_url=database_url,
        tree=path,
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        map_tiles="",
        _env_file=None,
    )


@pytest.fixture
def staff(app):
    """An account at each agency, and the category "old-thing" retired."""
    add_user(app, "council.staff@example.org", agency_id="council")
    add_user(app, "eqc.staff@example.org", agency_id="eqc")
    with Session(app.extensions["engine"]) as session:
        session.get(ReportCategory, "old-thing").retired_at = datetime.now(UTC)
        session.commit()


def rows(app, model, *where):
    with Session(app.extensions["engine"]) as session:
        order = [model.id] if hasattr(model, "id") else []
        return session.scalars(select(model).where(*where).order_by(*order)).all()


def mails(app, kind=None):
    return rows(app, OutboxMail, *([OutboxMail.kind == kind] if kind else []))


def what_page(client, **where):
    """Step 2 for a street (`street=ID`) or a point (`lat=, lon=`), through step 1's forms."""
    query = "&".join(f"{k}={v}" for k, v in where.items())
    return page(client, f"/report?{query}")


def send(client, fields=None, **where):
    """Fill in step 2 as a resident would and POST it; the response."""
    where = where or {"street": "opawa-road"}
    soup = what_page(client, **where)
    form = soup.find("form", method="post")
    data = {tag["name"]: tag.get("value", "") for tag in form.find_all("input", type="hidden")}
    data |= {"category_code": "pothole", "description": "A deep hole\r\nby the bus stop.",
             "name": "Ana", "email": EMAIL, **(fields or {})}  # fmt: skip
    return client.post("/report", data=data)


# --- the whole flow -------------------------------------------------------------------------


def test_a_street_through_two_neighbourhoods_asks_which_part(app, client):
    soup = what_page(client, street="opawa-road")  # through Ōpāwa and St Albans
    fieldset = soup.select_one("fieldset#report-street_part")
    assert text(fieldset.legend) == "Which part of Ōpāwa Road?"
    choices = {r["value"]: r.has_attr("checked") for r in fieldset.select("input[type=radio]")}
    assert set(choices) == {"opawa", "st-albans"}
    assert list(choices.values()).count(True) == 1  # where its midpoint lies, to start with
    other = next(part for part, checked in choices.items() if not checked)
    assert send(client, {"street_part": other}).status_code == 200
    (report,) = rows(app, Report)
    assert (report.place_id, report.address) == (other, "Ōpāwa Road")
    with Session(app.extensions["engine"]) as session:
        area = shapely.from_geojson(session.get(Place, other).geometry)
    assert area.covers(Point(report.lon, report.lat))  # on the street, in that part


def test_a_part_the_street_does_not_run_through_is_refused(app, client):
    response = send(client, {"street_part": "riccarton"})
    assert response.status_code == 400
    assert "Ōpāwa Road does not run through that neighbourhood" in page_text(response)
    assert rows(app, Report) == []


def test_a_street_in_one_neighbourhood_asks_nothing_more(client):
    soup = what_page(client, street="riccarton-avenue")
    assert soup.select_one("fieldset#report-street_part") is None


def test_a_resident_reports_by_street_without_javascript(app, client, staff):
    # Step 1: type a street name; the matches come back as radio buttons in a GET form.
    soup = page(client, "/report?q=opawa rd")  # the hint's example, abbreviated
    radios = soup.select('input[type=radio][name="street"]')
    assert [r["value"] for r in radios] == ["opawa-road"]
    label = radios[0].find_parent("label")
    assert "Ōpāwa Road" in text(label) and "Ōpāwa" in text(label)
    assert radios[0].find_parent("form")["method"] == "get"
    assert soup.find("legend", string=re.compile("Find the street"))
    # Step 2: categories grouped in fieldsets with their descriptions; every field labelled.
    soup = what_page(client, street="opawa-road")
    assert "Ōpāwa Road" in text(soup.find("section"))
    legends = [text(legend) for legend in soup.select("form fieldset fieldset legend")]
    assert legends == ["Roads", "Homes"]  # the retired category's group is gone
    pothole = soup.find("input", value="pothole")
    assert "Holes, cracks" in text(soup.find(id=pothole["aria-describedby"]))
    assert soup.find("input", value="old-thing") is None
    form = soup.find("form", method="post")
    for field in form.select("textarea, input:not([type=hidden]):not([type=radio])"):
        if field["name"] != "website":  # the honeypot's label wraps it
            assert form.find("label", attrs={"for": field["id"]}), field
    for radio in form.select("input[type=radio]"):
        assert radio.find_parent("label") and radio.find_parent("fieldset").legend
    response = send(client)
    assert response.status_code == 200
    sent = page_text(response)
    assert "Report 1 has gone to City Council" in sent
    (report,) = rows(app, Report)
    assert (report.agency_id, report.place_id, report.address, report.source) == (
        "council", "opawa", "Ōpāwa Road", "web")  # fmt: skip
    assert report.description == "A deep hole\nby the bus stop."
    assert 172.601 < report.lon < 172.615 and report.lat == pytest.approx(-43.535)
    # The council's staff hear of it (not the EQC's), without the resident's address.
    (agency_mail,) = mails(app, "report.agency")
    assert agency_mail.to_address == "council.staff@example.org"
    assert EMAIL not in agency_mail.body and "Ana" not in agency_mail.body
    assert "/agency/reports" in agency_mail.body and "A deep hole" in agency_mail.body
    # The reporter gets an acknowledgement with the report's link and the "your data" link.
    (ack,) = mails(app, "report.received")
    assert ack.to_address == EMAIL
    assert "http://127.0.0.1:8000/reports/1" in ack.body
    assert re.search(r"http://127\.0\.0\.1:8000/me/\S+", ack.body)


def page_text(response) -> str:
    return text(BeautifulSoup(response.get_data(as_text=True), "html.parser"))


def test_a_resident_reports_by_point_and_it_shows_everywhere(app, client, staff):
    soup = page(client, "/report?lat=-43.525&lon=172.605")  # a map link's address
    assert "Riccarton" in text(soup.find("section"))
    assert send(client, {"category_code": "home-repair", "name": ""},
                lat="-43.525", lon="172.605").status_code == 200  # fmt: skip
    (report,) = rows(app, Report)
    assert (report.agency_id, report.place_id, report.address, report.name) == (
        "eqc", "riccarton", None, "")  # fmt: skip
    assert [m.to_address for m in mails(app, "report.agency")] == ["eqc.staff@example.org"]
    # Its public page.
    soup = page(client, f"/reports/{report.id}")
    body = text(soup)
    assert "Concern about a home repair" in body and "Open" in body
    assert "Earthquake Commission" in body and "Riccarton" in body
    assert "A deep hole by the bus stop." in body
    assert soup.find("p", class_="report-text").get_text() == "A deep hole\nby the bus stop."
    # The list of reports.
    listed = page(client, "/reports")
    assert listed.find("a", href=f"/reports/{report.id}")
    # The place's page: a link to report there, the report listed, and on the map.
    soup = page(client, "/places/riccarton")
    assert soup.find("a", href="/report?place=riccarton")
    assert soup.select_one("#reports").find("a", href=f"/reports/{report.id}")
    (script,) = map_scripts(soup)
    (feature,) = [f for f in map_features(script) if f.get("id") == f"report-{report.id}"]
    assert feature["properties"]["status"] == "Open report"
    assert f'<a href="/reports/{report.id}">' in feature["properties"]["link"]
    assert feature["geometry"]["coordinates"] == [172.605, -43.525]
    # The area above it shows it too; a neighbour does not.
    assert any(f.get("id") == f"report-{report.id}"
               for f in map_features(map_scripts(page(client, "/places/central"))[0]))  # fmt: skip
    opawa = map_features(map_scripts(page(client, "/places/opawa"))[0])
    assert not any(f.get("id", "").startswith("report-") for f in opawa)


def test_the_place_and_street_pages_start_a_report_there(app, client):
    soup = page(client, "/report?place=opawa")
    lat, lon = soup.find("input", id="report-lat"), soup.find("input", id="report-lon")
    assert (lat["value"], lon["value"]) != ("", "")
    assert "The middle of Ōpāwa" in text(soup)
    # A street search from there stays "in Ōpāwa" (the heading says so).
    assert soup.find("input", attrs={"name": "place", "type": "hidden"})["value"] == "opawa"
    assert "in Ōpāwa" in text(page(client, "/report?place=opawa&q=opawa").h1)
    street = page(client, "/streets/opawa-road")
    assert street.find("a", href="/report?street=opawa-road")
    nav = page(client, "/").find("nav", class_="site")
    assert nav.find("a", href="/report")


def test_the_agency_closes_a_report_with_notes(app, client, staff):
    send(client)
    (report,) = rows(app, Report)
    agency = app.test_client()
    sign_in(agency, "council.staff@example.org")
    soup = page(agency, "/agency/reports")
    article = soup.find("article", id=f"report-{report.id}")
    assert "A deep hole" in text(article) and "from Ana" in text(article)
    assert EMAIL not in str(soup)
    assert soup.find("nav", class_="tabs").find("a", href="/agency/reports")
    token = csrf_token(agency, "/agency/reports")
    closing = {
        "status": "closed",
        "notes": "Filled on 3 December.\nThank you.",
        "csrf_token": token,
    }
    response = agency.post(f"/agency/reports/{report.id}", data=closing)
    assert response.status_code == 303
    soup = page(client, f"/reports/{report.id}")
    assert "Closed" in text(soup) and "Filled on 3 December." in text(soup)
    assert "updated" in text(soup.find("dl"))
    (update,) = mails(app, "report.update")
    assert update.to_address == EMAIL and "Status: closed" in update.body
    assert "Filled on 3 December." in update.body and "/me/" in update.body
    (event,) = rows(app, AuditEvent, AuditEvent.action == "report.update")
    assert (event.old["status"], event.new["status"], event.agency_id) == ("open", "closed",
                                                                           "council")  # fmt: skip
    # The map shows it closed; the agency's list puts open reports first.
    (feature,) = [f for f in map_features(map_scripts(page(client, "/places/opawa"))[0])
                  if f.get("id") == f"report-{report.id}"]  # fmt: skip
    assert feature["properties"]["status"] == "Closed report"
    # Saving the same again changes nothing and mails nobody.
    agency.post(f"/agency/reports/{report.id}", data=closing)
    assert len(mails(app, "report.update")) == 1


def test_another_agency_cannot_update_a_report(app, client, staff):
    send(client)
    (report,) = rows(app, Report)
    other = app.test_client()
    sign_in(other, "eqc.staff@example.org")
    assert "A deep hole" not in page(other, "/agency/reports").get_text()
    token = csrf_token(other, "/agency/reports")
    response = other.post(f"/agency/reports/{report.id}",
                          data={"status": "closed", "notes": "", "csrf_token": token})  # fmt: skip
    assert response.status_code == 403
    assert rows(app, Report)[0].status == "open"
    assert other.post("/agency/reports/999", data={"status": "closed", "csrf_token": token}
                      ).status_code == 404  # fmt: skip
    assert client.get("/agency/reports").status_code == 303  # anonymous: to the sign-in page


def test_the_agency_is_told_of_a_bad_status(app, client, staff):
    send(client)
    agency = app.test_client()
    sign_in(agency, "council.staff@example.org")
    token = csrf_token(agency, "/agency/reports")
    response = agency.post("/agency/reports/1", data={"status": "fixed", "notes": "x" * 10,
                                                       "csrf_token": token})  # fmt: skip
    assert response.status_code == 400
    assert "Choose open or closed." in page_text(response)
    assert rows(app, Report)[0].status == "open"


# --- refusals ---------------------------------------------------------------------------


# Each refusal as (what is sent, the field it is shown next to, words of the message).
FIELD_REFUSALS = [
    ({"category_code": "nope"}, "category_code", "Choose the kind of problem"),
    ({"category_code": "old-thing"}, "category_code", "Choose the kind of problem"),  # retired
    ({"category_code": ""}, "category_code", "Choose the kind of problem"),
    ({"description": "   "}, "description", "Describe the problem."),
    ({"description": "x" * 2001}, "description", "keep it to 2,000"),
    ({"description": "a\x07b"}, "description", "control character"),
    ({"name": "n" * 101}, "name", "keep it to 100"),
    ({"name": "Ana\nB"}, "name", "single line"),
    ({"email": "not-an-email"}, "email", "Enter an email address"),
    ({"email": ""}, "email", "Enter your email address"),
    ({"email": "a@b.org\r\nBcc: x@y.org"}, "email", "single line"),
    ({"email": "a" * 250 + "@b.org"}, "email", "Enter an email address"),
]


def test_refuses_each_bad_field_next_to_it(app, client, staff):
    # One app for every case (a loop, not a parametrize: an app per case took 20 s).
    for fields, field, message in FIELD_REFUSALS:
        response = send(client, fields)
        assert response.status_code == 400, fields
        soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
        assert message in text(soup.find(id="report-error")), fields
        target = soup.find(id=f"report-{field}")
        assert "report-error" in target["aria-describedby"], fields
        assert target["aria-invalid"] == "true", fields
        # the summary links to the field
        assert soup.find(id="report-error").find("a", href=f"#report-{field}"), fields
        if field == "description" and fields[field].strip():  # what was typed is kept
            assert soup.find("textarea", id="report-description").get_text() == fields[field]
    assert rows(app, Report) == [] and mails(app) == []


LOCATION_REFUSALS = [
    ("lat=-41.29&lon=174.78", "outside the city"),  # Wellington
    ("lat=0&lon=0", "outside the city"),
    ("lat=nan&lon=172.6", "must be numbers"),
    ("lat=inf&lon=172.6", "must be numbers"),
    ("lat=abc&lon=172.6", "must be numbers"),
    ("lat=-43.53", "both the latitude and the longitude"),
    ("street=no-such-street", "not one the tracker knows"),
    ("street=opawa-road&lat=-43.535&lon=172.605", "not both"),
]


def test_refuses_each_bad_location_at_step_one(app, client):
    for query, message in LOCATION_REFUSALS:
        response = client.get(f"/report?{query}")
        assert response.status_code == 400, query
        assert message in page_text(response), query
        assert "Find the street" in page_text(response), query


@pytest.mark.parametrize(
    "where",
    [
        {"street": "opawa-road", "lat": "-43.535", "lon": "172.605"},
        {},
        {"lat": "-41.29", "lon": "174.78"},
    ],
    ids=["both", "neither", "outside the city"],
)
def test_refuses_a_bad_location_when_posted(app, client, staff, where):
    data = {"category_code": "pothole", "description": "A hole", "email": EMAIL,
            "csrf_token": csrf_token(client, "/report?street=opawa-road"), **where}  # fmt: skip
    response = client.post("/report", data=data)
    assert response.status_code == 400
    assert rows(app, Report) == [] and mails(app) == []


def test_the_honeypot_answers_as_if_sent_and_stores_nothing(app, client, staff):
    response = send(client, {"website": "http://spam.example"})
    assert response.status_code == 200 and "Thank you" in page_text(response)
    assert rows(app, Report) == [] and mails(app) == [] and rows(app, RateCounter) == []


def test_a_post_without_the_csrf_token_is_refused(app, client, staff):
    response = client.post("/report", data={"street": "opawa-road", "category_code": "pothole",
                                            "description": "A hole", "email": EMAIL})  # fmt: skip
    assert response.status_code == 400
    assert rows(app, Report) == []


def test_a_sixth_report_in_an_hour_is_refused(app, client, staff):
    for _ in range(reports_web().REPORT_LIMIT):
        assert send(client).status_code == 200
    response = send(client)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many reports" in page_text(response)
    assert len(rows(app, Report)) == reports_web().REPORT_LIMIT
    # Another network is not held back.
    other = app.test_client()
    soup = what_page(other, street="opawa-road")
    token = soup.find("input", attrs={"name": "csrf_token"})["value"]
    response = other.post("/report", data={"street": "opawa-road", "category_code": "pothole",
                                           "description": "Another", "email": EMAIL,
                                           "csrf_token": token},
                          environ_base={"REMOTE_ADDR": "10.1.2.3"})  # fmt: skip
    assert response.status_code == 200


def reports_web():
    from tracker.web import reports as web

    return web


def test_the_reporters_email_and_name_are_on_no_page(app, client, staff):
    send(client, {"email": "Secret.Person@Example.org", "name": "Secretive Sam"})
    send(client, {"email": "secret.person@example.org", "name": "Secretive Sam"},
         lat="-43.525", lon="172.605")  # fmt: skip
    pages = ["/reports", "/reports/1", "/reports/2", "/places/opawa", "/places/riccarton",
             "/places/central", "/streets/opawa-road", "/"]  # fmt: skip
    for path in pages:
        soup = page(client, path)
        html = str(soup) + "".join(map_scripts(soup))
        assert "secret.person" not in html.lower(), path
        assert "Secretive Sam" not in html, path
    agency = app.test_client()
    sign_in(agency, "council.staff@example.org")
    assert "secret.person" not in agency.get("/agency/reports").get_data(as_text=True).lower()


def test_user_text_is_escaped_on_pages_and_in_the_map(app, client, staff):
    payload = "<img src=x onerror=alert(1)>${alert(2)}`</script>"
    send(client, {"description": payload})
    html = client.get("/reports/1").get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_reports_list_is_paged(app, client, staff):
    with Session(app.extensions["engine"]) as session:
        for n in range(reports_web().PAGE_SIZE + 3):
            reports.submit_report(session, category_code="pothole", description=f"Hole {n}",
                                  email=None, source="open311", lon=172.605, lat=-43.535,
                                  settings=app.config["SETTINGS"])  # fmt: skip
        session.commit()
    first = page(client, "/reports")
    assert len(first.select("table.reports tbody tr")) == reports_web().PAGE_SIZE
    assert first.find("a", rel="next")["href"] == "/reports?page=2"
    second = page(client, "/reports?page=2")
    assert len(second.select("table.reports tbody tr")) == 3
    assert "Hole 0" not in second.get_text()  # page 2 holds the oldest, by number
    assert second.find("a", href="/reports/1")
    page(client, "/reports?page=3", 404)
    page(client, "/reports?page=x", 400)
    page(client, "/reports/999", 404)


# --- the write path itself (what the Open311 layer calls) --------------------------------------


def test_submit_report_from_open311_needs_no_email_and_names_refused_fields(app):
    settings = app.config["SETTINGS"]
    with Session(app.extensions["engine"]) as session:
        saved = reports.submit_report(session, category_code="pothole", description="Hole",
                                      email=None, lon=172.605, lat=-43.535, source="open311",
                                      settings=settings)  # fmt: skip
        assert (saved.email, saved.place_id, saved.source) == (None, "opawa", "open311")
        assert session.scalars(select(OutboxMail)).all() == []  # no staff, no reporter
        cases = [
            ({"lon": 172.605, "lat": None}, "lat"),
            ({"lon": None, "lat": None}, "location"),
            ({"street_id": "opawa-road", "lon": 1.0, "lat": 2.0}, "location"),
            ({"lon": float("nan"), "lat": -43.5}, "lat"),
        ]
        for where, field in cases:
            with pytest.raises(TrackerError) as caught:
                reports.submit_report(session, category_code="pothole", description="Hole",
                                      email=None, source="open311", settings=settings,
                                      **where)  # fmt: skip
            assert (caught.value.field, caught.value.status) == (field, 400)
        with pytest.raises(TrackerError) as caught:
            reports.get_report(session, 12345)
        assert caught.value.status == 404
        found = reports.search_reports(session, codes=["pothole"], statuses=["open"])
        assert [r.id for r in found] == [saved.id]
        assert reports.search_reports(session, codes=["home-repair"]) == []
        assert [c.code for c in reports.categories(session)] == [
            "pothole", "home-repair", "old-thing"]  # fmt: skip


# --- mail through a real SMTP server, and the resident's data -----------------------------------


def test_the_mails_go_out_over_smtp_and_name_no_resident_to_the_agency(app, client, staff):
    from smtp_helpers import SmtpServer

    from tracker.mail import deliver

    send(client)
    server = SmtpServer().start()
    try:
        settings = app.config["SETTINGS"].model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_starttls": False}
        )
        assert deliver(app.extensions["engine"], settings) == 2
        received = {tuple(to): message for to, message in server.inbox.messages}
    finally:
        server.stop()
    staff_mail = received[("council.staff@example.org",)]
    ack = received[(EMAIL,)]
    assert staff_mail["Subject"] == "New report 1: Pothole or damaged road surface"
    assert EMAIL not in staff_mail.as_string() and "Ana" not in staff_mail.get_content()
    assert ack["Subject"] == "Your report 1: Pothole or damaged road surface"
    assert "/reports/1" in ack.get_content() and "/me/" in ack.get_content()


def test_forgetting_the_resident_keeps_the_report_without_its_email(app, client, staff):
    from tracker.residents import email_for_key, forget

    send(client)
    link = re.search(r"/me/(\S+)", mails(app, "report.received")[0].body).group(1)
    with Session(app.extensions["engine"]) as session:
        assert email_for_key(session, link) == EMAIL
        forget(session, EMAIL)
        session.commit()
    (report,) = rows(app, Report)
    assert (report.email, report.description) == (None, "A deep hole\nby the bus stop.")
    assert page(client, "/reports/1").find("p", class_="report-text")
    # The agency can still close it; with no email, nobody is mailed.
    with Session(app.extensions["engine"]) as session:
        reports.update_report(session, 1, agency_id="council", user_id=None, status="closed",
                              status_notes="Done", settings=app.config["SETTINGS"])  # fmt: skip
        session.commit()
    assert mails(app, "report.update") == []


# --- hiding a report --------------------------------------------------------------------


def public_traces(client, report_id: int) -> dict[str, bool]:
    """Where the report shows to the public: its page, the list, the place's list and map,
    Open311 by id and in lists."""
    soup = page(client, "/places/opawa")
    features = map_features(map_scripts(soup)[0])
    listed = client.get("/open311/v2/requests.json").get_json()
    by_id = client.get(f"/open311/v2/requests.json?service_request_id={report_id}").get_json()
    return {
        "page": client.get(f"/reports/{report_id}").status_code == 200,
        "list": bool(page(client, "/reports").find("a", href=f"/reports/{report_id}")),
        "place": bool(soup.select_one("#reports").find("a", href=f"/reports/{report_id}")),
        "map": any(f.get("id") == f"report-{report_id}" for f in features),
        "open311": client.get(f"/open311/v2/requests/{report_id}.json").status_code == 200,
        "open311 list": any(r["service_request_id"] == str(report_id) for r in listed),
        "open311 ids": any(r["service_request_id"] == str(report_id) for r in by_id),
    }


def agency_post(agency, path, data):
    return agency.post(path, data={"csrf_token": csrf_token(agency, "/agency/reports"), **data})


def test_the_agency_hides_a_report_and_shows_it_again(app, client, staff):
    send(client, {"description": "My neighbour Bob (021 555 0199) dug this hole."})
    send(client, {"description": "Another hole."})
    first, _second = rows(app, Report)
    agency = app.test_client()
    sign_in(agency, "council.staff@example.org")
    close = {"status": "closed", "notes": "Filled."}
    assert agency_post(agency, f"/agency/reports/{first.id}", close).status_code == 303
    assert all(public_traces(client, first.id).values())  # and the pages are now cached
    sent = len(mails(app))
    response = agency_post(agency, f"/agency/reports/{first.id}/hide",
                           {"reason": "Names a neighbour with his phone number."})  # fmt: skip
    assert response.status_code == 303
    assert not any(public_traces(client, first.id).values())
    assert public_traces(client, _second.id)["page"]
    assert client.get(f"/reports/{first.id}").status_code == 404
    assert "021 555 0199" not in client.get("/reports").get_data(as_text=True)
    (hidden,) = rows(app, Report, Report.id == first.id)
    assert hidden.status == "hidden" and hidden.updated_at > first.updated_at
    (event,) = rows(app, AuditEvent, AuditEvent.action == "report.hide")
    assert event.old == {"status": "closed"} and event.user_id is not None
    assert event.new == {"status": "hidden", "reason": "Names a neighbour with his phone number."}
    assert len(mails(app)) == sent  # the reporter is not mailed the text again
    # The agency's tab still lists it, marked, with a way back and no status form.
    soup = page(agency, "/agency/reports")
    article = soup.find("article", id=f"report-{first.id}")
    assert "Hidden" in text(article) and "021 555 0199" in text(article)
    assert article.find("form", action=f"/agency/reports/{first.id}/unhide")
    assert not article.find("form", action=f"/agency/reports/{first.id}")
    assert "of 2" in text(soup)
    # Its status cannot change while hidden (409, shown on the tab), and nobody is mailed.
    response = agency_post(agency, f"/agency/reports/{first.id}", {"status": "open", "notes": ""})
    assert response.status_code == 409 and "show it again" in response.get_data(as_text=True)
    assert rows(app, Report, Report.id == first.id)[0].status == "hidden"
    assert len(mails(app)) == sent
    # Shown again: with the status it had, everywhere again.
    assert agency_post(agency, f"/agency/reports/{first.id}/unhide", {}).status_code == 303
    assert rows(app, Report, Report.id == first.id)[0].status == "closed"
    assert all(public_traces(client, first.id).values())
    assert len(mails(app)) == sent


def test_hiding_is_refused_without_a_reason_csrf_or_the_agency(app, client, staff):
    send(client)
    (report,) = rows(app, Report)
    agency = app.test_client()
    sign_in(agency, "council.staff@example.org")
    response = agency_post(agency, f"/agency/reports/{report.id}/hide", {"reason": "  "})
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    article = soup.find("article", id=f"report-{report.id}")
    assert "Say why" in text(article.find(class_="error"))
    assert article.find("textarea", id=f"report-{report.id}-notes") is not None
    too_long = agency_post(agency, f"/agency/reports/{report.id}/hide", {"reason": "x" * 1001})
    assert too_long.status_code == 400
    assert agency.post(f"/agency/reports/{report.id}/hide",
                       data={"reason": "No token."}).status_code == 400  # fmt: skip
    other = app.test_client()
    sign_in(other, "eqc.staff@example.org")
    assert agency_post(other, f"/agency/reports/{report.id}/hide",
                       {"reason": "Not mine."}).status_code == 403  # fmt: skip
    assert agency_post(other, "/agency/reports/999/hide", {"reason": "None."}).status_code == 404
    assert client.post(f"/agency/reports/{report.id}/hide").status_code in (303, 400)
    assert rows(app, Report)[0].status == "open"
    assert rows(app, AuditEvent, AuditEvent.action == "report.hide") == []
    # Another agency cannot show a hidden one again either.
    with Session(app.extensions["engine"]) as session:
        reports.hide_report(session, report.id, reason="Abuse.", user_id=None)
        session.commit()
    assert agency_post(other, f"/agency/reports/{report.id}/unhide", {}).status_code == 403
    assert rows(app, Report)[0].status == "hidden"


def test_an_official_hides_any_report_on_admin(app, client, staff):
    send(client)
    (report,) = rows(app, Report)
    add_user(app, "official@example.org", role="official", agency_id=None)
    official = app.test_client()
    sign_in(official, "official@example.org")
    assert "No report is hidden" in text(page(official, "/admin/reports"))
    token = csrf_token(official, "/admin/reports")
    refused = [({"report": "12a", "reason": "Abuse."}, 400, "number"),
               ({"report": "999", "reason": "Abuse."}, 404, "no report 999"),
               ({"report": str(report.id), "reason": ""}, 400, "Say why")]  # fmt: skip
    for data, status, message in refused:
        response = official.post("/admin/reports/hide", data={"csrf_token": token, **data})
        assert response.status_code == status and message in response.get_data(as_text=True)
    no_token = {"report": str(report.id), "reason": "Abuse."}
    assert official.post("/admin/reports/hide", data=no_token).status_code == 400
    assert official.post("/admin/reports/999/unhide", data={"csrf_token": token}).status_code == 404
    assert rows(app, Report)[0].status == "open"
    response = official.post("/admin/reports/hide", data={
        "csrf_token": token, "report": str(report.id), "reason": "Abusive."})  # fmt: skip
    assert response.status_code == 303
    assert client.get(f"/reports/{report.id}").status_code == 404
    soup = page(official, "/admin/reports")
    assert soup.find("article", id=f"report-{report.id}")
    (event,) = rows(app, AuditEvent, AuditEvent.action == "report.hide")
    assert event.new["reason"] == "Abusive." and event.agency_id == "council"
    # Staff of an agency cannot use the official's page.
    agency = app.test_client()
    sign_in(agency, "council.staff@example.org")
    assert agency.get("/admin/reports").status_code in (302, 303, 403)
    response = official.post(f"/admin/reports/{report.id}/unhide", data={"csrf_token": token})
    assert response.status_code == 303
    assert client.get(f"/reports/{report.id}").status_code == 200
    assert rows(app, AuditEvent, AuditEvent.action == "report.unhide")[0].new == {"status": "open"}


@pytest.mark.parametrize("char", ["\u2028", "\u2029"])
def test_line_and_paragraph_separators_are_refused(app, client, staff, char):
    response = send(client, {"description": f"A hole{char}here."})
    assert response.status_code == 400 and "control character" in response.get_data(as_text=True)
    assert rows(app, Report) == []


def test_a_new_report_does_not_say_updated(app, client, staff):
    send(client)
    (report,) = rows(app, Report)
    assert report.updated_at == report.created_at
    assert "updated" not in text(page(client, f"/reports/{report.id}").find("dl"))


def test_forgetting_the_reporter_on_their_page_removes_their_name_too(app, client, staff):
    send(client, {"name": "Ana Reporter-Smith"})
    me = re.search(r"/me/\S+", mails(app, "report.received")[0].body).group(0)
    agency = app.test_client()
    sign_in(agency, "council.staff@example.org")
    assert "from Ana Reporter-Smith" in text(page(agency, "/agency/reports"))
    response = client.post(me + "/delete", data={"everything": "yes",
                                                 "csrf_token": csrf_token(client, me)})  # fmt: skip
    assert response.status_code == 200
    (report,) = rows(app, Report)
    assert (report.email, report.name) == (None, "")
    assert "Ana Reporter-Smith" not in agency.get("/agency/reports").get_data(as_text=True)
    assert page(client, f"/reports/{report.id}").find("p", class_="report-text")
