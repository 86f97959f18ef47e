"""/admin: officials issue and revoke agency API tokens, manage staff accounts and read
the audit trail."""

from flask import Blueprint, flash, redirect, render_template, request, url_for

from tracker import comments, reports
from tracker.audit import audit_trail
from tracker.auth import (
    ROLES,
    create_user,
    disable_user,
    enable_user,
    issue_token,
    list_tokens,
    list_users,
    live_agencies,
    revoke_token,
    set_password,
)
from tracker.clock import city_timezone, local_time
from tracker.db import get_session, transaction
from tracker.errors import TrackerError
from tracker.history import measure_titles
from tracker.places import list_places
from tracker.web.auth import current_user, login_required

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_LIMIT = 200


@bp.get("")
@login_required("official")
def index():
    """Tokens per agency and staff accounts."""
    return _index_page()


def _index_page(*, form=None, error=None, status=200):
    session = get_session()
    page = render_template(
        "admin/index.html",
        agencies=live_agencies(session),
        tokens=list_tokens(session),
        users=list_users(session),
        roles=ROLES,
        form=form or {},
        error=error,
    )
    return page, status


@bp.post("/tokens")
@login_required("official")
def add_token():
    """Issue a token and show it this once (never stored in clear, never shown again)."""
    agency_id = request.form.get("agency", "")
    with transaction() as session:
        token = issue_token(
            session,
            agency_id,
            request.form.get("label", "").strip(),
            by_user_id=current_user().id,
            channel="web",
        )
    # Rendered, not redirected: a redirect would have to carry the token through the
    # session cookie, which is signed but readable.
    page = render_template("admin/token.html", agency_id=agency_id, token=token)
    return page, 201, {"Cache-Control": "no-store"}


@bp.post("/tokens/<int:token_id>/revoke")
@login_required("official")
def revoke(token_id: int):
    """Revoke a token: requests that use it get 401 from now on."""
    with transaction() as session:
        row = revoke_token(session, token_id, by_user_id=current_user().id, channel="web")
    flash(f"Token #{row.id} of {row.agency_id} is revoked.", "info")
    return redirect(url_for(".index"), 303)


@bp.post("/users")
@login_required("official")
def add_user():
    """Create a staff account with a first password that the official passes on."""
    form = request.form
    role = form.get("role", "")
    try:
        with transaction() as session:
            user = create_user(
                session,
                form.get("email", ""),
                form.get("password", ""),
                role,
                form.get("agency") if role == "agency" else None,
                by_user_id=current_user().id,
                channel="web",
            )
    except TrackerError as exc:
        return _index_page(
            form=form, error=f"Account not created: {exc.message}", status=exc.status
        )
    flash(f"Account {user.email} ({user.role}) created.", "info")
    return redirect(url_for(".index"), 303)


@bp.post("/users/<int:user_id>/disable")
@login_required("official")
def disable(user_id: int):
    """Disable an account: it cannot sign in, and its open sessions end at once."""
    with transaction() as session:
        user = disable_user(session, user_id, by_user_id=current_user().id, channel="web")
    flash(f"Account {user.email} is disabled.", "info")
    return redirect(url_for(".index"), 303)


@bp.post("/users/<int:user_id>/enable")
@login_required("official")
def enable(user_id: int):
    """Let a disabled account sign in again."""
    with transaction() as session:
        user = enable_user(session, user_id, by_user_id=current_user().id, channel="web")
    flash(f"Account {user.email} is enabled again.", "info")
    return redirect(url_for(".index"), 303)


@bp.post("/users/<int:user_id>/password")
@login_required("official")
def password(user_id: int):
    """Set a new password for staff who forgot theirs; their open sessions end."""
    try:
        with transaction() as session:
            user = set_password(
                session,
                user_id,
                request.form.get("password", ""),
                by_user_id=current_user().id,
                channel="web",
            )
    except TrackerError as exc:
        return _index_page(error=f"Password not changed: {exc.message}", status=exc.status)
    flash(f"Account {user.email} has a new password; pass it on to them.", "info")
    return redirect(url_for(".index"), 303)


@bp.get("/audit")
@login_required("official")
def audit():
    """Every accepted change, newest first, optionally for one measure and/or place."""
    session = get_session()
    measure_id = request.args.get("measure") or None
    place_id = request.args.get("place") or None
    return render_template(
        "admin/audit.html",
        events=audit_trail(session, measure_id=measure_id, place_id=place_id, limit=AUDIT_LIMIT),
        measures=measure_titles(session),
        places=list_places(session, with_geometry=False),
        measure_id=measure_id,
        place_id=place_id,
        limit=AUDIT_LIMIT,
    )


# --- comments: moderation --------------------------------------------------------------


@bp.get("/comments")
@login_required("official")
def comment_queue():
    """Comments waiting for an official: pending ones, and published ones reported since."""
    return _queue_page()


def _queue_page(*, error=None, failed=None, reason="", status=200):
    session = get_session()
    timezone = city_timezone(session)
    page = render_template(
        "admin/comments.html",
        items=comments.queue(session),
        local=lambda moment: local_time(moment, timezone).strftime("%-d %b %Y, %-I:%M %p"),
        error=error,
        failed=failed,
        reason=reason,
    )
    return page, status, {"Cache-Control": "no-store"}


@bp.post("/comments/<int:comment_id>/publish")
@login_required("official")
def publish_comment(comment_id: int):
    """Publish a comment (or keep a reported one up); the author is mailed."""
    try:
        with transaction() as session:
            comments.publish(session, comment_id, current_user().id)
    except TrackerError as exc:
        return _queue_page(error=f"Comment #{comment_id}: {exc.message}", status=exc.status)
    flash(f"Comment #{comment_id} is published.", "info")
    return redirect(url_for(".comment_queue"), 303)


@bp.post("/comments/<int:comment_id>/reject")
@login_required("official")
def reject_comment(comment_id: int):
    """Reject a comment, or take a published one down, with a reason mailed to its author."""
    reason = request.form.get("reason", "")
    try:
        with transaction() as session:
            comments.reject(session, comment_id, current_user().id, reason)
    except TrackerError as exc:
        return _queue_page(error=f"Comment #{comment_id} not rejected: {exc.message}",
                           failed=comment_id, reason=reason, status=exc.status)  # fmt: skip
    flash(f"Comment #{comment_id} is rejected; its author is told why.", "info")
    return redirect(url_for(".comment_queue"), 303)


# --- problem reports: hiding ------------------------------------------------------------


@bp.get("/reports")
@login_required("official")
def hidden_reports():
    """Hide a problem report by its number, with a reason; the hidden ones, to show again."""
    return _reports_page()


def _reports_page(*, error=None, form=None, status=200):
    session = get_session()
    timezone = city_timezone(session)
    page = render_template(
        "admin/reports.html",
        rows=reports.search_reports(session, statuses=[reports.HIDDEN], hidden=True),
        names=reports.category_names(session),
        local=lambda moment: local_time(moment, timezone).strftime("%-d %b %Y, %-I:%M %p"),
        error=error,
        form=form or {},
        reason_limit=reports.REASON_MAX,
    )
    return page, status, {"Cache-Control": "no-store"}


@bp.post("/reports/hide")
@login_required("official")
def hide_report():
    """Hide any agency's report (tracker.reports.hide_report): no public page shows it."""
    form = {"report": request.form.get("report", "").strip(),
            "reason": request.form.get("reason", "")}  # fmt: skip
    number = form["report"].removeprefix("#")
    try:
        if not (number.isascii() and number.isdigit() and len(number) <= 18):
            raise TrackerError("Report: give its number, such as 12.", field="report")
        with transaction() as session:
            reports.hide_report(session, int(number), reason=form["reason"],
                                user_id=current_user().id)  # fmt: skip
    except TrackerError as exc:
        return _reports_page(error=exc.message, form=form, status=exc.status)
    flash(f"Report {number} is hidden: no public page, map or list shows it.", "info")
    return redirect(url_for(".hidden_reports"), 303)


@bp.post("/reports/<int:report_id>/unhide")
@login_required("official")
def unhide_report(report_id: int):
    """Show a hidden report again, with the status it had before."""
    with transaction() as session:
        reports.unhide_report(session, report_id, user_id=current_user().id)
    flash(f"Report {report_id} is shown again.", "info")
    return redirect(url_for(".hidden_reports"), 303)
