"""GET /api/v1/audit: every accepted change, for signed-in officials only."""

import pytest
from sqlmodel import Session

from tracker.auth import create_user, issue_token

HTTPS = "https://localhost"


@pytest.fixture
def people(loaded):
    """An official, an agency user and an eqc token."""
    engine, _ = loaded
    with Session(engine) as session:
        official = create_user(session, "official@council.example", "a long password!", "official")
        staff = create_user(session, "staff@eqc.example", "a long password!", "agency", "eqc")
        token = issue_token(session, "eqc")
        session.commit()
        return {"official": official.id, "staff": staff.id, "token": token}


def sign_in(client, user_id: int) -> None:
    with client.session_transaction(base_url=HTTPS) as web_session:
        web_session["uid"] = user_id
        web_session["ver"] = 0  # a new account's session version


def submit(client, token, value, place="opawa"):
    answer = client.post(
        "/api/v1/observations",
        json={
            "observations": [
                {"measure": "homes-repaired", "place": place, "date": "2014-03-31", "value": value}
            ]
        },
        headers={"Authorization": f"Bearer {token}"},
        base_url=HTTPS,
    )
    assert answer.status_code == 201


def test_anonymous_is_401(client, people):
    assert client.get("/api/v1/audit", base_url=HTTPS).status_code == 401


def test_agency_staff_get_403(client, people):
    sign_in(client, people["staff"])
    assert client.get("/api/v1/audit", base_url=HTTPS).status_code == 403


def test_officials_see_each_change_with_old_and_new(client, people):
    submit(client, people["token"], 10)
    submit(client, people["token"], 12)
    submit(client, people["token"], 5, place="riccarton")
    sign_in(client, people["official"])
    answer = client.get("/api/v1/audit?measure=homes-repaired&place=opawa", base_url=HTTPS)
    assert answer.status_code == 200
    changes = answer.get_json()
    assert [(c["action"], c["old"], c["new"]) for c in changes] == [
        ("observation.revise", {"value": 10.0}, {"value": 12.0}),
        ("observation.create", None, {"value": 10.0}),
    ]
    assert all(c["channel"] == "api" and c["agency"] == "eqc" for c in changes)
    assert all(c["token"] is not None and c["at"].endswith("Z") for c in changes)
    assert changes[0]["entity"] == "homes-repaired/opawa/2014-03-31"


def test_the_old_value_is_found_even_when_its_revision_is_beyond_the_limit(client, people):
    for value in (10, 12, 15):
        submit(client, people["token"], value)
    sign_in(client, people["official"])
    query = "/api/v1/audit?measure=homes-repaired&place=opawa&limit=1"
    (change,) = client.get(query, base_url=HTTPS).get_json()
    assert (change["old"], change["new"]) == ({"value": 12.0}, {"value": 15.0})


def test_the_trail_includes_token_and_work_events(client, people):
    sign_in(client, people["official"])
    changes = client.get("/api/v1/audit", base_url=HTTPS).get_json()
    assert "token.issue" in {c["action"] for c in changes}


def test_bad_parameters_are_400(client, people):
    sign_in(client, people["official"])
    assert client.get("/api/v1/audit?limit=0", base_url=HTTPS).status_code == 400
    assert client.get("/api/v1/audit?colour=red", base_url=HTTPS).status_code == 400
