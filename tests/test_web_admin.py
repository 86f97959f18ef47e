"""/admin: officials issue and revoke API tokens, add and disable staff, read the audit."""

import re

import pytest
from sqlalchemy import select
from staff_helpers import PASSWORD, add_user, counts, post_form, sign_in

from tracker.db import get_session
from tracker.models import ApiToken, AuditEvent, User

OBSERVATION = {"measure": "homes-repaired", "place": "opawa", "date": "2014-03-31", "value": 5}


def _official(app, client) -> int:
    user_id = add_user(app, "official@ccc.example", "official")
    sign_in(client, "official@ccc.example")
    return user_id


def _post(client, path, data):
    return post_form(client, path, data, page="/admin")


def _rows(app, model, *where):
    with app.app_context():
        return get_session().scalars(select(model).where(*where)).all()


def _issue(client, agency="eqc", label="nightly") -> str:
    answer = _post(client, "/admin/tokens", {"agency": agency, "label": label})
    assert answer.status_code == 201
    return re.search(r'<code class="token">([^<]+)</code>', answer.get_data(as_text=True)).group(1)


def _send(client, token: str):
    """One observation through the write API with `token`."""
    return client.post(
        "/api/v1/observations",
        json={"observations": [OBSERVATION]},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_an_issued_token_is_shown_once_and_works(app, client):
    official = _official(app, client)
    answer = _post(client, "/admin/tokens", {"agency": "eqc", "label": "<b>nightly</b>"})
    assert answer.status_code == 201
    assert answer.headers["Cache-Control"] == "no-store"
    token = re.search(r'<code class="token">(rt_[^<]+)</code>', answer.get_data(as_text=True))[1]
    listing = client.get("/admin").get_data(as_text=True)
    assert token not in listing
    assert "&lt;b&gt;nightly&lt;/b&gt;" in listing
    (event,) = _rows(app, AuditEvent, AuditEvent.action.like("token.%"))
    assert (event.action, event.user_id, event.channel) == ("token.issue", official, "web")
    assert _send(client, token).status_code == 201


def test_a_revoked_token_is_refused_at_once(app, client):
    _official(app, client)
    token = _issue(client)
    (row,) = _rows(app, ApiToken)
    answer = _post(client, f"/admin/tokens/{row.id}/revoke", {})
    assert answer.status_code == 303
    assert f"Token #{row.id} of eqc is revoked" in client.get("/admin").get_data(as_text=True)
    assert _rows(app, ApiToken)[0].revoked_at is not None
    assert _send(client, token).status_code == 401


def test_revoking_an_unknown_token_is_404(app, client):
    _official(app, client)
    assert _post(client, "/admin/tokens/999/revoke", {}).status_code == 404


def test_issuing_for_an_unknown_agency_is_404_and_stores_nothing(app, client):
    _official(app, client)
    before = counts(app)
    assert _post(client, "/admin/tokens", {"agency": "nobody"}).status_code == 404
    assert counts(app) == before


def test_an_official_adds_a_staff_account_that_can_sign_in(app, client):
    _official(app, client)
    data = {"email": "New@EQC.example", "role": "agency", "agency": "eqc", "password": PASSWORD}
    answer = _post(client, "/admin/users", data)
    assert answer.status_code == 303
    assert "Account new@eqc.example (agency) created" in client.get("/admin").get_data(as_text=True)
    newcomer = app.test_client()
    assert sign_in(newcomer, "new@eqc.example").headers["Location"] == "/agency"


def test_an_official_account_gets_no_agency_whatever_the_form_sends(app, client):
    _official(app, client)
    data = {"email": "o2@ccc.example", "role": "official", "agency": "eqc", "password": PASSWORD}
    assert _post(client, "/admin/users", data).status_code == 303
    assert _rows(app, User, User.email == "o2@ccc.example")[0].agency_id is None


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"password": "too short"}, 400, "at least 12 characters"),
        ({"email": "nobody"}, 400, "not an email"),
        ({"agency": "nobody"}, 400, "need an existing agency"),
        ({"role": "root"}, 400, "role must be"),
        ({"email": "official@ccc.example"}, 409, "already an account"),
    ],
)
def test_adding_a_bad_account_is_refused_and_stores_nothing(app, client, change, status, message):
    _official(app, client)
    before = counts(app)
    data = {"email": "x@eqc.example", "role": "agency", "agency": "eqc", "password": PASSWORD}
    answer = _post(client, "/admin/users", {**data, **change})
    assert answer.status_code == status
    assert message in answer.get_data(as_text=True)
    assert 'value="x@eqc.example"' in answer.get_data(as_text=True) or "email" in change
    assert counts(app) == before


def test_a_disabled_account_is_signed_out_and_cannot_sign_in(app, client):
    _official(app, client)
    staff_id = add_user(app, "staff@eqc.example")
    staff = app.test_client()
    sign_in(staff, "staff@eqc.example")
    assert _post(client, f"/admin/users/{staff_id}/disable", {}).status_code == 303
    assert staff.get("/agency").status_code == 303
    assert sign_in(staff, "staff@eqc.example").status_code == 401
    page = client.get("/admin").get_data(as_text=True)
    assert "disabled" in page


def test_an_official_cannot_disable_their_own_account(app, client):
    official = _official(app, client)
    assert f"/admin/users/{official}/disable" not in client.get("/admin").get_data(as_text=True)
    assert _post(client, f"/admin/users/{official}/disable", {}).status_code == 400
    assert _rows(app, User)[0].disabled_at is None


def test_a_disabled_account_can_be_enabled_again_without_its_old_sessions(app, client):
    _official(app, client)
    staff_id = add_user(app, "staff@eqc.example")
    before = app.test_client()
    sign_in(before, "staff@eqc.example")
    _post(client, f"/admin/users/{staff_id}/disable", {})
    assert _post(client, f"/admin/users/{staff_id}/enable", {}).status_code == 303
    assert sign_in(app.test_client(), "staff@eqc.example").headers["Location"] == "/agency"
    assert before.get("/agency").status_code == 303  # the session from before stays ended
    actions = [e.action for e in _rows(app, AuditEvent, AuditEvent.action.like("user.%able"))]
    assert actions == ["user.disable", "user.enable"]


def test_a_new_password_replaces_the_old_one_and_ends_open_sessions(app, client):
    official = _official(app, client)
    staff_id = add_user(app, "staff@eqc.example")
    staff = app.test_client()
    sign_in(staff, "staff@eqc.example")
    for _ in range(3):
        sign_in(app.test_client(), "staff@eqc.example", "wrong password")
    fresh = "a brand new passphrase"
    answer = _post(client, f"/admin/users/{staff_id}/password", {"password": fresh})
    assert answer.status_code == 303
    assert "has a new password" in client.get("/admin").get_data(as_text=True)
    assert staff.get("/agency").status_code == 303  # signed out
    assert sign_in(app.test_client(), "staff@eqc.example").status_code == 401
    assert sign_in(app.test_client(), "staff@eqc.example", fresh).status_code == 303
    (row,) = _rows(app, User, User.id == staff_id)
    assert row.failed_logins == 0 and row.locked_until is None
    (event,) = _rows(app, AuditEvent, AuditEvent.action == "user.password")
    assert (event.entity_id, event.user_id, event.old, event.new) == (
        "user/staff@eqc.example",
        official,
        None,
        None,
    )


@pytest.mark.parametrize("password", ["", "too short", "x" * 1025])
def test_a_bad_new_password_is_refused_and_changes_nothing(app, client, password):
    _official(app, client)
    staff_id = add_user(app, "staff@eqc.example")
    before = counts(app), _rows(app, User, User.id == staff_id)[0].password_hash
    answer = _post(client, f"/admin/users/{staff_id}/password", {"password": password})
    assert answer.status_code == 400
    assert "Password not changed: The password must have" in answer.get_data(as_text=True)
    assert (counts(app), _rows(app, User, User.id == staff_id)[0].password_hash) == before
    assert sign_in(app.test_client(), "staff@eqc.example").status_code == 303


def test_setting_a_password_needs_an_official_a_csrf_token_and_an_account(app, client):
    staff_id = add_user(app, "staff@eqc.example")
    path = f"/admin/users/{staff_id}/password"
    fresh = {"password": "a brand new passphrase"}
    sign_in(client, "staff@eqc.example")
    assert _post(client, path, fresh).status_code == 403
    _official(app, client)
    assert client.post(path, data=fresh).status_code == 400  # no CSRF token
    assert _post(client, "/admin/users/999/password", fresh).status_code == 404
    assert sign_in(app.test_client(), "staff@eqc.example").status_code == 303  # unchanged


def test_the_audit_trail_shows_who_changed_what_and_filters(app, client):
    add_user(app, "staff@eqc.example")
    staff = app.test_client()
    sign_in(staff, "staff@eqc.example")
    for value in ("5", "8"):
        data = {**OBSERVATION, "value": value}
        assert post_form(staff, "/agency/observations", data, page="/agency").status_code == 303
    _official(app, client)
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "observation.revise" in page and "observation.create" in page
    assert "staff@eqc.example" in page
    assert page.index("observation.revise") < page.index("observation.create")  # newest first
    filtered = client.get("/admin/audit?measure=wellbeing-score").get_data(as_text=True)
    assert "observation.create" not in filtered
    by_place = client.get("/admin/audit?measure=homes-repaired&place=opawa")
    assert "observation.revise" in by_place.get_data(as_text=True)


@pytest.mark.parametrize("page", ["/admin", "/admin/audit"])
def test_agency_staff_get_403_and_anonymous_visitors_sign_in(app, client, page):
    assert client.get(page).headers["Location"].startswith("/login")
    add_user(app, "staff@eqc.example")
    sign_in(client, "staff@eqc.example")
    assert client.get(page).status_code == 403
    assert _post(client, "/admin/tokens", {"agency": "eqc"}).status_code == 403
    assert _rows(app, ApiToken) == []


@pytest.mark.parametrize("path", ["/admin", "/admin/audit", "/admin/comments", "/admin/reports"])
def test_every_admin_page_has_the_same_tabs_with_itself_current(app, client, path):
    from bs4 import BeautifulSoup

    _official(app, client)
    soup = BeautifulSoup(client.get(path).get_data(as_text=True), "html.parser")
    tabs = soup.select("nav.tabs[aria-label='Admin pages'] a")
    assert [a["href"] for a in tabs] == ["/admin", "/admin/audit", "/admin/comments",
                                         "/admin/reports"]  # fmt: skip
    assert [a["href"] for a in tabs if a.get("aria-current") == "page"] == [path]
