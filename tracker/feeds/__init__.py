"""Feed runs (CONTRACT §7): fetch an agency's published file, read it with the importer
for its format, map its fields, and store the rows through tracker.submissions as the
feed's agency, recording a FeedRun whatever happens.

A run has a fixed lifecycle, after DemocracyClub's importers:
1. record the run in a transaction of its own, so even a crash leaves a row;
2. fetch and parse outside any transaction (network time holds no database locks);
3. store the valid rows, the reasons for the rejected ones, the run's outcome and the
   feed's conditional-GET state in one transaction;
4. on any failure roll that back and mark the run failed with a readable error, so the
   data from earlier runs stays exactly as it was.

`tracker import` and the scheduler's jobs both call `run_feed`; docs/feeds.md is the
agencies' guide to what is read and why a row is rejected.

One module per job: `run` (the lifecycle, leases, dead runs, storing a run), `fetch`
(HTTP and `file:` reading, timeouts, redirects), `mapping` (source rows to submission
rows), `schedule` (triggers, next due) and `health` (what the API and /feeds page show).
The limits are constants of the module that reads them (fetch.MAX_RUN_SECONDS,
run.RUN_LEASE_SECONDS …): set them there, not on this package.
"""

from tracker.clock import city_timezone
from tracker.feeds.fetch import (
    FeedError,
    Fetcher,
    Unchanged,
    host_addresses,
    redirect_allowed,
    tree_folder,
)
from tracker.feeds.health import FeedHealth, agency_names, feed_health, run_rejections
from tracker.feeds.mapping import missing_columns, observation_row, place_names, work_row
from tracker.feeds.run import live_feeds, run_feed, run_feeds, run_lease_name
from tracker.feeds.schedule import every_interval, feed_trigger, next_due

__all__ = [
    "FeedError",
    "FeedHealth",
    "Fetcher",
    "Unchanged",
    "agency_names",
    "city_timezone",
    "every_interval",
    "feed_health",
    "feed_trigger",
    "host_addresses",
    "live_feeds",
    "missing_columns",
    "next_due",
    "observation_row",
    "place_names",
    "redirect_allowed",
    "run_feed",
    "run_feeds",
    "run_lease_name",
    "run_rejections",
    "tree_folder",
    "work_row",
]
