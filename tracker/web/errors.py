"""One handler for every refusal: JSON for the API and the export files (programs read
them), an HTML page elsewhere."""

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from tracker.errors import TrackerError


def init_app(app: Flask) -> None:
    app.register_error_handler(TrackerError, _tracker_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _database_busy)


def _wants_json() -> bool:
    # /exports/ itself is a page; /exports/observations.csv and the like are data files.
    exports_file = request.path.startswith("/exports/") and request.path != "/exports/"
    return request.path.startswith("/api/") or exports_file


def _tracker_error(exc: TrackerError):
    if _wants_json():
        return jsonify(exc.to_json()), exc.status, exc.headers()
    page = render_template("errors/error.html", status=exc.status, message=exc.message)
    return page, exc.status, exc.headers()


def _http_error(exc: HTTPException):
    message = exc.description or exc.name
    if exc.code == 413:
        message = "The request body is larger than this server accepts."
    if _wants_json():
        answer = jsonify({"error": message})
    else:
        answer = render_template("errors/error.html", status=exc.code, message=message)
    response = exc.get_response()
    response.set_data(answer.get_data() if _wants_json() else answer)
    response.content_type = "application/json" if _wants_json() else "text/html; charset=utf-8"
    return response


BUSY = (
    "The database is busy with another large write (such as a feed run) and this request "
    "waited too long for it; nothing was stored. Please try again shortly."
)
RETRY_AFTER_SECONDS = 5


def _database_busy(exc: OperationalError):
    """SQLite's write lock not freed within the busy timeout: 503, safe to retry.

    The request's transaction is rolled back when its session closes, so nothing of it
    is stored. Any other database failure stays a 500.
    """
    if "database is locked" not in str(exc.orig):
        raise exc
    if _wants_json():
        body = jsonify({"error": BUSY})
    else:
        body = render_template("errors/error.html", status=503, message=BUSY)
    return body, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
