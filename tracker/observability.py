"""Watching a running tracker: a request id on every answer, logs (text or JSON) that carry
it, request metrics, and the proxy fix that lets both see the real client address.

- Request id: a client's or proxy's `X-Request-ID` is kept when it is short and plain,
  else a new one is made; it is sent back in `X-Request-ID` and is on every log line
  written while the request runs, so a resident's report of a failure finds its lines.
- Logs: `configure_logging` sets the root logger once per process (`TRACKER_LOG_FORMAT`
  text or json). Each request writes one access line to the `tracker.access` logger.
- Proxy fix: with `TRACKER_PROXY_HOPS=N`, the last N proxies' `X-Forwarded-For`, `-Proto`,
  `-Host`, `-Port` and `-Prefix` are trusted (werkzeug's ProxyFix). Off by default: a
  header anyone can send must not decide rate limits or sign-in throttling.
"""

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request
from werkzeug.middleware.proxy_fix import ProxyFix

from tracker import metrics
from tracker.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
access_log = logging.getLogger("tracker.access")


def init_app(app: Flask) -> None:
    settings: Settings = app.config["SETTINGS"]
    if settings.proxy_hops:
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    app.before_request(_start)
    app.after_request(_finish)


def request_id() -> str | None:
    """The current request's id; None outside a request."""
    return g.get("request_id") if has_request_context() else None


def _start() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _GIVEN_ID.fullmatch(given) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.pop("request_started", None)
    if started is None:  # a before_request hook ahead of ours refused the request
        return response
    took = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule else "(no route)"
    metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    metrics.LATENCY.labels(route).observe(took)
    response.headers[REQUEST_ID_HEADER] = g.request_id
    path, full_path = _loggable_paths()
    access_log.info(
        "%s %s %s %.1f ms",
        request.method,
        full_path,
        response.status_code,
        took * 1000,
        extra={
            "client": request.remote_addr,
            "method": request.method,
            "path": path,
            "route": route,
            "status": response.status_code,
            "duration_ms": round(took * 1000, 1),
        },
    )
    return response


# URL parts that are themselves a key: a /me link opens (and deletes) a resident's data, an
# alert link confirms or stops an alert. Logs get the route's placeholder instead.
SECRET_URL_PARTS = frozenset({"key", "sent"})


def _loggable_paths() -> tuple[str, str]:
    """(path, path with query) for the log, with any key in the address masked."""
    secret = SECRET_URL_PARTS & set(request.view_args or {})
    if not secret:
        return request.path, request.full_path.rstrip("?")
    path = request.path
    for name in secret:
        path = path.replace(str(request.view_args[name]), f"<{name}>")
    return path, path


# --- logging ----------------------------------------------------------------------------

# The extra fields the access line carries, written as JSON members of their own.
_EXTRA = ("client", "method", "path", "route", "status", "duration_ms")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, request_id, pid, any
    access-line fields, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,  # which worker
        }
        line |= {name: getattr(record, name) for name in _EXTRA if hasattr(record, name)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(settings: Settings, stream=None) -> logging.Handler:
    """Send every log line to `stream` (default stderr) in the configured format, replacing
    any handler this function added before; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name("tracker")
    handler.addFilter(_RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "tracker"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    return handler
