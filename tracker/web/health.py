"""For load balancers and monitoring: `/healthz`, `/readyz` and `/metrics`.

- `/healthz`: the process is up and answering. It touches nothing else, so a slow
  database never gets a worker restarted.
- `/readyz`: this worker can serve: the database answers and its schema is the one this
  code expects (no pending migration). 503 with `Retry-After` otherwise, so a balancer
  sends requests elsewhere. It reports the scheduler's lease but never fails on it: the
  scheduler is a separate service, and a dead one must not take the web out of service.
  With a read replica (TRACKER_READ_DATABASE_URL) it reports it too, its lag in seconds,
  but never fails on it either: reads fall back to the primary while the replica is
  down (tracker.db), so the worker can still serve every page.
- `/metrics`: Prometheus text (tracker/metrics.py).
"""

import logging
from datetime import datetime
from functools import cache

from alembic.config import Config
from alembic.script import ScriptDirectory
from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlmodel import Session

from tracker import metrics
from tracker.db import (
    MIGRATIONS,
    get_engine,
    get_read_engine,
    replica_failed,
    replica_lag,
    replica_lag_seen,
    replica_serving,
)
from tracker.models import utcnow

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


@cache
def expected_revision() -> str:
    """The newest migration this code carries (Alembic's head)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


@bp.get("/healthz")
def healthz() -> Response:
    return _uncached(Response("ok\n", mimetype="text/plain"))


@bp.get("/readyz")
def readyz():
    from tracker.scheduler import lease_holder  # imports the feeds: only when asked

    expected = expected_revision()
    answer: dict = {"status": "ok"}
    try:
        with Session(get_engine()) as session:
            current = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
            lease = lease_holder(session)
    except Exception as exc:  # any failure to reach the database is the answer itself
        # The log gets the detail; the public answer only the kind (no hosts or users).
        log.warning("readyz: database unavailable: %s", _first_line(exc))
        answer |= {"status": "unavailable", "database": {"ok": False, "error": type(exc).__name__}}
        return _not_ready(answer)
    answer["database"] = {"ok": True}
    answer["migrations"] = {"ok": current == expected, "current": current, "expected": expected}
    answer["scheduler"] = _scheduler(lease)
    if get_read_engine() is not None:
        answer["replica"] = _replica()
    if current != expected:
        answer["status"] = "unavailable"
        return _not_ready(answer)
    return _uncached(jsonify(answer))


@bp.get("/metrics")
def metrics_page() -> Response:
    body = metrics.render(get_engine(), read_engine=get_read_engine())
    return _uncached(Response(body, content_type=metrics.CONTENT_TYPE))


def _replica() -> dict:
    """The replica's state and lag; a failure also sends this worker's reads to the
    primary (tracker.db.replica_failed), and the answer says where reads go now."""
    down_until = current_app.extensions["replica_down_until"]
    try:
        lag = replica_lag(get_read_engine())
    except Exception as exc:
        replica_failed(exc)
        return {"ok": False, "lag_seconds": None, "error": type(exc).__name__,
                "reads": "primary"}  # fmt: skip
    down_until[0] = 0.0  # it answers: use it again straight away
    replica_lag_seen(lag)
    lag = None if lag is None else round(lag, 3)
    reads = "replica" if replica_serving() else "primary"  # primary: too far behind
    return {"ok": True, "lag_seconds": lag, "reads": reads}


def _scheduler(lease) -> dict:
    """Whether a scheduler holds its lease, and for how long yet (not which host: this
    answer is public)."""
    if lease is None:
        return {"ok": False, "lease_expires_at": None}
    return {
        "ok": True,
        "lease_expires_at": _utc(lease.expires_at),
        "lease_seconds_left": round((lease.expires_at - utcnow()).total_seconds(), 1),
    }


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _not_ready(answer: dict):
    response = _uncached(jsonify(answer))
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _uncached(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
