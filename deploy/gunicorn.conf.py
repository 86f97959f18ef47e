"""gunicorn settings for the tracker: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`.

Each value can be overridden from the environment (the TRACKER_GUNICORN_* names below)
so the systemd unit, a container or a test can change one without editing this file.
docs/operations.md explains the choices.
"""

import multiprocessing
import os
import tempfile
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(f"TRACKER_GUNICORN_{name}", default)


bind = _env("BIND", "127.0.0.1:8000")  # nginx in front; never a public port
# One worker a core (two at least, so one is always serving while another is replaced),
# each with a few threads for the time requests wait on the database.
# Not gunicorn's usual two a core plus one: each worker keeps and rebuilds its own pages,
# so workers beyond the cores multiply that work on the same cores (the load test on 2
# cores: page p50 12-91 ms with 2 workers, 74-1,159 ms with 5).
workers = int(_env("WORKERS", str(max(2, multiprocessing.cpu_count()))))
worker_class = _env("WORKER_CLASS", "gthread")
threads = int(_env("THREADS", "4"))
# A gthread worker accepts connections while it has fewer than this, whether or not a
# thread is free, and keeps idle ones open only beyond `threads`: at its default (1000)
# one worker took most of the load test's connections and was held at one core by its
# interpreter lock while the other idled. At `threads` a worker with every thread busy
# leaves new connections to the others, and closes each after its answer.
worker_connections = int(_env("WORKER_CONNECTIONS", str(threads)))
# A large CSV upload or works batch takes seconds (docs/performance.md); a minute covers
# the largest accepted body with room to spare, and a stuck worker is replaced after it.
timeout = int(_env("TIMEOUT", "60"))
graceful_timeout = int(_env("GRACEFUL_TIMEOUT", "30"))  # a restart lets requests finish
keepalive = 0  # none is kept (worker_connections above): nginx opens one per request
max_requests = int(_env("MAX_REQUESTS", "5000"))  # workers are renewed now and then …
max_requests_jitter = int(_env("MAX_REQUESTS_JITTER", "500"))  # … not all at once
preload_app = False  # each worker builds its own app and engine: no connection is shared
control_socket_disable = True  # gunicorn 27 otherwise writes a socket under ~/.gunicorn

# The app writes one access line per request itself (logger tracker.access, text or JSON
# with the request id: TRACKER_LOG_FORMAT), so gunicorn's own access log stays off.
accesslog = None
errorlog = "-"
loglevel = _env("LOG_LEVEL", "info")

# Metrics from every worker: prometheus-client keeps each worker's counts in files in
# this folder and /metrics adds them up, whichever worker answers the scrape.
_metrics_dir = Path(
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", str(Path(tempfile.gettempdir()) / "tracker-metrics")
    )
)


def on_starting(server) -> None:
    """A fresh start clears the last run's counts (a restart resets counters, as usual)."""
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in _metrics_dir.glob("*.db"):
        stale.unlink()


def child_exit(server, worker) -> None:
    """A worker that ended keeps its counters in the sum, but no longer its gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
