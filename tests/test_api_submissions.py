"""POST /api/v1/observations and /api/v1/works: every refusal stores nothing."""

import json
from datetime import date, timedelta

import pytest
from helpers import revision_history
from sqlalchemy import func, select
from sqlmodel import Session

from tracker.auth import issue_token
from tracker.models import (
    ApiToken,
    AuditEvent,
    Batch,
    Node,
    Observation,
    ObservationRevision,
    Work,
    WorkPlace,
    WorkStatusChange,
    utcnow,
)

TABLES = (Batch, Observation, ObservationRevision, Work, WorkPlace, WorkStatusChange, AuditEvent)


@pytest.fixture
def tokens(loaded):
    engine, _ = loaded
    with Session(engine) as session:
        issued = {agency: issue_token(session, agency) for agency in ("eqc", "council")}
        session.commit()
    return issued


@pytest.fixture
def stored(loaded):
    """Row counts of every table a submission writes to."""
    engine, _ = loaded

    def counts() -> dict[str, int]:
        with Session(engine) as session:
            return {
                model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in TABLES
            }

    return counts


def post(client, token, rows, *, path="observations", key=None, query="", **headers):
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(
        f"/api/v1/{path}{query}",
        json={path: rows},
        headers={"Authorization": f"Bearer {token}", **headers},
    )


def post_csv(client, token, text, *, path="observations", **headers):
    return client.post(
        f"/api/v1/{path}",
        data=text.encode("utf-8") if isinstance(text, str) else text,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv", **headers},
    )


def row(**overrides):
    base = {"measure": "homes-repaired", "place": "opawa", "date": "2014-03-31", "value": 12}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


# --- accepted ---------------------------------------------------------------------------


def test_a_batch_is_stored_and_counted(client, tokens, stored):
    answer = post(client, tokens["eqc"], [row(), row(place="riccarton", value=3.5)])
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["accepted"] == 2 and body["revised"] == 0 and body["unchanged"] == 0
    assert isinstance(body["batch"], int)
    assert stored()["Observation"] == 2


def test_a_changed_value_is_a_revision_and_the_same_value_is_a_no_op(
    client, tokens, stored, loaded
):
    post(client, tokens["eqc"], [row(value=10)])
    revised = post(client, tokens["eqc"], [row(value=11), row(place="st-albans", value=1)])
    assert revised.get_json() | {"batch": 0} == {
        "accepted": 2,
        "revised": 1,
        "unchanged": 0,
        "batch": 0,
    }
    same = post(client, tokens["eqc"], [row(value=11)])
    assert same.get_json()["unchanged"] == 1 and same.get_json()["revised"] == 0
    counts = stored()
    assert counts["Observation"] == 2
    assert counts["ObservationRevision"] == 1  # the 10 that 11 replaced
    assert revision_history(loaded[0]) == {
        ("homes-repaired", "opawa", "2014-03-31", ""): [(1, 10), (2, 11)],
        ("homes-repaired", "st-albans", "2014-03-31", ""): [(1, 1)],
    }


def test_null_retracts_the_current_value_as_a_revision(client, tokens, loaded):
    post(client, tokens["eqc"], [row(value=10)])
    answer = post(client, tokens["eqc"], [row(value=None)])
    assert answer.get_json()["revised"] == 1
    with Session(loaded[0]) as session:
        observation = session.scalars(select(Observation)).one()
        assert observation.value is None and observation.revisions == 2


def test_dimensioned_measure_takes_a_value_per_cell(client, tokens, stored):
    rows = [
        row(measure="people-supported", dims={"age": age}, value=n)
        for age, n in (("0-14", 1), ("15-64", 2), ("65+", 3))
    ]
    assert post(client, tokens["council"], rows).status_code == 201
    assert stored()["Observation"] == 3


def test_dry_run_answers_as_if_storing_and_stores_nothing(client, tokens, stored):
    before = stored()
    answer = post(client, tokens["eqc"], [row()], query="?dry_run=1")
    assert answer.status_code == 201
    assert answer.get_json() == {"accepted": 1, "revised": 0, "unchanged": 0, "batch": None}
    assert stored() == before


def test_token_use_is_recorded(client, tokens, loaded):
    post(client, tokens["eqc"], [row()])
    with Session(loaded[0]) as session:
        used = session.scalars(select(ApiToken).where(ApiToken.agency_id == "eqc")).one()
        assert used.last_used_at is not None


# --- refused: nothing stored --------------------------------------------------------------

TOMORROW = (date.today() + timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (row(measure="homes-rebuilt"), "measure", "unknown measure"),
        (row(measure=...), "measure", "required"),
        (row(place="hagley-park"), "place", "not one of the places"),
        (row(place="red-zone-park"), "place", "not one of the places"),
        (row(date="31/03/2014"), "date", "YYYY-MM-DD"),
        (row(date=...), "date", "date is required"),
        (row(date=""), "date", "date is required"),
        (row(date="2014-02-30"), "date", "not a real date"),
        (row(date=TOMORROW), "date", "future"),
        (row(value="twelve"), "value", "must be a number"),
        (row(value=True), "value", "boolean"),
        (row(value=[1]), "value", "must be a number"),
        (row(value=10**400), "value", "finite"),
        (row(value="1e400"), "value", "finite"),
        (row(value=...), "value", "required"),
        (row(colour="red"), "colour", "unknown field"),
        (row(dims={"age": "65+"}), "dim.age", "has no dimension"),
        (row(note=5), "note", "text"),
        (row(measure="people-supported", dims={"age": "elderly"}), "dim.age", "not a value"),
        (row(measure="people-supported"), "dim.age", "needs a value"),
        (
            row(measure="people-supported", dims={"height": "tall", "age": "65+"}),
            "dim.height",
            "unknown dimension",
        ),
        (row(measure="pipes-relaid"), "measure", "derived from works"),
    ],
)
def test_a_bad_row_refuses_the_whole_batch(client, tokens, stored, bad, field, words):
    before = stored()
    token = (
        tokens["council"]
        if bad.get("measure", "").startswith(("people", "pipes"))
        else (tokens["eqc"])
    )
    good = row() if token == tokens["eqc"] else row(measure="wellbeing-score", value=60)
    answer = post(client, token, [good, bad])
    assert answer.status_code == 422, answer.get_json()
    errors = answer.get_json()["errors"]
    assert [e["row"] for e in errors] == [1] * len(errors)
    assert any(e["field"] == field and words in e["message"] for e in errors), errors
    assert stored() == before


def test_non_finite_values_are_refused(client, tokens, stored):
    before = stored()
    body = (
        '{"observations": [{"measure": "homes-repaired", "place": "opawa", '
        '"date": "2014-03-31", "value": NaN}]}'
    )
    answer = client.post(
        "/api/v1/observations",
        data=body,
        headers={"Authorization": f"Bearer {tokens['eqc']}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert "finite" in answer.get_json()["errors"][0]["message"]
    assert stored() == before


def test_every_bad_row_is_listed(client, tokens, stored):
    rows = [row(), row(place="nowhere"), row(), row(value="x", date="never")]
    answer = post(client, tokens["eqc"], rows)
    assert answer.status_code == 422
    listed = {(e["row"], e["field"]) for e in answer.get_json()["errors"]}
    assert listed == {(1, "place"), (2, None), (3, "value"), (3, "date")}  # 2 duplicates 0
    assert stored()["Observation"] == 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "expected"),
        (b'{"observations": {}}', "expected"),
        (b'{"observations": [], "extra": 1}', "unknown field"),
        (b'{"observations": []}', "no rows"),
        (b'{"observations": [7]}', "must be an object"),
    ],
)
def test_a_bad_body_is_refused_as_a_whole(client, tokens, stored, body, words):
    before = stored()
    answer = client.post(
        "/api/v1/observations",
        data=body,
        headers={"Authorization": f"Bearer {tokens['eqc']}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert words in json.dumps(answer.get_json())
    assert stored() == before


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer nope", "Basic abc"])
def test_no_or_unknown_token_is_401(client, stored, authorization, loaded):
    before = stored()
    headers = {"Authorization": authorization} if authorization else {}
    answer = client.post("/api/v1/observations", json={"observations": [row()]}, headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["error"]
    assert stored() == before


def test_a_revoked_token_is_401(client, tokens, stored, loaded):
    with Session(loaded[0]) as session:
        for token in session.scalars(select(ApiToken)):
            token.revoked_at = utcnow()
        session.commit()
    before = stored()
    assert post(client, tokens["eqc"], [row()]).status_code == 401
    assert stored() == before


@pytest.mark.parametrize(
    ("agency", "measure", "extra"),
    [
        ("council", "homes-repaired", {}),
        ("eqc", "people-supported", {"dims": {"age": "65+"}}),
        ("eqc", "wellbeing-score", {}),
    ],
)
def test_another_agencys_measure_is_403_and_nothing_is_stored(
    client, tokens, stored, agency, measure, extra
):
    before = stored()
    own = row() if agency == "eqc" else row(measure="wellbeing-score", value=60)
    answer = post(client, tokens[agency], [own, row(measure=measure, **extra)])
    assert answer.status_code == 403
    assert answer.get_json()["errors"][0] == {
        "row": 1,
        "field": "measure",
        "message": answer.get_json()["errors"][0]["message"],
    }
    assert agency in answer.get_json()["errors"][0]["message"]
    assert stored() == before


def test_unsupported_content_type_is_415(client, tokens, stored):
    before = stored()
    answer = client.post(
        "/api/v1/observations",
        data="measure=x",
        headers={
            "Authorization": f"Bearer {tokens['eqc']}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert answer.status_code == 415
    assert stored() == before


def test_a_body_over_the_limit_is_413(app, client, tokens, stored):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    before = stored()
    answer = post(
        client, tokens["eqc"], [row(note="x" * 500), row(place="riccarton", note="y" * 600)]
    )
    assert answer.status_code == 413
    assert answer.get_json()["error"]
    assert stored() == before


# --- idempotency ---------------------------------------------------------------------------


def test_a_retry_with_the_same_key_gets_the_first_answer(client, tokens, stored):
    first = post(client, tokens["eqc"], [row()], key="upload-42")
    after_first = stored()
    again = post(client, tokens["eqc"], [row()], key="upload-42")
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert stored() == after_first


def test_the_same_key_with_another_body_is_409(client, tokens, stored):
    post(client, tokens["eqc"], [row()], key="upload-42")
    before = stored()
    answer = post(client, tokens["eqc"], [row(value=13)], key="upload-42")
    assert answer.status_code == 409
    assert stored() == before


def test_keys_are_per_agency(client, tokens):
    post(client, tokens["eqc"], [row()], key="shared-key")
    council = post(
        client, tokens["council"], [row(measure="wellbeing-score", value=60)], key="shared-key"
    )
    assert council.status_code == 201


def test_a_key_older_than_a_day_can_be_used_again(client, tokens, loaded):
    post(client, tokens["eqc"], [row()], key="old-key")
    with Session(loaded[0]) as session:
        for batch in session.scalars(select(Batch)):
            batch.received_at = utcnow() - timedelta(hours=25)
        session.commit()
    answer = post(client, tokens["eqc"], [row(value=99)], key="old-key")
    assert answer.status_code == 201
    assert answer.get_json()["revised"] == 1


# --- CSV ----------------------------------------------------------------------------------


def test_csv_with_bom_crlf_quotes_blank_lines_and_dims(client, tokens, loaded):
    text = (
        "\ufeffmeasure,place,date,value,dim.age,note\r\n"
        "\r\n"
        'people-supported,opawa,2014-03-31,4,65+,"drop-in, then visits"\r\n'
        "people-supported,opawa,2014-03-31,5,0-14,\r\n"
        "people-supported,opawa,2014-03-31,6,15-64,\r\n"
    )
    answer = post_csv(client, tokens["council"], text)
    assert answer.status_code == 201, answer.get_json()
    with Session(loaded[0]) as session:
        notes = session.scalars(select(Observation.note).where(Observation.note.is_not(None)))
        assert list(notes) == ["drop-in, then visits"]
        channels = session.scalars(select(Batch.channel)).all()
        assert channels == ["csv"]


def test_csv_errors_name_the_line_where_the_record_starts(client, tokens, stored):
    before = stored()
    text = (
        "measure,place,date,value,note\n"
        "homes-repaired,opawa,2014-03-31,1,\n"
        "\n"
        'homes-repaired,opawa,2014-04-30,2,"a note\nover two lines"\n'
        "homes-repaired,nowhere,2014-05-31,3,\n"
        "homes-repaired,opawa,2014-06-30,4,,extra\n"
    )
    answer = post_csv(client, tokens["eqc"], text)
    assert answer.status_code == 422
    errors = answer.get_json()["errors"]
    assert [(e["row"], e["field"]) for e in errors] == [(6, "place"), (7, None)]
    assert "7 fields" not in errors[1]["message"] and "6 fields" in errors[1]["message"]
    assert stored() == before


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("measure,place,value\nhomes-repaired,opawa,1\n", "date", "missing column"),
        ("measure,place,date,value,colour\n", "colour", "unknown column"),
        ("measure,place,date,value,measure\n", None, "twice"),
        ("", None, "empty"),
        (b"measure,place,date,value\n\xff\xfe\n", None, "UTF-8"),
    ],
)
def test_csv_file_problems_have_row_null(client, tokens, stored, text, field, words):
    before = stored()
    answer = post_csv(client, tokens["eqc"], text)
    assert answer.status_code == 422
    errors = answer.get_json()["errors"]
    assert errors[0]["row"] is None and errors[0]["field"] == field
    assert words in errors[0]["message"]
    assert stored() == before


def test_an_empty_csv_value_retracts(client, tokens, loaded):
    post(client, tokens["eqc"], [row(value=10)])
    answer = post_csv(
        client, tokens["eqc"], "measure,place,date,value\nhomes-repaired,opawa,2014-03-31,\n"
    )
    assert answer.get_json()["revised"] == 1
    with Session(loaded[0]) as session:
        assert session.scalars(select(Observation.value)).one() is None


# --- works --------------------------------------------------------------------------------

LINE = {"type": "LineString", "coordinates": [[172.605, -43.535], [172.615, -43.535]]}


def work(**overrides):
    base = {
        "id": "ww-001",
        "title": "Relay wastewater main",
        "status": "in_progress",
        "geometry": LINE,
        "planned_start": "2014-01-01",
        "planned_end": "2014-06-30",
        "actual_start": "2014-01-10",
        "measure": "pipes-relaid",
        "quantity": 0.8,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def post_works(client, token, rows, **kw):
    return post(client, token, rows, path="works", **kw)


def test_a_work_is_split_across_neighbourhoods_by_length(client, tokens, loaded):
    answer = post_works(client, tokens["council"], [work()])
    assert answer.status_code == 201, answer.get_json()
    with Session(loaded[0]) as session:
        shares = dict(session.execute(select(WorkPlace.place_id, WorkPlace.share)).all())
    assert set(shares) == {"opawa", "st-albans"}
    assert shares["opawa"] == pytest.approx(0.5, abs=0.01)
    assert sum(shares.values()) == pytest.approx(1)


def test_a_work_placed_by_street_lies_along_it(client, tokens):
    answer = post_works(client, tokens["council"], [work(geometry=..., street="Ōpāwa Road")])
    assert answer.status_code == 201, answer.get_json()
    found = client.get("/api/v1/works?street=opawa-road").get_json()
    assert [f["id"] for f in found["features"]] == ["council/ww-001"]
    assert found["features"][0]["properties"]["street"] == "opawa-road"
    assert found["features"][0]["geometry"]["type"] in ("LineString", "MultiLineString")


def test_an_update_keeps_the_status_history_and_audit(client, tokens, loaded):
    post_works(client, tokens["council"], [work()])
    done = post_works(client, tokens["council"], [work(status="complete", actual_end="2014-05-01")])
    assert done.get_json()["revised"] == 1
    again = post_works(
        client, tokens["council"], [work(status="complete", actual_end="2014-05-01")]
    )
    assert again.get_json()["unchanged"] == 1
    with Session(loaded[0]) as session:
        history = session.execute(
            select(WorkStatusChange.old_status, WorkStatusChange.new_status).order_by(
                WorkStatusChange.id
            )
        ).all()
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("work.%")).order_by(AuditEvent.id)
        ).all()
    assert [tuple(h) for h in history] == [(None, "in_progress"), ("in_progress", "complete")]
    assert [a.action for a in audit] == ["work.create", "work.update"]
    assert audit[1].old == {"status": "in_progress", "actual_end": None}
    assert audit[1].new == {"status": "complete", "actual_end": "2014-05-01"}
    assert audit[1].channel == "api" and audit[1].token_id is not None


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (work(id="bad id!"), "id", "id is required"),
        (work(title=""), "title", "required"),
        (work(status="done"), "status", "must be one of"),
        (work(geometry=...), "geometry", "exactly one"),
        (work(street="opawa-road"), "geometry", "exactly one"),
        (work(geometry={"type": "Point", "coordinates": [0, 0]}), "geometry", "outside the city"),
        (work(geometry={"type": "Point", "coordinates": "x"}), "geometry", "nor WKT"),
        (work(geometry="POINT (172.6 -43.53)"), "geometry", "must be a GeoJSON object"),
        (
            work(
                geometry={
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [172.601, -43.535],
                            [172.609, -43.531],
                            [172.609, -43.535],
                            [172.601, -43.531],
                            [172.601, -43.535],
                        ]
                    ],
                }
            ),
            "geometry",
            "invalid",
        ),
        (work(geometry=..., street="No Such Road"), "street", "no street"),
        (work(geometry=..., street="School Road"), "street", "several streets"),
        (work(planned_end="2013-12-31"), "planned_end", "before planned_start"),
        (work(status="complete"), "actual_end", "needs actual_end"),
        (work(status="planned", actual_end="2014-02-01"), "actual_end", "cannot have"),
        (work(measure="wellbeing-score"), "measure", "derived from works"),
        (work(measure=..., quantity=2), "quantity", "needs a measure"),
        (work(quantity=-1), "quantity", "negative"),
        (work(colour="red"), "colour", "unknown field"),
    ],
)
def test_a_bad_work_refuses_the_batch(client, tokens, stored, bad, field, words):
    before = stored()
    answer = post_works(client, tokens["council"], [work(id="ok-1"), bad])
    assert answer.status_code == 422, answer.get_json()
    errors = answer.get_json()["errors"]
    assert any(e["row"] == 1 and e["field"] == field and words in e["message"] for e in errors)
    assert stored() == before


@pytest.mark.parametrize("measure", ["pipes-relaid", "wellbeing-score"])
def test_a_work_naming_another_agencys_measure_is_403(client, tokens, stored, measure):
    """Derived from works or not, another agency's measure is refused as theirs."""
    before = stored()
    answer = post_works(client, tokens["eqc"], [work(measure=measure)])
    assert answer.status_code == 403
    assert "council" in answer.get_json()["errors"][0]["message"]
    assert stored() == before


def test_works_are_upserted_per_agency(client, tokens, stored):
    post_works(client, tokens["council"], [work()])
    post_works(client, tokens["eqc"], [work(measure=..., quantity=...)])
    assert stored()["Work"] == 2
    ids = {f["id"] for f in client.get("/api/v1/works?place=opawa").get_json()["features"]}
    assert ids == {"council/ww-001", "eqc/ww-001"}


def test_works_csv_with_wkt_and_lon_lat(client, tokens, stored):
    text = (
        "id,title,status,geometry,lon,lat,actual_start,actual_end\n"
        'a,Pipe,complete,"LINESTRING (172.605 -43.535, 172.615 -43.535)",,,2014-01-01,2014-02-01\n'
        "b,Pump station,planned,,172.605,-43.525,,\n"
    )
    answer = post_csv(client, tokens["council"], text, path="works")
    assert answer.status_code == 201, answer.get_json()
    assert stored()["Work"] == 2
    riccarton = client.get("/api/v1/works?place=riccarton").get_json()["features"]
    assert [f["id"] for f in riccarton] == ["council/b"]
    assert riccarton[0]["properties"]["updated_at"].endswith("Z")


def test_works_csv_reads_geojson_text_like_feeds_do(client, tokens, stored):
    point = '{""type"": ""Point"", ""coordinates"": [172.605, -43.525]}'
    text = f'id,title,status,geometry\nb,Pump station,planned,"{point}"\n'
    answer = post_csv(client, tokens["council"], text, path="works")
    assert answer.status_code == 201, answer.get_json()
    riccarton = client.get("/api/v1/works?place=riccarton").get_json()["features"]
    assert [f["id"] for f in riccarton] == ["council/b"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("?place=opawa&street=opawa-road", 400),
        ("?place=nowhere", 404),
        ("?street=nowhere", 404),
        ("?bbox=1,2,3", 400),
        ("?bbox=10,0,0,10", 400),
    ],
)
def test_works_queries_are_checked(client, query, status):
    answer = client.get(f"/api/v1/works{query}")
    assert answer.status_code == status
    assert answer.get_json()["error"]


def test_works_in_a_bbox_and_in_an_area(client, tokens):
    post_works(client, tokens["council"], [work()])
    inside = client.get("/api/v1/works?bbox=172.60,-43.54,172.62,-43.52").get_json()
    outside = client.get("/api/v1/works?bbox=172.70,-43.54,172.72,-43.52").get_json()
    area = client.get("/api/v1/works?place=heathcote").get_json()
    assert [f["id"] for f in inside["features"]] == ["council/ww-001"]
    assert outside["features"] == []
    assert [f["id"] for f in area["features"]] == ["council/ww-001"]


# --- the authorisation matrix --------------------------------------------------------------


def measure_owners(engine) -> dict[str, tuple[str, str | None]]:
    """Every measure of the tree with (its agency, its source), read from the database."""
    with Session(engine) as session:
        nodes = {n.id: n for n in session.scalars(select(Node))}

    def agency_of(node):
        while node.agency_id is None:
            node = nodes[node.parent_id]
        return node.agency_id

    return {n.id: (agency_of(n), n.source) for n in nodes.values() if n.kind == "measure"}


def test_each_agency_writes_its_own_measures_and_works_and_no_one_elses(
    client, tokens, stored, loaded
):
    owners = measure_owners(loaded[0])
    assert {agency for agency, _ in owners.values()} == set(tokens)  # both sides are tried
    expected, seen = {}, {}
    for agency, token in tokens.items():
        for measure, (owner, source) in owners.items():
            if source == "works":
                rows = [work(id=f"{agency}-{measure}", measure=measure)]
                path = "works"
            else:
                dims = {"age": "65+"} if measure == "people-supported" else ...
                rows = [row(measure=measure, dims=dims)]
                path = "observations"
            before = stored()
            answer = post(client, token, rows, path=path)
            seen[agency, measure, path] = answer.status_code
            expected[agency, measure, path] = 201 if owner == agency else 403
            if answer.status_code != 201:
                assert stored() == before, (agency, measure)
    assert seen == expected


def test_a_write_that_waits_too_long_for_sqlites_lock_is_503_and_stores_nothing(
    app, client, tokens, stored, database_url, monkeypatch
):
    """A long feed run holds SQLite's one write lock; a writer that times out may retry."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL writers wait on row locks, not on one database lock")
    import sqlite3

    from tracker import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    app.extensions["engine"].dispose()  # new connections take the short timeout
    before = stored()
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    holder.execute("BEGIN IMMEDIATE")
    try:
        answer = post(client, tokens["eqc"], [row()])
    finally:
        holder.rollback()
        holder.close()
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert "nothing was stored" in answer.get_json()["error"]
    assert stored() == before
    assert post(client, tokens["eqc"], [row()]).status_code == 201  # the retry goes through
