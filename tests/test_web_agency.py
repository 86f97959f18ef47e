"""/agency: value and work forms, CSV upload with preview and confirm, history, and the
rule that agency staff only ever see and write their own agency's data."""

import io
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from staff_helpers import add_user, counts, csrf_token, post_form, sign_in

from tracker.db import get_session
from tracker.models import Batch, Node, Observation, Work
from tracker.submissions import submit_works

VALUE = {"measure": "homes-repaired", "place": "opawa", "date": "2014-03-31", "value": "5"}
POINT_IN_OPAWA = {"lon": "172.605", "lat": "-43.535"}


def _staff(app, client, agency: str = "eqc"):
    """Sign `client` in as a member of `agency`'s staff; returns the email."""
    email = f"staff@{agency}.example"
    add_user(app, email, "agency", agency)
    sign_in(client, email)
    return email


def _post(client, path, data, **options):
    return post_form(client, path, data, page="/agency", **options)


def _rows(app, model, *where):
    with app.app_context():
        return get_session().scalars(select(model).where(*where)).all()


def _page(client, path) -> str:
    return client.get(path).get_data(as_text=True)


def _upload(client, body: str, kind: str = "observations", name: str = "values.csv"):
    """Upload a CSV file; returns the preview page's address."""
    data = {"kind": kind, "file": (io.BytesIO(body.encode()), name)}
    answer = _post(client, "/agency/uploads", data, content_type="multipart/form-data")
    assert answer.status_code == 303
    return answer.headers["Location"]


@pytest.fixture
def eqc_works_measure(app):
    """A measure of eqc's derived from works (the tiny city's only one is council's)."""
    with app.app_context():
        session = get_session()
        session.add(
            Node(id="homes-rebuilt", kind="measure", parent_id="eqc-repairs", title="Rebuilt",
                 source="works", measure_kind="cumulative", aggregate="sum")
        )  # fmt: skip
        session.commit()
    return "homes-rebuilt"


# --- entering one value ----------------------------------------------------------------------


def test_a_value_entered_in_the_form_is_stored_as_the_user(app, client):
    email = _staff(app, client)
    answer = _post(client, "/agency/observations", VALUE)
    assert answer.status_code == 303
    assert "1 row(s) received: 1 new" in _page(client, answer.headers["Location"])
    (stored,) = _rows(app, Observation)
    assert (stored.measure_id, stored.place_id, stored.value) == ("homes-repaired", "opawa", 5)
    (batch,) = _rows(app, Batch)
    assert batch.channel == "web" and batch.agency_id == "eqc" and batch.user_id is not None
    assert email in _page(client, "/agency")  # the batch list names who sent it


def test_a_measure_with_dimensions_takes_a_value_per_cell(app, client):
    _staff(app, client, "council")
    page = _page(client, "/agency?measure=people-supported")
    assert 'name="dim.age"' in page and '<option value="65+"' in page
    value = {**VALUE, "measure": "people-supported", "dim.age": "65+", "value": "12"}
    assert _post(client, "/agency/observations", value).status_code == 303
    assert [o.dims_key for o in _rows(app, Observation)] == ["age=65+"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": ""}, "value is required"),
        ({"value": "lots"}, "value must be a number"),
        ({"date": "2999-01-01"}, "in the future"),
        ({"date": "31/03/2014"}, "YYYY-MM-DD"),
        ({"place": "red-zone-park"}, "is not one of the places"),
        ({"measure": "no-such-measure"}, "unknown measure"),
        ({"dim.age": "65+"}, "has no dimension"),
        ({"note": "x" * 1001}, "longer than 1000"),
    ],
)
def test_the_value_form_refuses_bad_input_and_stores_nothing(app, client, change, message):
    _staff(app, client)
    before = counts(app)
    answer = _post(client, "/agency/observations", {**VALUE, **change})
    assert answer.status_code == 422
    page = answer.get_data(as_text=True)
    assert "Nothing was stored" in page and message in page
    assert counts(app) == before


def test_a_refused_form_keeps_what_was_typed(app, client):
    _staff(app, client)
    page = _post(client, "/agency/observations", {**VALUE, "note": "<b>q3</b>", "value": ""})
    assert 'value="&lt;b&gt;q3&lt;/b&gt;"' in page.get_data(as_text=True)


def test_the_page_offers_only_the_agencys_own_measures(app, client):
    _staff(app, client, "council")
    page = _page(client, "/agency")
    assert "People supported" in page and "Wellbeing survey score" in page
    assert "homes-repaired" not in page  # eqc's
    assert 'value="pipes-relaid"' not in page  # derived from works: never entered


# --- the authorisation matrix: each agency against the other's measures and works --------------

OTHERS_MEASURES = [
    ("eqc", {"measure": "people-supported", "dim.age": "65+"}),
    ("eqc", {"measure": "wellbeing-score"}),
    ("council", {"measure": "homes-repaired"}),
]


@pytest.mark.parametrize(("agency", "change"), OTHERS_MEASURES)
def test_staff_cannot_enter_values_for_another_agencys_measure(app, client, agency, change):
    _staff(app, client, agency)
    before = counts(app)
    answer = _post(client, "/agency/observations", {**VALUE, **change})
    assert answer.status_code == 403
    assert "belongs to" in answer.get_data(as_text=True)
    assert counts(app) == before


@pytest.mark.parametrize(
    ("agency", "measure"), [("eqc", "people-supported"), ("council", "homes-repaired")]
)
def test_staff_cannot_open_another_agencys_measure(app, client, agency, measure):
    _staff(app, client, agency)
    assert client.get(f"/agency?measure={measure}").status_code == 404


@pytest.mark.parametrize(
    ("agency", "measure"), [("eqc", "pipes-relaid"), ("council", "homes-rebuilt")]
)
def test_staff_cannot_count_a_work_towards_another_agencys_measure(
    app, client, eqc_works_measure, agency, measure
):
    _staff(app, client, agency)
    before = counts(app)
    work = {"id": "w1", "title": "Relay", "status": "planned", "measure": measure, **POINT_IN_OPAWA}
    answer = _post(client, "/agency/works", work)
    assert answer.status_code == 403
    assert counts(app) == before


@pytest.mark.parametrize(("agency", "other"), [("eqc", "council"), ("council", "eqc")])
def test_staff_never_see_another_agencys_works_or_values(app, client, agency, other):
    with app.app_context():
        session = get_session()
        work = {
            "id": "secret-1",
            "title": "Their work",
            "status": "planned",
            "street": "opawa-road",
        }
        submit_works(session, agency_id=other, rows=[work], channel="api")
        session.commit()
    add_user(app, f"staff@{other}.example", "agency", other)
    sign_in(client, f"staff@{other}.example")
    their_value = {**VALUE, **dict(OTHERS_MEASURES)[agency]}  # their own measure
    assert _post(client, "/agency/observations", their_value).status_code == 303
    client.post("/logout", data={"csrf_token": csrf_token(client, "/agency")})
    _staff(app, client, agency)
    pages = "".join(_page(client, p) for p in ("/agency", "/agency/works", "/agency/observations"))
    assert "secret-1" not in pages and "Their work" not in pages
    assert f"staff@{other}.example" not in pages
    for empty in ("Nothing received from your agency yet", "No works yet", "No values received"):
        assert empty in pages


def test_works_with_the_same_id_stay_each_agencys_own(app, client):
    with app.app_context():
        session = get_session()
        work = {"id": "w1", "title": "Council's", "status": "planned", "street": "opawa-road"}
        submit_works(session, agency_id="council", rows=[work], channel="api")
        session.commit()
    _staff(app, client, "eqc")
    mine = {"id": "w1", "title": "EQC's", "status": "in_progress", **POINT_IN_OPAWA}
    assert _post(client, "/agency/works", mine).status_code == 303
    titles = {w.agency_id: (w.title, w.status) for w in _rows(app, Work)}
    assert titles == {"council": ("Council's", "planned"), "eqc": ("EQC's", "in_progress")}


# --- history ------------------------------------------------------------------------------------


def test_the_history_shows_every_revision_with_who_and_how(app, client):
    email = _staff(app, client)
    _post(client, "/agency/observations", VALUE)
    _post(client, "/agency/observations", {**VALUE, "value": "7", "note": "recounted"})
    page = _page(client, "/agency/observations")
    assert re.search(r"— → 5 · " + re.escape(email) + " · web", page)
    assert re.search(r"5 → 7 · " + re.escape(email) + " · web .*“recounted”", page)
    (stored,) = _rows(app, Observation)
    assert stored.revisions == 2


# --- CSV upload: preview, confirm, discard ------------------------------------------------------

GOOD_CSV = (
    "measure,place,date,value\n"
    "homes-repaired,opawa,2014-03-31,5\n"
    "homes-repaired,riccarton,2014-03-31,9\n"
)
BAD_CSV = (
    "measure,place,date,value\n"
    "homes-repaired,opawa,2014-03-31,5\n"
    "\n"
    "homes-repaired,red-zone-park,2014-03-31,9\n"
    "homes-repaired,opawa,2014-04-31,x\n"
)


def test_the_preview_lists_every_row_with_its_errors_by_line(app, client):
    _staff(app, client)
    before = counts(app)
    page = _page(client, _upload(client, BAD_CSV))
    assert "Nothing can be stored" in page and "Confirm" not in page
    lines = re.findall(r"<tr class=\"bad\">\s*<td>(\d+)</td>", page)
    assert lines == ["4", "5"]  # the header is line 1 and the blank line counts
    assert "is not one of the places" in page and "not a real date" in page
    assert "value must be a number" in page
    assert "<td>2</td>" in page  # the good row is listed too
    assert counts(app) == before


def test_confirming_a_previewed_file_stores_it_once(app, client):
    _staff(app, client)
    preview = _upload(client, GOOD_CSV)
    page = _page(client, preview)
    assert "All 2 rows are valid: 2 new" in page
    assert counts(app)["Observation"] == 0  # the preview is a dry run
    answer = _post(client, preview, {})
    assert answer.status_code == 303 and answer.headers["Location"] == "/agency"
    assert "values.csv: 2 row(s) received: 2 new" in _page(client, "/agency")
    assert {o.place_id for o in _rows(app, Observation)} == {"opawa", "riccarton"}
    assert [b.channel for b in _rows(app, Batch)] == ["csv"]
    assert client.get(preview).status_code == 404  # confirmed files are gone
    assert _post(client, preview, {}).status_code == 404
    assert list((Path(app.instance_path) / "uploads").glob("*")) == []


def test_a_file_level_problem_is_shown_without_rows(app, client):
    _staff(app, client)
    page = _page(client, _upload(client, "measure,place,when\nhomes-repaired,opawa,2014\n"))
    assert "missing column" in page and "unknown column" in page
    assert "Confirm" not in page


def test_a_file_naming_another_agencys_measure_cannot_be_confirmed(app, client):
    _staff(app, client, "council")
    preview = _upload(client, GOOD_CSV)
    assert "belongs to" in _page(client, preview)
    before = counts(app)
    answer = _post(client, preview, {})
    assert answer.status_code == 303 and answer.headers["Location"] == preview
    assert counts(app) == before


def test_nobody_else_can_see_or_confirm_an_upload(app, client):
    _staff(app, client)
    preview = _upload(client, GOOD_CSV)
    other = app.test_client()
    add_user(app, "colleague@eqc.example", "agency", "eqc")
    sign_in(other, "colleague@eqc.example")
    assert other.get(preview).status_code == 404
    assert post_form(other, preview, {}, page="/agency").status_code == 404
    assert counts(app)["Observation"] == 0
    assert client.get(preview).status_code == 200


@pytest.mark.parametrize("upload_id", ["../secret_key", "0123", "A" * 32])
def test_an_upload_id_is_never_a_path(app, client, upload_id):
    _staff(app, client)
    assert client.get(f"/agency/uploads/{upload_id}").status_code == 404


def test_discarding_an_upload_stores_nothing(app, client):
    _staff(app, client)
    preview = _upload(client, GOOD_CSV)
    answer = _post(client, f"{preview}/discard", {})
    assert answer.status_code == 303
    assert client.get(preview).status_code == 404
    assert counts(app)["Observation"] == 0


def test_uploading_without_a_file_is_refused(app, client):
    _staff(app, client)
    answer = _post(client, "/agency/uploads", {"kind": "observations"})
    assert answer.status_code == 303
    assert "Choose a CSV file" in _page(client, "/agency")


# --- works --------------------------------------------------------------------------------------

WORK = {"id": "pipe-7", "title": "Relay <pipe>", "status": "planned", **POINT_IN_OPAWA}


def test_a_work_entered_in_the_form_is_stored_and_its_status_history_shown(app, client):
    email = _staff(app, client, "council")
    assert _post(client, "/agency/works", WORK).status_code == 303
    changed = {**WORK, "status": "in_progress", "actual_start": "2014-02-01"}
    assert _post(client, "/agency/works", changed).status_code == 303
    (work,) = _rows(app, Work)
    assert (work.agency_id, work.ref, work.status, work.main_place_id) == (
        "council", "pipe-7", "in_progress", "opawa"
    )  # fmt: skip
    page = _page(client, "/agency/works")
    assert "Relay &lt;pipe&gt;" in page and "<pipe>" not in page
    assert re.search(r"— → planned · " + re.escape(email) + " · web", page)
    assert re.search(r"planned → in_progress · " + re.escape(email) + " · web", page)


def test_a_work_can_be_placed_along_a_street_and_count_towards_a_measure(app, client):
    _staff(app, client, "council")
    work = {"id": "p1", "title": "Relay", "status": "complete", "street": "Ōpāwa Road",
            "actual_end": "2014-05-01", "measure": "pipes-relaid", "quantity": "0.8"}  # fmt: skip
    assert _post(client, "/agency/works", work).status_code == 303
    (stored,) = _rows(app, Work)
    assert (stored.street_id, stored.measure_id, stored.quantity) == (
        "opawa-road",
        "pipes-relaid",
        0.8,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lon": "east", "lat": "-43.5"}, "lon and lat must be numbers"),
        ({"lon": "", "lat": ""}, "exactly one of geometry or street"),
        ({"street": "opawa-road"}, "exactly one of geometry or street"),
        ({"status": "complete"}, "needs actual_end"),
        ({"status": "finished"}, "status must be one of"),
        ({"id": "bad id!"}, "id is required"),
        ({"planned_start": "2014-05-01", "planned_end": "2014-04-01"}, "is before"),
        ({"lon": "170.0", "lat": "-40.0"}, "outside the city"),
        ({"quantity": "3"}, "needs a measure"),
    ],
)
def test_the_work_form_refuses_bad_input_and_stores_nothing(app, client, change, message):
    _staff(app, client, "council")
    before = counts(app)
    answer = _post(client, "/agency/works", {**WORK, **change})
    assert answer.status_code == 422
    assert message in answer.get_data(as_text=True)
    assert counts(app) == before


def test_works_upload_previews_and_confirms(app, client):
    _staff(app, client, "council")
    body = (
        "id,title,status,lon,lat,street\n"
        "w1,One,planned,172.605,-43.535,\n"
        "w2,Two,planned,,,opawa-road\n"
    )
    preview = _upload(client, body, kind="works", name="works.csv")
    assert "All 2 rows are valid" in _page(client, preview)
    assert _post(client, preview, {}).headers["Location"] == "/agency/works"
    assert sorted(w.ref for w in _rows(app, Work)) == ["w1", "w2"]
    assert [b.channel for b in _rows(app, Batch)] == ["csv"]


def test_a_bad_works_upload_shows_its_errors_by_line(app, client):
    _staff(app, client, "council")
    body = "id,title,status,lon,lat\nw1,One,planned,172.605,-43.535\nw2,,done,x,y\n"
    page = _page(client, _upload(client, body, kind="works"))
    assert re.findall(r"<tr class=\"bad\">\s*<td>(\d+)</td>", page) == ["3"]
    assert "Confirm" not in page
    assert counts(app)["Work"] == 0
