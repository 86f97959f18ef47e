"""/agency: agency staff enter values and works, upload CSV files, and read their history.

Every write goes through tracker.submissions as the signed-in user's agency, so the
checks (and the refusal of another agency's measures) are the API's. Lists come from
tracker.history, which only ever reads the user's own agency.
"""

from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from shapely.geometry import mapping

from tracker.auth import get_agency
from tracker.db import get_session, transaction
from tracker.geometry import lon_lat
from tracker.history import (
    agency_batches,
    agency_measures,
    observation_history,
    works_history,
    works_measures,
)
from tracker.submissions import (
    WORK_DATES,
    Outcome,
    RowError,
    SubmissionRejected,
    read_observations_csv,
    read_works_csv,
    submit_observations,
    submit_works,
)
from tracker.uploads import KINDS, discard_upload, load_upload, save_upload
from tracker.vocabulary import WORK_STATUSES
from tracker.web.auth import current_user, login_required

bp = Blueprint("agency", __name__, url_prefix="/agency")
PREVIEW_ALL_ROWS = 1000  # beyond this many rows, the preview lists only rows with errors
OBSERVATION_COLUMNS = ("measure", "place", "date", "value", "dims", "note")
WORK_COLUMNS = ("id", "title", "status", "street", "geometry", *WORK_DATES, "measure", "quantity")


@bp.get("")
@login_required("agency")
def index():
    """The value form for one of the agency's measures, the CSV upload, recent batches."""
    return _index_page(measure_id=request.args.get("measure"))


def _index_page(*, measure_id=None, form=None, errors=(), status=200):
    """Render /agency for the chosen measure (the first if none), with a refused form's
    values and errors when there are some. 404 for a measure that is not the agency's."""
    session, user = get_session(), current_user()
    measures = agency_measures(session, user.agency_id)
    chosen = next((m for m in measures if m.id == measure_id), None)
    if measure_id and chosen is None:
        abort(404, f"{measure_id!r} is not one of your agency's measures.")
    page = render_template(
        "agency/index.html",
        agency=get_agency(session, user.agency_id),
        measures=measures,
        chosen=chosen or (measures[0] if measures else None),
        form=form or {},
        errors=errors,
        batches=agency_batches(session, user.agency_id),
    )
    return page, status


@bp.post("/observations")
@login_required("agency")
def add_observation():
    """Store one value entered in the form (channel "web")."""
    form = request.form
    row: dict[str, Any] = {name: form.get(name, "") for name in ("measure", "place", "date")}
    if form.get("value", "").strip():
        row["value"] = form["value"]  # an empty box is a missing value, never a retraction
    dims = {key[4:]: value for key, value in form.items() if key.startswith("dim.") and value}
    if dims:
        row["dims"] = dims
    if form.get("note", "").strip():
        row["note"] = form["note"].strip()
    try:
        outcome = _submit(submit_observations, [row], channel="web")
    except SubmissionRejected as exc:
        return _index_page(
            measure_id=_own_measure(row["measure"]),
            form=form,
            errors=exc.row_errors,
            status=exc.status,
        )
    flash(_stored_message(outcome), "info")
    return redirect(url_for(".index", measure=row["measure"]), 303)


def _own_measure(measure_id: str) -> str | None:
    """`measure_id` if it is one of the user's agency's measures (to show its form again)."""
    measures = agency_measures(get_session(), current_user().agency_id)
    return measure_id if any(m.id == measure_id for m in measures) else None


@bp.get("/observations")
@login_required("agency")
def observations():
    """The agency's latest observations with every revision: old -> new, who, when."""
    user = current_user()
    return render_template(
        "agency/observations.html",
        history=observation_history(get_session(), user.agency_id),
    )


@bp.get("/works")
@login_required("agency")
def works():
    """The work form, the works CSV upload and the agency's works with status changes."""
    return _works_page()


def _works_page(*, form=None, errors=(), status=200):
    session, user = get_session(), current_user()
    page = render_template(
        "agency/works.html",
        statuses=WORK_STATUSES,
        dates=WORK_DATES,
        measures=works_measures(session, user.agency_id),
        form=form or {},
        errors=errors,
        history=works_history(session, user.agency_id),
    )
    return page, status


@bp.post("/works")
@login_required("agency")
def add_work():
    """Create or update one work from the form (channel "web"), by its id."""
    form = request.form
    row: dict[str, Any] = {
        name: form[name].strip()
        for name in ("id", "title", "status", "street", *WORK_DATES, "measure", "quantity")
        if form.get(name, "").strip()
    }
    problems: list[RowError] = []
    lon, lat = form.get("lon", "").strip(), form.get("lat", "").strip()
    if lon or lat:
        point, problem = lon_lat(lon, lat)
        if problem:
            problems.append(RowError(0, "lon", problem))
        else:
            row["geometry"] = mapping(point)
    try:
        outcome = _submit(submit_works, [row], channel="web", input_errors=problems)
    except SubmissionRejected as exc:
        return _works_page(form=form, errors=exc.row_errors, status=exc.status)
    flash(f"Work {row['id']}: {_stored_message(outcome)}", "info")
    return redirect(url_for(".works"), 303)


# --- CSV uploads: upload -> preview (dry run) -> confirm ------------------------------------


@bp.post("/uploads")
@login_required("agency")
def upload():
    """Keep an uploaded CSV file and show its preview."""
    kind = request.form.get("kind", "")
    file = request.files.get("file")
    if kind not in KINDS or file is None or not file.filename:
        flash("Choose a CSV file to upload.", "error")
        return redirect(_back(kind), 303)
    user = current_user()
    upload_id = save_upload(
        _upload_folder(),
        kind=kind,
        filename=file.filename,
        agency_id=user.agency_id,
        user_id=user.id,
        body=file.read(),
    )
    return redirect(url_for(".preview", upload_id=upload_id), 303)


@bp.get("/uploads/<upload_id>")
@login_required("agency")
def preview(upload_id: str):
    """Every row of an uploaded file with its errors, from a dry run; Confirm stores it."""
    pending = load_upload(_upload_folder(), upload_id, user_id=_uid())
    columns = OBSERVATION_COLUMNS if pending.kind == "observations" else WORK_COLUMNS
    outcome, lines, file_errors = _dry_run(pending)
    return render_template(
        "agency/preview.html",
        upload=pending,
        columns=columns,
        lines=lines,
        file_errors=file_errors,
        outcome=outcome,
        shown_all=len(lines) <= PREVIEW_ALL_ROWS,
    )


@bp.post("/uploads/<upload_id>")
@login_required("agency")
def confirm(upload_id: str):
    """Store the previewed file (channel "csv"), all or nothing."""
    folder = _upload_folder()
    pending = load_upload(folder, upload_id, user_id=_uid())
    reader, submit = _csv_path(pending.kind)
    try:
        read = reader(pending.body)
        outcome = _submit(
            submit,
            read.rows,
            channel="csv",
            row_numbers=read.row_numbers,
            input_errors=read.errors,
        )
    except SubmissionRejected:
        flash("The file cannot be stored: see the errors below.", "error")
        return redirect(url_for(".preview", upload_id=pending.id), 303)
    discard_upload(folder, pending.id)
    flash(f"{pending.filename}: {_stored_message(outcome)}", "info")
    return redirect(_back(pending.kind), 303)


@bp.post("/uploads/<upload_id>/discard")
@login_required("agency")
def discard(upload_id: str):
    """Throw an uploaded file away without storing it."""
    folder = _upload_folder()
    pending = load_upload(folder, upload_id, user_id=_uid())
    discard_upload(folder, pending.id)
    flash(f"{pending.filename} was discarded; nothing was stored.", "info")
    return redirect(_back(pending.kind), 303)


def _dry_run(pending) -> tuple[Outcome | None, list[dict[str, Any]], list[RowError]]:
    """What storing the file would do: the outcome (None when refused), the rows to show
    with their errors, and the errors about the whole file."""
    reader, submit = _csv_path(pending.kind)
    try:
        read = reader(pending.body)
    except SubmissionRejected as exc:  # not CSV, or missing or unknown columns
        return None, [], exc.row_errors
    outcome, errors = None, []
    try:
        outcome = _submit(
            submit,
            read.rows,
            channel="csv",
            row_numbers=read.row_numbers,
            input_errors=read.errors,
            dry_run=True,
        )
    except SubmissionRejected as exc:
        errors = exc.row_errors
    return outcome, _preview_lines(read, errors), [e for e in errors if e.row is None]


def _preview_lines(read, errors: list[RowError]) -> list[dict[str, Any]]:
    """One entry per line that holds a record or an error, in line order."""
    by_line: dict[int, list[RowError]] = {}
    for error in errors:
        if error.row is not None:
            by_line.setdefault(error.row, []).append(error)
    rows = dict(zip(read.row_numbers, read.rows, strict=True))
    numbers = sorted(set(rows) | set(by_line))
    if len(numbers) > PREVIEW_ALL_ROWS:
        numbers = sorted(by_line)
    return [{"line": n, "row": rows.get(n), "errors": by_line.get(n, [])} for n in numbers]


def _csv_path(kind: str):
    """The reader and the submit function for an upload kind."""
    if kind == "observations":
        return read_observations_csv, submit_observations
    return read_works_csv, submit_works


def _submit(submit, rows, **options) -> Outcome:
    """Submit as the signed-in user's agency, in one transaction (a dry run stores nothing
    to commit)."""
    user = current_user()
    with transaction() as session:
        return submit(session, agency_id=user.agency_id, rows=rows, user_id=user.id, **options)


def _stored_message(outcome: Outcome) -> str:
    new = outcome.accepted - outcome.revised - outcome.unchanged
    return (
        f"{outcome.accepted} row(s) received: {new} new, {outcome.revised} revised, "
        f"{outcome.unchanged} unchanged."
    )


def _upload_folder() -> Path:
    return Path(current_app.instance_path) / "uploads"


def _uid() -> int:
    return current_user().id


def _back(kind: str) -> str:
    return url_for(".works") if kind == "works" else url_for(".index")
