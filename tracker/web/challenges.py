""" "This isn't finished": the resident's form on a complete work, and the agency's tab.

Routes: `/works/AGENCY/REF/challenge` (the form: CSRF, a honeypot, CHALLENGE_LIMIT per
client per hour); `/agency/challenges` (the signed-in agency's challenges) with
`/agency/challenges/ID/answer` and `/agency/challenges/ID/hide`. What the work page shows
is in tracker.challenges.
"""

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from tracker import challenges
from tracker.agencies import find_agency
from tracker.db import get_session
from tracker.errors import NotFound, TrackerError
from tracker.ratelimit import enforce, request_client
from tracker.web.auth import current_user, login_required
from tracker.web.pages import render_page
from tracker.works import find_work

bp = Blueprint("challenges", __name__)

CHALLENGE_LIMIT = 5  # challenges per client …
CHALLENGE_PER_SECONDS = 3600  # … per hour, across every worker (tracker.ratelimit)
HONEYPOT = "website"  # a field people never see and bots fill in
FIELDS = ("note", "location", "author_name", "email")


@bp.route("/works/<agency_id>/<path:ref>/challenge", methods=["GET", "POST"])
def challenge(agency_id: str, ref: str):
    """The "This isn't finished?" form of a complete work."""
    session = get_session()
    work = find_work(session, agency_id, ref)
    agency = find_agency(session, agency_id)
    if agency.retired_at is not None:  # the work's page stays; nobody is there to answer
        raise NotFound(f"no work {agency_id}/{ref} taking challenges")
    form = {name: request.form.get(name, "") for name in FIELDS}

    def form_page(error=None, status=200, headers=None):
        page = render_page("public/challenge.html", work=work, agency=agency, form=form,
                           error=error, complete=work.status == "complete")  # fmt: skip
        return page, status, headers or {}

    if work.status != "complete":
        return form_page("This work is not marked complete, so there is nothing to "
                         "challenge: only a complete work can be said to be unfinished.",
                         status=409)  # fmt: skip
    if request.method == "GET":
        return form_page()
    if request.form.get(HONEYPOT):  # a bot: answer as if accepted, store nothing
        return render_page("public/challenge_sent.html", work=work, agency=agency)
    try:
        enforce(session, bucket="challenge", client=request_client(), what="notes",
                limit=CHALLENGE_LIMIT, per_seconds=CHALLENGE_PER_SECONDS)  # fmt: skip
        challenges.submit_challenge(
            session,
            work,
            note=form["note"],
            location=form["location"],
            author_name=form["author_name"],
            email=form["email"],
            settings=current_app.config["SETTINGS"],
        )
    except TrackerError as exc:
        session.rollback()
        return form_page(exc.message, exc.status, exc.headers())
    session.commit()
    return render_page("public/challenge_sent.html", work=work, agency=agency)


# --- the agency's tab -----------------------------------------------------------------------


@bp.get("/agency/challenges")
@login_required("agency")
def agency_challenges():
    """The agency's open challenges, each with an answer form and a hide button; then the
    answered and hidden ones."""
    return _agency_page()


def _agency_page(*, failed: int | None = None, error: str | None = None, text: str = "",
                 status: int = 200):  # fmt: skip
    session, user = get_session(), current_user()
    page = render_template(
        "agency/challenges.html",
        open=challenges.open_for_agency(session, user.agency_id),
        closed=challenges.closed_for_agency(session, user.agency_id),
        failed=failed,
        error=error,
        text=text,
        limit=challenges.NOTE_MAX,
    )
    return page, status


@bp.post("/agency/challenges/<int:challenge_id>/answer")
@login_required("agency")
def answer(challenge_id: int):
    """Answer one of the agency's challenges: the note and answer are then public."""
    session, user = get_session(), current_user()
    text = request.form.get("answer", "")
    try:
        challenges.answer(session, challenge_id, agency_id=user.agency_id, user_id=user.id,
                          answer=text)  # fmt: skip
    except NotFound:
        session.rollback()
        raise
    except TrackerError as exc:
        session.rollback()
        return _agency_page(failed=challenge_id, error=exc.message, text=text, status=exc.status)
    session.commit()
    flash("Answer published on the work page, with the resident's note.", "info")
    return redirect(url_for(".agency_challenges"), 303)


@bp.post("/agency/challenges/<int:challenge_id>/hide")
@login_required("agency")
def hide(challenge_id: int):
    """Hide one of the agency's challenges: it is never shown publicly."""
    session, user = get_session(), current_user()
    challenges.hide(session, challenge_id, agency_id=user.agency_id, user_id=user.id)
    session.commit()
    flash("Challenge hidden: it is not shown on the work page.", "info")
    return redirect(url_for(".agency_challenges"), 303)
