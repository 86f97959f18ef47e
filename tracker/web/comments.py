"""Residents' comments: the comment forms and "report this comment".

Routes: `/places/ID/comment`, `/works/AGENCY/REF/comment`, `/measures/ID/comment` (a form
page of its own: CSRF token, honeypot, rate limit); `/comments/ID/report` (GET: a page
with the button; POST: count the report). The place, work and measure pages are cached
per data stamp and hold no CSRF token, so their "Report this comment" button is a plain
GET to the report page, which carries the token. Moderation is on /admin/comments
(tracker.web.admin).
"""

from flask import Blueprint, current_app, request

from tracker import comments
from tracker.clock import city_timezone, local_time
from tracker.db import get_session
from tracker.errors import TrackerError
from tracker.ratelimit import enforce, request_client
from tracker.web.pages import render_page

bp = Blueprint("comments", __name__)

COMMENT_LIMIT = 5  # comments per client …
COMMENT_PER_SECONDS = 3600  # … per hour, across every worker (tracker.ratelimit)
REPORT_LIMIT = 20  # reports per client per hour
HONEYPOT = "website"  # a field people never see and bots fill in


def comment_rows(session, **target) -> list[dict]:
    """The published comments on one place, work or measure, as the pages show them:
    id, name, local time, body (never the email)."""
    timezone = city_timezone(session)
    return [
        {
            "id": c.id,
            "name": c.author_name,
            "body": c.body,
            "at": local_time(c.published_at or c.created_at, timezone),
        }
        for c in comments.published_for(session, **target)
    ]


@bp.route("/places/<place_id>/comment", methods=["GET", "POST"])
def place_comment(place_id: str):
    return _comment("place", place_id)


@bp.route("/works/<agency_id>/<path:ref>/comment", methods=["GET", "POST"])
def work_comment(agency_id: str, ref: str):
    return _comment("work", agency_id, ref)


@bp.route("/measures/<node_id>/comment", methods=["GET", "POST"])
def measure_comment(node_id: str):
    return _comment("measure", node_id)


def _comment(kind: str, *key: str):
    """The form, and its POST: 404 for an unknown target (comments.find_target)."""
    session = get_session()
    target = comments.find_target(session, kind, *key)
    form = {"author_name": "", "email": "", "body": ""}
    if request.method == "GET":
        return render_page("public/comment.html", target=target, form=form, error=None)
    form = {name: request.form.get(name, "") for name in form}
    if request.form.get(HONEYPOT):  # a bot: answer as if accepted, store nothing
        return render_page("public/comment_sent.html", target=target)
    try:
        enforce(session, bucket="comment", client=request_client(), what="comments",
                limit=COMMENT_LIMIT, per_seconds=COMMENT_PER_SECONDS)  # fmt: skip
        comments.submit_comment(session, target=target, settings=current_app.config["SETTINGS"],
                                **form)  # fmt: skip
    except TrackerError as exc:
        session.rollback()
        page = render_page("public/comment.html", target=target, form=form, error=exc)
        return page, exc.status, exc.headers()
    session.commit()
    return render_page("public/comment_sent.html", target=target)


@bp.route("/comments/<int:comment_id>/report", methods=["GET", "POST"])
def report(comment_id: int):
    """Report a published comment to the moderators (404 for any other)."""
    session = get_session()
    comment = comments.published_comment(session, comment_id)
    target = comments.target_of(session, comment)
    if request.method == "GET":
        return render_page("public/comment_report.html", comment=comment, target=target,
                           done=False)  # fmt: skip
    enforce(session, bucket="comment-report", client=request_client(), what="reports",
            limit=REPORT_LIMIT, per_seconds=COMMENT_PER_SECONDS)  # fmt: skip
    comments.report(session, comment_id)
    session.commit()
    return render_page("public/comment_report.html", comment=comment, target=target, done=True)
