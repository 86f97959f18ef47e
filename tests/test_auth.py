"""Staff accounts, sign-in (lockout, address limit), sessions, CSRF and the account CLI."""

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlmodel import Session, select
from staff_helpers import PASSWORD, add_user, counts, csrf_token, post_form, sign_in
from werkzeug.security import check_password_hash

from tracker.auth import (
    AGENCY_RETIRED,
    LOCK_TIME,
    LOGIN_REFUSED,
    LoginRefused,
    LoginThrottle,
    active_user,
    agency_for_token,
    authenticate,
    create_user,
    disable_user,
    issue_token,
)
from tracker.cli import main
from tracker.errors import TrackerError
from tracker.models import Agency, ApiToken, AuditEvent, User, utcnow


@pytest.fixture
def db(loaded):
    """A session on the tiny city's database (agencies eqc and council exist)."""
    engine, _tree = loaded
    with Session(engine, expire_on_commit=False) as session:
        yield session


def _login(db, email, password=PASSWORD, *, throttle=None, address="10.0.0.1", now=None):
    try:
        return authenticate(
            db, email, password, address=address, throttle=throttle or LoginThrottle(), now=now
        )
    finally:
        db.commit()  # as the sign-in page does: failures count


# --- accounts ---------------------------------------------------------------------------------


def test_create_user_keeps_a_scrypt_hash_and_a_lower_case_email(db):
    user = create_user(db, " Staff@EQC.example ", PASSWORD, "agency", "eqc")
    db.commit()
    assert user.email == "staff@eqc.example"
    assert user.password_hash.startswith("scrypt:")
    assert PASSWORD not in user.password_hash
    assert db.exec(select(AuditEvent.action)).all() == ["user.create"]


@pytest.mark.parametrize(
    ("email", "password", "role", "agency", "expected"),
    [
        ("not-an-email", PASSWORD, "official", None, "not an email"),
        ("a@b.example", "short", "official", None, "at least 12"),
        ("a@b.example", PASSWORD, "admin", None, "role must be"),
        ("a@b.example", PASSWORD, "agency", None, "need an existing agency"),
        ("a@b.example", PASSWORD, "agency", "nobody", "need an existing agency"),
        ("a@b.example", PASSWORD, "official", "eqc", "do not belong"),
    ],
)
def test_create_user_refuses_bad_accounts(db, email, password, role, agency, expected):
    with pytest.raises(TrackerError) as refused:
        create_user(db, email, password, role, agency)
    assert expected in refused.value.message
    assert db.exec(select(User)).all() == []


def test_passwords_are_hashed_at_werkzeugs_full_scrypt_cost_outside_the_tests():
    # tests/conftest.py lowers the cost for speed; a fresh process has the real one.
    code = "from tracker.auth import hash_password; print(hash_password('x' * 12))"
    made = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    stored = made.stdout.strip()
    assert stored.startswith("scrypt:32768:8:1$")
    assert check_password_hash(stored, "x" * 12)


def test_create_user_refuses_a_taken_email_whatever_its_case(db):
    create_user(db, "a@b.example", PASSWORD, "official")
    with pytest.raises(TrackerError) as refused:
        create_user(db, "A@B.example", PASSWORD, "official")
    assert refused.value.status == 409


# --- authenticate -------------------------------------------------------------------------------


def test_authenticate_accepts_the_right_password_and_records_the_sign_in(db):
    create_user(db, "a@b.example", PASSWORD, "official")
    user = _login(db, "A@b.example")
    assert user.email == "a@b.example"
    assert user.last_login_at is not None and user.failed_logins == 0


@pytest.mark.parametrize("case", ["unknown", "wrong password", "disabled", "locked"])
def test_every_refusal_says_the_same(db, case):
    user = create_user(db, "a@b.example", PASSWORD, "official")
    if case == "disabled":
        disable_user(db, user.id)
    if case == "locked":
        user.locked_until = utcnow() + timedelta(minutes=5)
    db.commit()
    email = "nobody@b.example" if case == "unknown" else "a@b.example"
    password = "wrong password!" if case == "wrong password" else PASSWORD
    with pytest.raises(LoginRefused) as refused:
        _login(db, email, password)
    assert refused.value.message == LOGIN_REFUSED
    assert refused.value.status == 401


def test_five_wrong_passwords_lock_the_account_for_fifteen_minutes(db):
    create_user(db, "a@b.example", PASSWORD, "official")
    start = utcnow()
    for _ in range(5):
        with pytest.raises(LoginRefused):
            _login(db, "a@b.example", "wrong password!", now=start)
    locked = db.exec(select(User)).one()
    db.refresh(locked)
    assert locked.locked_until is not None
    with pytest.raises(LoginRefused):  # the right password does not help while locked
        _login(db, "a@b.example", now=start + LOCK_TIME - timedelta(seconds=1))
    assert _login(db, "a@b.example", now=start + LOCK_TIME).locked_until is None


def test_four_wrong_passwords_do_not_lock(db):
    create_user(db, "a@b.example", PASSWORD, "official")
    for _ in range(4):
        with pytest.raises(LoginRefused):
            _login(db, "a@b.example", "wrong password!")
    assert _login(db, "a@b.example").failed_logins == 0


def test_an_address_with_twenty_failures_in_ten_minutes_is_refused(db):
    create_user(db, "a@b.example", PASSWORD, "official")
    throttle, start = LoginThrottle(), utcnow()
    for i in range(20):  # spread over accounts, so no account lock is involved
        with pytest.raises(LoginRefused):
            _login(db, f"guess{i}@b.example", throttle=throttle, now=start)
    with pytest.raises(LoginRefused) as refused:
        _login(db, "a@b.example", throttle=throttle, now=start)
    assert refused.value.status == 429
    assert _login(db, "a@b.example", throttle=throttle, address="10.0.0.2", now=start)
    later = start + timedelta(minutes=10)
    assert _login(db, "a@b.example", throttle=throttle, now=later)


def test_the_throttle_forgets_the_oldest_address_when_full():
    throttle, now = LoginThrottle(limit=1, max_addresses=2), utcnow()
    for address in ("a", "b", "c"):
        throttle.record_failure(address, now)
    assert throttle.allows("a", now)
    assert not throttle.allows("b", now) and not throttle.allows("c", now)


# --- the sign-in page and sessions --------------------------------------------------------------


@pytest.mark.parametrize(("role", "home"), [("agency", "/agency"), ("official", "/admin")])
def test_signing_in_goes_to_the_users_page(app, client, role, home):
    add_user(app, "staff@example.org", role)
    answer = sign_in(client, "staff@example.org")
    assert answer.status_code == 303
    assert answer.headers["Location"] == home
    page = client.get(home).get_data(as_text=True)
    assert "Signed in as staff@example.org" in page
    assert "Sign out" in page


def test_a_wrong_password_is_refused_and_counted(app, client):
    user_id = add_user(app, "staff@example.org")
    answer = sign_in(client, "staff@example.org", "wrong password!")
    assert answer.status_code == 401
    assert LOGIN_REFUSED.replace(",", "") in answer.get_data(as_text=True).replace(",", "")
    assert client.get("/agency").status_code == 303  # still anonymous
    with app.app_context():
        from tracker.db import get_session

        assert get_session().get(User, user_id).failed_logins == 1


def test_the_page_refuses_an_address_after_too_many_failures(app, client):
    app.extensions["login_throttle"] = LoginThrottle(limit=3)
    add_user(app, "staff@example.org")
    for _ in range(3):
        assert sign_in(client, "nobody@example.org").status_code == 401
    answer = sign_in(client, "staff@example.org")
    assert answer.status_code == 429
    assert "Too many failed sign-ins" in answer.get_data(as_text=True)
    other = sign_in(client, "staff@example.org", environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 303


def test_a_disabled_account_cannot_sign_in(app, client):
    user_id = add_user(app, "staff@example.org")
    with app.app_context():
        from tracker.db import get_session

        disable_user(get_session(), user_id)
        get_session().commit()
    assert sign_in(client, "staff@example.org").status_code == 401


def test_disabling_an_account_ends_its_open_session(app, client):
    user_id = add_user(app, "staff@example.org")
    sign_in(client, "staff@example.org")
    assert client.get("/agency").status_code == 200
    with app.app_context():
        from tracker.db import get_session

        disable_user(get_session(), user_id)
        get_session().commit()
    answer = client.get("/agency")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/login")


def test_signing_in_starts_a_new_session(app, client):
    add_user(app, "staff@example.org")
    before = csrf_token(client)
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    sign_in(client, "staff@example.org")
    with client.session_transaction() as session:
        first = dict(session)
    assert "planted" not in first and "csrf" not in first
    assert set(first) >= {"uid", "ver"}
    signed_in = csrf_token(client, "/agency")
    assert signed_in != before
    sign_in(client, "staff@example.org")
    assert csrf_token(client, "/agency") not in (before, signed_in)


def test_the_session_cookie_is_secure_httponly_and_lax(app, client):
    add_user(app, "staff@example.org")
    answer = sign_in(client, "staff@example.org", base_url="https://localhost")
    cookie = next(
        h for h in answer.headers.getlist("Set-Cookie") if h.startswith("tracker_session=")
    )
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags


def test_signing_out_ends_the_session(app, client):
    add_user(app, "staff@example.org")
    sign_in(client, "staff@example.org")
    assert client.get("/logout").status_code == 405
    answer = post_form(client, "/logout", {}, page="/agency")
    assert answer.status_code == 303
    assert client.get("/agency").status_code == 303


def test_signing_out_ends_a_copy_of_the_session_cookie_too(app, client):
    add_user(app, "staff@example.org")
    sign_in(client, "staff@example.org")
    stolen = client.get_cookie("tracker_session").value
    copy = app.test_client()
    copy.set_cookie("tracker_session", stolen)
    assert copy.get("/agency").status_code == 200
    post_form(client, "/logout", {}, page="/agency")
    assert copy.get("/agency").status_code == 303  # to /login
    sign_in(client, "staff@example.org")  # signing in again works, with a new session
    assert client.get("/agency").status_code == 200
    assert copy.get("/agency").status_code == 303


@pytest.mark.parametrize(
    ("wanted", "lands"),
    [
        ("/agency/works", "/agency/works"),
        ("//evil.example/x", "/agency"),
        ("https://evil.example/", "/agency"),
        ("/\\evil.example", "/agency"),
        ("", "/agency"),
    ],
)
def test_signing_in_returns_only_to_pages_of_this_site(app, client, wanted, lands):
    add_user(app, "staff@example.org")
    data = {"email": "staff@example.org", "password": PASSWORD, "next": wanted}
    assert post_form(client, "/login", data).headers["Location"] == lands


@pytest.mark.parametrize("page", ["/agency", "/agency/works", "/agency/observations", "/admin"])
def test_anonymous_visitors_are_sent_to_sign_in(client, page):
    answer = client.get(page)
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"/login?next={page}"


@pytest.mark.parametrize(
    ("role", "page"), [("agency", "/admin"), ("agency", "/admin/audit"), ("official", "/agency")]
)
def test_each_role_is_refused_the_others_pages(app, client, role, page):
    add_user(app, "staff@example.org", role)
    sign_in(client, "staff@example.org")
    assert client.get(page).status_code == 403


# --- CSRF ---------------------------------------------------------------------------------------

FORMS = [
    ("anonymous", "/login", {"email": "staff@example.org", "password": PASSWORD}),
    ("agency", "/logout", {}),
    (
        "agency",
        "/agency/observations",
        {"measure": "homes-repaired", "place": "opawa", "date": "2014-03-31", "value": "5"},
    ),
    (
        "agency",
        "/agency/works",
        {"id": "w1", "title": "Relay", "status": "planned", "lon": "172.605", "lat": "-43.535"},
    ),
    ("agency", "/agency/uploads", {"kind": "observations"}),
    ("agency", "/agency/uploads/0123456789abcdef0123456789abcdef", {}),
    ("agency", "/agency/uploads/0123456789abcdef0123456789abcdef/discard", {}),
    ("official", "/admin/tokens", {"agency": "eqc", "label": "x"}),
    ("official", "/admin/tokens/1/revoke", {}),
    (
        "official",
        "/admin/users",
        {"email": "n@example.org", "role": "official", "password": PASSWORD},
    ),
    ("official", "/admin/users/1/disable", {}),
]


@pytest.mark.parametrize(("role", "path", "data"), FORMS, ids=[f[1] for f in FORMS])
@pytest.mark.parametrize("token", ["missing", "wrong"])
def test_every_form_refuses_a_post_without_the_sessions_token(app, client, role, path, data, token):
    if role != "anonymous":
        add_user(app, "staff@example.org", role)
        sign_in(client, "staff@example.org")
    csrf_token(client, "/login")  # the session has a token: the request just does not send it
    before = counts(app)
    sent = {} if token == "missing" else {"csrf_token": "not-the-token"}
    answer = client.post(path, data={**data, **sent})
    assert answer.status_code == 400
    assert "did not come from this site" in answer.get_data(as_text=True)
    assert counts(app) == before
    with client.session_transaction() as session:  # still signed in as before
        assert ("uid" in session) == (role != "anonymous")


def test_the_api_is_not_subject_to_csrf(client):
    """A form-less POST to the API is judged by its Bearer token, not by a CSRF token."""
    answer = client.post("/api/v1/observations", json={"observations": []})
    assert answer.status_code == 401
    assert answer.is_json


# --- command line -------------------------------------------------------------------------------


def test_user_add_asks_for_the_password_twice(runner, loaded, db):
    result = runner.invoke(
        main,
        ["user", "add", "Staff@EQC.example", "--role", "agency", "--agency", "eqc"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created agency account staff@eqc.example of eqc" in result.output
    assert PASSWORD not in result.output
    assert _login(db, "staff@eqc.example").agency_id == "eqc"


def test_user_add_reads_the_password_from_stdin(runner, loaded, db):
    result = runner.invoke(
        main,
        ["user", "add", "boss@ccc.example", "--role", "official", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert _login(db, "boss@ccc.example").role == "official"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--role", "agency", "--agency", "nobody"], "need an existing agency"),
        (["--role", "agency"], "need an existing agency"),
        (["--role", "official", "--agency", "eqc"], "do not belong"),
    ],
)
def test_user_add_refuses_bad_accounts(runner, loaded, db, arguments, expected):
    result = runner.invoke(
        main, ["user", "add", "a@b.example", *arguments, "--password-stdin"], input=PASSWORD
    )
    assert result.exit_code == 1
    assert expected in result.output
    assert db.exec(select(User)).all() == []


def test_user_password_sets_a_new_password(runner, loaded, db):
    runner.invoke(
        main, ["user", "add", "boss@ccc.example", "--role", "official", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    fresh = "another long passphrase"
    result = runner.invoke(
        main, ["user", "password", "Boss@CCC.example", "--password-stdin"], input=f"{fresh}\n"
    )
    assert result.exit_code == 0, result.output
    assert "New password set for boss@ccc.example" in result.output
    assert _login(db, "boss@ccc.example", fresh).role == "official"
    with pytest.raises(LoginRefused):
        _login(db, "boss@ccc.example")


@pytest.mark.parametrize(
    ("email", "password", "expected"),
    [("nobody@ccc.example", "another long passphrase", "no account for nobody@ccc.example"),
     ("boss@ccc.example", "short", "at least 12 characters")],
)  # fmt: skip
def test_user_password_refuses_unknown_accounts_and_short_passwords(
    runner, loaded, db, email, password, expected
):
    runner.invoke(
        main, ["user", "add", "boss@ccc.example", "--role", "official", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    result = runner.invoke(
        main, ["user", "password", email, "--password-stdin"], input=f"{password}\n"
    )
    assert result.exit_code == 1
    assert expected in result.output
    assert _login(db, "boss@ccc.example").role == "official"  # the old password still works


def test_agency_tokens_lists_and_revoke_refuses_at_once(runner, loaded, db):
    token = issue_token(db, "eqc", "nightly upload")
    issue_token(db, "council", "not listed")
    db.commit()
    token_id = agency_for_token(db, token).id
    db.commit()
    listing = runner.invoke(main, ["agency", "tokens", "eqc"])
    assert listing.exit_code == 0, listing.output
    assert "nightly upload" in listing.output and "not listed" not in listing.output
    line = next(row for row in listing.output.splitlines() if "nightly upload" in row)
    assert line.split()[0] == str(token_id)
    revoked = runner.invoke(main, ["agency", "revoke", str(token_id)])
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(TrackerError) as refused:
        agency_for_token(db, token)
    assert refused.value.status == 401
    relisted = runner.invoke(main, ["agency", "tokens", "eqc"]).output
    assert relisted.count(utcnow().strftime("%Y-%m-%d")) == 3  # created, last used, revoked


def test_agency_revoke_refuses_an_unknown_token(runner, loaded):
    result = runner.invoke(main, ["agency", "revoke", "999"])
    assert result.exit_code == 1
    assert "no token 999" in result.output


def test_revoking_records_an_audit_event(db):
    issue_token(db, "eqc")
    token_id = db.exec(select(ApiToken.id)).one()
    from tracker.auth import revoke_token

    revoke_token(db, token_id)
    revoke_token(db, token_id)  # once revoked, nothing more happens
    actions = db.exec(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["token.issue", "token.revoke"]


def test_a_token_label_over_the_limit_is_refused_and_nothing_stored(db):
    with pytest.raises(TrackerError, match="longer than 200"):
        issue_token(db, "eqc", "x" * 201)
    db.rollback()
    assert db.scalars(select(ApiToken)).all() == []
    assert issue_token(db, "eqc", "x" * 200).startswith("rt_")


# --- an agency the tree dropped ----------------------------------------------------------------


def _retire_agency(db, agency_id: str, retired: bool = True) -> None:
    """What `tracker init` does to an agency the tree no longer has (and undoes)."""
    db.get(Agency, agency_id).retired_at = utcnow() if retired else None
    db.commit()


def test_a_retired_agencys_token_is_401_and_works_again_when_it_returns(db):
    token = issue_token(db, "council")
    db.commit()
    _retire_agency(db, "council")
    with pytest.raises(TrackerError, match="'council' is no longer in the results tree") as caught:
        agency_for_token(db, token)
    assert caught.value.status == 401
    _retire_agency(db, "council", retired=False)
    assert agency_for_token(db, token).agency_id == "council"


def test_a_retired_agencys_staff_are_told_why_only_with_the_right_password(db):
    user = create_user(db, "staff@council.example", PASSWORD, "agency", "council")
    db.commit()
    _retire_agency(db, "council")
    with pytest.raises(LoginRefused) as wrong:
        _login(db, "staff@council.example", "wrong password!")
    assert wrong.value.message == LOGIN_REFUSED
    with pytest.raises(LoginRefused) as right:
        _login(db, "staff@council.example")
    assert right.value.status == 403
    assert right.value.message == AGENCY_RETIRED.format(agency="council")
    assert active_user(db, user.id) is None
    _retire_agency(db, "council", retired=False)
    assert _login(db, "staff@council.example").id == user.id
    assert active_user(db, user.id).id == user.id
