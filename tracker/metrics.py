"""Prometheus metrics (`/metrics`): what each web worker counts, and what the database knows.

Two kinds, so the figures are right however many workers and hosts serve:

- Counted by the process that serves a request: requests and their latency by route, and
  roll-up cache lookups. Under gunicorn each worker counts its own; with
  `PROMETHEUS_MULTIPROC_DIR` set (deploy/gunicorn.conf.py sets it) prometheus-client
  keeps them in files there and `/metrics` adds every worker's up, whichever answers.
- Read from the database when scraped: feed runs and failures, rows ingested, the outbox
  backlog, the scheduler's heartbeat. Feeds run in the scheduler's own process, so only
  the database sees all of it; one scrape costs a handful of aggregate queries.
- Read from the replica, when there is one: whether it answers and how far behind it is.
"""

import os
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from tracker.models import Batch, FeedRun, OutboxMail, SchedulerLease, utcnow

CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "tracker_http_requests",
    "HTTP requests answered, by route (the URL rule, not the address), method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "tracker_http_request_duration_seconds",
    "Time to answer a request, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE_LOOKUPS = Counter(
    "tracker_rollup_cache_lookups",
    "Roll-up cache lookups by cache and result (hit or miss).",
    ["cache", "result"],
)
PAGE_LOOKUPS = Counter(
    "tracker_page_cache_lookups",
    "Anonymous public page views by how they were answered: fresh (a kept page, up to "
    "date), stale (a kept page out of date by less than TRACKER_PAGE_STALE_SECONDS, "
    "rebuilt in the background) or built (in the request).",
    ["result"],
)


class DatabaseCollector(Collector):
    """The figures only the database holds whole, read at scrape time."""

    def __init__(self, engine: Engine, read_engine: Engine | None = None) -> None:
        self.engine = engine
        self.read_engine = read_engine

    def collect(self) -> Iterator:
        from tracker.scheduler import LEASE_NAME  # the scheduler's module imports the feeds

        with Session(self.engine) as session:
            runs = session.execute(
                select(FeedRun.feed_id, FeedRun.status, func.count()).group_by(
                    FeedRun.feed_id, FeedRun.status
                )
            ).all()
            ingested = session.execute(
                select(Batch.channel, func.sum(Batch.accepted + Batch.revised)).group_by(
                    Batch.channel
                )
            ).all()
            unsent = session.scalar(
                select(func.count())
                .select_from(OutboxMail)
                .where(OutboxMail.sent_at.is_(None), OutboxMail.failed_at.is_(None))
            )
            failed = session.scalar(
                select(func.count())
                .select_from(OutboxMail)
                .where(OutboxMail.failed_at.is_not(None))
            )
            lease = session.get(SchedulerLease, LEASE_NAME)
        feed_runs = CounterMetricFamily(
            "tracker_feed_runs",
            "Feed runs recorded, by feed and outcome.",
            labels=["feed", "status"],
        )
        for feed, status, count in runs:
            feed_runs.add_metric([feed, status], count)
        yield feed_runs
        rows = CounterMetricFamily(
            "tracker_rows_ingested",
            "Observation rows stored (new or revised values), by channel.",
            labels=["channel"],
        )
        for channel, count in ingested:
            rows.add_metric([channel], count or 0)
        yield rows
        backlog = GaugeMetricFamily(
            "tracker_outbox_backlog", "Mails waiting in the outbox, by state.", labels=["state"]
        )
        backlog.add_metric(["unsent"], unsent or 0)
        backlog.add_metric(["given_up"], failed or 0)
        yield backlog
        heartbeat = GaugeMetricFamily(
            "tracker_scheduler_lease_seconds_left",
            "Seconds until the scheduler's lease runs out unless its heartbeat renews it: "
            "below zero, no scheduler is running (absent: none has ever run).",
        )
        if lease is not None:
            heartbeat.add_metric([], (lease.expires_at - utcnow()).total_seconds())
        yield heartbeat
        if self.read_engine is not None:
            yield from self._replica()

    def _replica(self) -> Iterator:
        from tracker.db import replica_lag

        try:
            lag, up = replica_lag(self.read_engine), 1
        except Exception:  # a replica that is down is the figure itself
            lag, up = None, 0
        yield GaugeMetricFamily(
            "tracker_replica_up", "1 when the read replica answers, else 0.", value=up
        )
        family = GaugeMetricFamily(
            "tracker_replica_lag_seconds",
            "Seconds the read replica's data is behind the primary's (0: all replayed; "
            "absent: down or nothing replayed yet).",
        )
        if lag is not None:
            family.add_metric([], lag)
        yield family


def render(engine: Engine, read_engine: Engine | None = None) -> bytes:
    """The exposition text: every worker's counts (multiprocess mode) or this process's,
    and the database's figures."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (REQUESTS, LATENCY, CACHE_LOOKUPS):
            registry.register(collector)
    registry.register(DatabaseCollector(engine, read_engine))
    return generate_latest(registry)
