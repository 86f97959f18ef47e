"""Open311 GeoReport v2 (CONTRACT §8): services, requests GET and POST with an api_key, the
spec's error body, and the `tracker open311` key commands."""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from tracker import create_app, open311
from tracker.models import AuditEvent, Open311Key, Report, ReportCategory, utcnow

V2 = "/open311/v2"
POINT = {"lat": "-43.535", "long": "172.605"}  # in Ōpāwa
EMAIL = "rewi@example.org"
FIRST, LAST = "Rewi", "Tautahi-Quirk"
REQUEST_FIELDS = [
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat",
    "long", "media_url",
]  # fmt: skip


@pytest.fixture
def categories(app):
    """Three categories (one retired), as the tree's report_categories would store them."""
    with Session(app.extensions["engine"]) as session:
        session.add_all(
            [
                ReportCategory(code="pothole", name="Pothole", description="A hole in a road",
                               agency_id="council", group_name="Roads",
                               keywords=["road", "hole"], position=1),
                ReportCategory(code="liquefaction", name="Liquefaction silt",
                               agency_id="eqc", keywords=[], position=0),
                ReportCategory(code="old", name="Retired kind", agency_id="council",
                               position=2, retired_at=utcnow()),
            ]
        )  # fmt: skip
        session.commit()


@pytest.fixture
def key(app):
    with Session(app.extensions["engine"]) as session:
        issued = open311.issue_key(session, "Snap Send Solve")
        session.commit()
    return issued


def post(client, key, **fields):
    data = {"api_key": key, "service_code": "pothole", "description": "Deep hole", **POINT}
    data.update(fields)
    return client.post(f"{V2}/requests.json", data={k: v for k, v in data.items() if v is not None})


def street(field, value):
    """Fields that place a request on a street (by `field`) instead of at a point."""
    return {"lat": None, "long": None, field: value}


def stored(app):
    with Session(app.extensions["engine"]) as session:
        return session.scalars(select(Report).order_by(Report.id)).all()


def set_created(app, report_id, moment):
    with Session(app.extensions["engine"]) as session:
        session.execute(
            update(Report)
            .where(Report.id == report_id)
            .values(created_at=moment, updated_at=moment)
        )
        session.commit()


def assert_error(response, status, *words):
    """The spec's error body: a JSON array of one {code, description}, never HTML."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, list) and len(body) == 1
    assert set(body[0]) == {"code", "description"}
    assert body[0]["code"] == status
    for word in words:
        assert word in body[0]["description"], body[0]["description"]
    return body[0]["description"]


# --- services ---------------------------------------------------------------------------


def test_services_list_the_live_categories_in_the_spec_fields(client, categories):
    response = client.get(f"{V2}/services.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"  # readable from any site
    assert response.get_json() == [
        {"service_code": "liquefaction", "service_name": "Liquefaction silt", "description": "",
         "metadata": False, "type": "realtime", "keywords": "", "group": ""},
        {"service_code": "pothole", "service_name": "Pothole", "description": "A hole in a road",
         "metadata": False, "type": "realtime", "keywords": "road,hole", "group": "Roads"},
    ]  # fmt: skip


def test_a_service_definition_has_no_attributes_and_an_unknown_one_is_a_404(client, categories):
    response = client.get(f"{V2}/services/pothole.json")
    assert response.status_code == 200
    assert response.get_json() == {"service_code": "pothole", "attributes": []}
    for code in ("nope", "old"):  # unknown, retired
        assert_error(client.get(f"{V2}/services/{code}.json"), 404, repr(code))


# --- POST requests.json -----------------------------------------------------------------


def test_a_posted_request_is_stored_for_its_category_agency(app, client, categories, key):
    response = post(client, key, email=EMAIL, first_name=FIRST, last_name=LAST,
                    address_string="outside number 12")  # fmt: skip
    assert response.status_code == 201
    [report] = stored(app)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.get_json() == [
        {
            "service_request_id": str(report.id),
            "service_notice": "Sent to City Council, who will look at it.",
            "account_id": None,
        }
    ]
    assert (report.source, report.category_code, report.agency_id) == (
        "open311",
        "pothole",
        "council",
    )
    assert (report.lat, report.lon, report.place_id) == (-43.535, 172.605, "opawa")
    assert (report.name, report.email, report.address) == (
        f"{FIRST} {LAST}",
        EMAIL,
        "outside number 12",
    )
    with Session(app.extensions["engine"]) as session:
        row = session.scalars(select(Open311Key)).one()
    assert report.open311_key_id == row.id
    assert row.last_used_at is not None and utcnow() - row.last_used_at < timedelta(minutes=1)


def test_a_request_may_be_posted_as_json(app, client, categories, key):
    body = {"api_key": key, "service_code": "liquefaction", "description": "Silt everywhere",
            "lat": -43.535, "long": 172.605}  # fmt: skip
    response = client.post(f"{V2}/requests.json", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    [report] = stored(app)
    assert (report.agency_id, report.email, report.name) == ("eqc", None, "")


def test_a_request_may_name_a_street_instead_of_a_point(app, client, categories, key):
    for fields, street_name in [
        ({"address_string": "Riccarton Avenue"}, "Riccarton Avenue"),
        ({"address_string": "12 riccarton ave, Riccarton"}, "Riccarton Avenue"),
        ({"address_string": "opawa"}, "Ōpāwa Road"),
        ({"address_string": "7 Opawa Rd"}, "Ōpāwa Road"),
        ({"address_id": "riccarton-avenue"}, "Riccarton Avenue"),
    ]:
        response = post(client, key, lat=None, long=None, **fields)
        assert response.status_code == 201, response.get_data(as_text=True)
        assert stored(app)[-1].address == street_name, fields


BAD_REQUESTS = [
    ({"service_code": None}, 400, ["service_code is required"]),
    ({"service_code": "nope"}, 404, ["service_code", "'nope'"]),
    ({"service_code": "old"}, 404, ["service_code", "'old'"]),
    ({"description": None}, 400, ["description:"]),
    ({"description": "x" * 2001}, 400, ["description:", "2,000"]),
    ({"lat": None, "long": None}, 400, ["lat and long, address_string or address_id"]),
    ({"long": None}, 400, ["lat and long go together"]),
    ({"lat": "south"}, 400, ["lat must be a number"]),
    ({"long": "nan"}, 400, ["long must be a number"]),
    ({"lat": "-40.0"}, 400, ["lat/long:", "outside the city"]),
    ({"email": "not an email"}, 400, ["email:"]),
    ({"first_name": "A\nB"}, 400, ["first_name/last_name:"]),
    (street("address_string", "Nowhere Lane"), 400, ["address_string", "no street"]),
    (street("address_string", "School Road"), 400, ["address_string", "several streets"]),
    (street("address_id", "nowhere-lane"), 400, ["address_id:"]),
    (street("address_string", "Road " * 100), 400, ["address_string is longer than 300"]),
    ({"service_code": "x" * 5000}, 404, ["service_code 'xxxx", "…'"]),
    ({"jurisdiction_id": "wellington"}, 400, ["jurisdiction_id", "'wellington'"]),
]  # fmt: skip


def test_a_bad_request_is_refused_naming_its_field(app, client, categories, key):
    for fields, status, words in BAD_REQUESTS:
        assert_error(post(client, key, **fields), status, *words)
    assert stored(app) == []


def test_a_missing_or_unknown_api_key_is_a_403(app, client, categories, key):
    for sent in (None, "", "o311_not-a-key", key.upper()):
        assert_error(post(client, sent), 403, "api_key")
    # In the URL it is not read: it would land in access logs.
    data = {"service_code": "pothole", "description": "Deep hole", **POINT}
    assert_error(client.post(f"{V2}/requests.json?api_key={key}", data=data), 403, "api_key")
    assert stored(app) == []


def test_posts_per_key_are_rate_limited(app, client, categories, key, monkeypatch):
    monkeypatch.setattr(open311, "POST_LIMIT", 2)
    assert [post(client, key).status_code for _ in range(2)] == [201, 201]
    response = post(client, key)
    assert_error(response, 429, "Too many requests with this api_key")
    assert int(response.headers["Retry-After"]) >= 1
    assert len(stored(app)) == 2


def test_a_post_needs_no_csrf_token_but_a_page_form_still_does(client, categories, key):
    # The test client has no session, so no form token: the api_key is the proof.
    assert post(client, key, jurisdiction_id="tiny").status_code == 201  # the city's id
    assert client.post("/login", data={"email": "a@b.c"}).status_code == 400


# --- GET requests.json ------------------------------------------------------------------


@pytest.fixture
def three(app, client, categories, key):
    """Three reports: a pothole now (open), a pothole 10 days ago (closed), silt 100 days ago."""
    ids = []
    for code in ("pothole", "pothole", "liquefaction"):
        response = post(
            client, key, service_code=code, email=EMAIL, first_name=FIRST, last_name=LAST
        )
        ids.append(int(response.get_json()[0]["service_request_id"]))
    now = utcnow()
    set_created(app, ids[1], now - timedelta(days=10))
    set_created(app, ids[2], now - timedelta(days=100))
    with Session(app.extensions["engine"]) as session:
        session.execute(
            update(Report).where(Report.id == ids[1]).values(status="closed", status_notes="Filled")
        )
        session.commit()
    return ids


def found(client, query=""):
    response = client.get(f"{V2}/requests.json{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [int(r["service_request_id"]) for r in response.get_json()]


def test_requests_are_the_last_90_days_newest_first_by_default(client, three):
    assert found(client) == [three[0], three[1]]


def test_requests_filter_by_status_and_service_code(client, three):
    assert found(client, "?jurisdiction_id=tiny&status=open") == [three[0]]
    assert found(client, "?status=open") == [three[0]]
    assert found(client, "?status=closed") == [three[1]]
    assert found(client, "?status=open,closed") == [three[0], three[1]]
    assert found(client, "?service_code=liquefaction") == []
    assert found(client, "?service_code=pothole,liquefaction&status=closed") == [three[1]]


def test_requests_by_id_ignore_the_date_window(client, three):
    ids = ",".join(str(i) for i in three)
    assert found(client, f"?service_request_id={ids}") == [three[0], three[1], three[2]]
    assert found(client, f"?service_request_id={three[1]}&status=open") == [three[1]]


def test_requests_in_a_date_window(client, three):
    old = (utcnow() - timedelta(days=100)).astimezone(UTC)
    start = (old - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert found(client, f"?start_date={start}") == [three[2]]  # 90 days from start
    end = (old + timedelta(days=1)).isoformat(timespec="seconds")
    assert found(client, f"?end_date={end.replace('+', '%2B')}") == [three[2]]
    day = (utcnow() - timedelta(days=10)).astimezone(ZoneInfo("Pacific/Auckland")).date()
    window = f"?start_date={day - timedelta(days=1)}&end_date={day + timedelta(days=1)}"
    assert found(client, window) == [three[1]]


BAD_FILTERS = [
    ("?start_date=2026-01-01T00:00:00Z&end_date=2026-04-02T00:00:00Z", ["90 days"]),
    ("?start_date=2026-03-01&end_date=2026-02-01", ["end_date is before start_date"]),
    ("?start_date=yesterday", ["start_date", "ISO 8601"]),
    ("?end_date=2026-13-01", ["end_date", "ISO 8601"]),
    ("?status=pending", ["status", "'pending'"]),
    ("?status=,", ["status is empty"]),
    ("?service_request_id=1,x", ["service_request_id"]),
    ("?jurisdiction_id=wellington", ["jurisdiction_id 'wellington' is not served here"]),
    ("?start_date=9999-12-31", ["start_date must be between 1900-01-01 and 2199-12-31"]),
    ("?end_date=0001-01-01T00:00:00%2B13:00", ["end_date must be between"]),
    ("?service_request_id=" + ",".join(["1"] * 1001), ["more than 1,000 values"]),
    ("?status=" + "x" * 5000, ["status must be open or closed", "…"]),
]


def test_bad_filters_are_400_arrays_naming_them(client, categories):
    for query, words in BAD_FILTERS:
        assert_error(client.get(f"{V2}/requests.json{query}"), 400, *words)


def test_a_request_has_the_spec_fields_and_local_times_with_offset(app, client, three):
    set_created(app, three[0], datetime(2026, 12, 1, 20, 14, tzinfo=UTC))
    response = client.get(f"{V2}/requests/{three[0]}.json")
    assert response.status_code == 200
    [one] = response.get_json()
    assert list(one) == REQUEST_FIELDS
    assert one == {
        "service_request_id": str(three[0]),
        "status": "open",
        "status_notes": None,
        "service_name": "Pothole",
        "service_code": "pothole",
        "description": "Deep hole",
        "agency_responsible": "City Council",
        "service_notice": "Sent to City Council, who will look at it.",
        "requested_datetime": "2026-12-02T09:14:00+13:00",
        "updated_datetime": "2026-12-02T09:14:00+13:00",
        "expected_datetime": None,
        "address": None,
        "address_id": None,
        "zipcode": None,
        "lat": -43.535,
        "long": 172.605,
        "media_url": None,
    }
    set_created(app, three[0], datetime(2026, 6, 1, 20, 14, tzinfo=UTC))  # winter: +12:00
    [one] = client.get(f"{V2}/requests/{three[0]}.json").get_json()
    assert one["requested_datetime"] == "2026-06-02T08:14:00+12:00"


def test_a_closed_request_shows_its_notes_and_an_unknown_one_is_a_404(client, three):
    [one] = client.get(f"{V2}/requests/{three[1]}.json").get_json()
    assert (one["status"], one["status_notes"]) == ("closed", "Filled")
    for rid in ("999999", "abc", "1e3", "99999999999999999999"):
        assert_error(client.get(f"{V2}/requests/{rid}.json"), 404)


def test_no_get_answer_holds_a_reporter_email_or_name(client, three):
    ids = ",".join(str(i) for i in three)
    paths = [f"{V2}/requests.json", f"{V2}/requests.json?service_request_id={ids}",
             *(f"{V2}/requests/{i}.json" for i in three), f"{V2}/services.json"]  # fmt: skip
    for path in paths:
        body = client.get(path).get_data(as_text=True)
        assert "example.org" not in body and FIRST not in body and LAST not in body, path
        assert "email" not in body and "first_name" not in body


# --- only JSON, and never an HTML page ------------------------------------------------


def test_another_format_is_a_400_saying_only_json(client, categories):
    for method, path in [("get", "/services.xml"), ("get", "/services/pothole.xml"),
                         ("get", "/requests.xml"), ("post", "/requests.xml"),
                         ("get", "/requests/1.xml"), ("get", "/services")]:  # fmt: skip
        assert_error(getattr(client, method)(f"{V2}{path}"), 400 if "." in path else 404)
    assert "Only JSON" in client.get(f"{V2}/services.xml").get_json()[0]["description"]


def test_other_addresses_answer_the_error_array(client, categories):
    for method, path, status in [
        ("get", "/open311/v2/tokens/1.json", 404),
        ("get", "/open311/v3/services.json", 404),
        ("get", "/open311/", 404),
        ("delete", "/open311/v2/requests.json", 405),
        ("post", "/open311/v2/services.json", 405),
        ("put", "/open311/v2/requests/1.json", 405),
        ("get", "/open311/v2/services/a%0A/b.json", 404),  # a line break in the path
        ("get", "/open311/v2/requests.json?status=open%00", 400),
        ("get", "/open311/v2/x%0Ay?status=%00", 400),
    ]:
        assert_error(getattr(client, method)(path), status)


def test_the_discovery_document_names_the_v2_endpoint(client):
    body = client.get("/open311/discovery.json").get_json()
    [endpoint] = body["endpoints"]
    assert endpoint["url"] == "http://127.0.0.1:8000/open311/v2"
    assert endpoint["formats"] == ["application/json"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"


# --- keys: `tracker open311 key|keys|revoke` ------------------------------------------


def database_text(app) -> str:
    """Every row of every table, as text: where a leaked key would show."""
    with app.extensions["engine"].connect() as connection:
        tables = [t for t in Open311Key.metadata.sorted_tables]
        return json.dumps(
            [[list(r) for r in connection.execute(t.select())] for t in tables], default=str
        )


def test_the_cli_issues_lists_and_revokes_keys(app, client, categories, runner):
    from tracker.cli import main

    issued = runner.invoke(main, ["open311", "key", "FixMyStreet NZ"])
    assert issued.exit_code == 0, issued.output
    new_key = issued.output.strip().splitlines()[-1]
    assert new_key.startswith("o311_") and " " not in new_key and len(new_key) > 40
    assert new_key not in database_text(app)
    with Session(app.extensions["engine"]) as session:
        row = session.scalars(select(Open311Key)).one()
    assert row.key_hash == hashlib.sha256(new_key.encode()).hexdigest()
    assert row.name == "FixMyStreet NZ"

    assert post(client, new_key).status_code == 201
    listed = runner.invoke(main, ["open311", "keys"])
    assert listed.exit_code == 0
    assert new_key not in listed.output and row.key_hash not in listed.output
    [line] = [ln for ln in listed.output.splitlines() if "FixMyStreet NZ" in ln]
    number, created, _, used, _, revoked = line.split()[:6]
    assert (number, revoked) == (str(row.id), "-")
    assert created == used == utcnow().strftime("%Y-%m-%d")

    revoked = runner.invoke(main, ["open311", "revoke", str(row.id)])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert_error(post(client, new_key), 403, "revoked")
    assert len(stored(app)) == 1
    listed = runner.invoke(main, ["open311", "keys"]).output
    assert "REVOKED" in listed
    with Session(app.extensions["engine"]) as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.entity_id, e.channel, e.old, e.new) for e in events] == [
        ("open311key.issue", f"open311key/{row.id}", "cli", None, "FixMyStreet NZ"),
        ("open311key.revoke", f"open311key/{row.id}", "cli", "FixMyStreet NZ", None),
    ]
    assert runner.invoke(main, ["open311", "revoke", str(row.id)]).exit_code == 0  # again
    with Session(app.extensions["engine"]) as session:
        assert len(session.scalars(select(AuditEvent)).all()) == 2


def test_the_cli_refuses_with_exit_1(runner, app):
    from tracker.cli import main

    assert "No Open311 api_keys." in runner.invoke(main, ["open311", "keys"]).output
    for args, words in [(["revoke", "999"], "no Open311 key 999"), (["key", "  "], "needs a name"),
                        (["key", "x" * 101], "longer than 100")]:  # fmt: skip
        result = runner.invoke(main, ["open311", *args])
        assert result.exit_code == 1, args
        assert words in result.output
    assert "No Open311 api_keys." in runner.invoke(main, ["open311", "keys"]).output


def test_a_json_body_must_be_an_object_of_plain_values(app, client, categories, key):
    url = f"{V2}/requests.json"
    assert_error(client.post(url, json=["api_key", key]), 400, "JSON body must be an object")
    nested = {"api_key": key, "service_code": "pothole", "description": {"text": "x"}, **POINT}
    assert_error(client.post(url, json=nested), 400, "description must be a string")
    nul = {"api_key": key, "service_code": "pothole", "description": "a\x00b", **POINT}
    assert_error(client.post(url, json=nul), 400, "NUL")
    assert_error(client.post(url, data="{not json", content_type="application/json"), 400)
    assert stored(app) == []


def test_a_body_over_the_limit_is_a_413_array(app, client, categories, key):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    assert_error(post(client, key, description="x" * 2000), 413, "larger than")
    assert stored(app) == []


TREE_CATEGORIES = """\
report_categories:
  - code: silt
    name: Liquefaction silt
    agency: eqc
    keywords: [silt, liquefaction]
  - code: pothole
    name: Pothole
    description: A hole in a road
    agency: council
    group: Roads
"""


def test_the_tree_report_categories_are_the_services(settings, tmp_path):
    """End to end from the tree file: `tracker init` stores its report_categories, which
    services.json lists in the file's order, and a POST for one reaches its agency."""
    from tracker import create_app
    from tracker.cli import initialise

    tiny = Path(settings.tree).parent
    tree = (tiny / "tree.yaml").read_text(encoding="utf-8")
    for name in ("neighbourhoods.geojson", "streets.geojson"):
        tree = tree.replace(f": {name}", f": {tiny / name}")
    path = tmp_path / "tree.yaml"
    path.write_text(tree + TREE_CATEGORIES, encoding="utf-8")
    settings = settings.model_copy(update={"tree": path})
    engine, _ = initialise(settings)
    engine.dispose()
    app = create_app(settings)
    try:
        client = app.test_client()
        services = client.get(f"{V2}/services.json").get_json()
        assert [(s["service_code"], s["keywords"], s["group"]) for s in services] == [
            ("silt", "silt,liquefaction", ""),
            ("pothole", "", "Roads"),
        ]
        with Session(app.extensions["engine"]) as session:
            issued = open311.issue_key(session, "Tree test")
            session.commit()
        answer = post(client, issued, service_code="silt", email=EMAIL)
        assert answer.status_code == 201, answer.get_data(as_text=True)
        [one] = client.get(f"{V2}/requests.json?service_code=silt").get_json()
        assert (one["agency_responsible"], one["service_name"]) == (
            "Earthquake Commission",
            "Liquefaction silt",
        )
    finally:
        app.extensions["engine"].dispose()


def test_a_read_only_database_is_a_503_array_with_retry_after(
    app, settings, database_url, categories, key
):
    """As the site answers it (tracker.web.errors), in the spec's error body."""
    if database_url.startswith("sqlite"):
        read_only = f"sqlite:///file:{database_url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    else:
        read_only = database_url + "?options=-c%20default_transaction_read_only%3Don"
    frozen = create_app(settings.model_copy(update={"database_url": read_only}))
    try:
        refused = post(frozen.test_client(), key)
        assert_error(refused, 503, "read-only")
        assert int(refused.headers["Retry-After"]) > 0
        assert frozen.test_client().get(f"{V2}/services.json").status_code == 200
    finally:
        frozen.extensions["engine"].dispose()
    assert stored(app) == []
