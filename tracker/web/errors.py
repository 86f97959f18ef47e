"""One handler for every refusal: JSON for the API and the export files (programs read
them), an HTML page elsewhere. Database failures that pass or that the operator must fix
(busy, unreachable, read-only, full) are answered here too (docs/operations.md, "Faults")."""

import logging

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from werkzeug.exceptions import HTTPException

from tracker.errors import TrackerError

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    app.register_error_handler(TrackerError, _tracker_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(DisconnectionError, _database_error)


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


# Database failures a client can do something about (wait and retry, or tell the
# operator), each with its status and message; any other database error stays a 500.
BUSY = (
    "The database is busy with another large write (such as a feed run) and this request "
    "waited too long for it; nothing was stored. Please try again shortly."
)
UNAVAILABLE = (
    "The database cannot be reached just now (it may be restarting); nothing was stored. "
    "Please try again shortly."
)
READ_ONLY = (
    "The database is read-only for now (maintenance): pages and data can be read, but "
    "nothing can be stored. Please try again later."
)
FULL = (
    "The database is full: its storage has no room for this submission, so nothing of it "
    "was stored and the data already held is intact. The site's operator has to make room."
)
RETRY_AFTER_SECONDS = 5
READ_ONLY_RETRY_AFTER_SECONDS = 60

# PostgreSQL SQLSTATEs: class 08 is a connection failure; 57P01-57P03 an administrator's
# or a crash's shutdown, or a server still starting; 25006 a read-only transaction;
# 53100 a full disk.
_PG_UNAVAILABLE = ("08", "57P01", "57P02", "57P03")
# Client-side failures of a link, which carry no SQLSTATE.
_LINK_LOST = (
    "connection refused",
    "could not connect",
    "server closed the connection",
    "connection is closed",
    "connection timeout expired",
    "consuming input failed",
    "terminating connection",
    "the database system is",
    "unable to open database file",  # SQLite: the file or its folder has gone
)


def database_failure(exc: DBAPIError | DisconnectionError) -> tuple[int, str] | None:
    """The (status, message) a database failure is answered with, or None for a 500."""
    if isinstance(exc, DisconnectionError):
        return 503, UNAVAILABLE
    orig = exc.orig
    text = str(orig).lower()
    state = getattr(orig, "sqlstate", None) or ""
    if "database is locked" in text:
        return 503, BUSY
    if state == "53100" or "database or disk is full" in text or "no space left" in text:
        return 507, FULL
    if state == "25006" or "readonly database" in text or "read-only transaction" in text:
        return 503, READ_ONLY
    if exc.connection_invalidated or state.startswith(_PG_UNAVAILABLE):
        return 503, UNAVAILABLE
    if isinstance(exc, OperationalError) and any(words in text for words in _LINK_LOST):
        return 503, UNAVAILABLE
    return None


def _database_error(exc: DBAPIError | DisconnectionError):
    """A database that is busy, unreachable, read-only or full: a clear answer, not a 500.

    503 with Retry-After for what passes (SQLite's write lock, a restart, maintenance),
    507 for a full disk. The request's transaction is rolled back when its session closes
    (a broken link is dropped from the pool), so nothing of it is stored. Any other
    database failure stays a 500.
    """
    answer = database_failure(exc)
    if answer is None:
        raise exc
    status, message = answer
    log.warning("database %s (%s): %s", status, request.path, _first_line(exc))
    if _wants_json():
        body = jsonify({"error": message})
    else:
        body = render_template("errors/error.html", status=status, message=message)
    return body, status, retry_after(status, message)


def retry_after(status: int, message: str) -> dict[str, str]:
    """The Retry-After header for a database answer from database_failure (503 only)."""
    if status != 503:
        return {}
    seconds = READ_ONLY_RETRY_AFTER_SECONDS if message == READ_ONLY else RETRY_AFTER_SECONDS
    return {"Retry-After": str(seconds)}


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
