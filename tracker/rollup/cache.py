"""The roll-up's cache: figures already computed, per process, in bounded LRUs.

Every entry is keyed by the node versions it was computed from, so nothing in it can go
stale: a write moves a version and the next request simply misses.
"""

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from tracker.metrics import CACHE_LOOKUPS


class LRU:
    """A small thread-safe least-recently-used map. Given a `name`, its lookups are counted
    in /metrics (tracker_rollup_cache_lookups_total) as hits and misses."""

    def __init__(self, size: int, name: str | None = None):
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._hit = self._miss = None
        if name is not None:
            self._hit = CACHE_LOOKUPS.labels(name, "hit")
            self._miss = CACHE_LOOKUPS.labels(name, "miss")

    def get(self, key: Hashable) -> Any:
        """The value stored under `key`, or None."""
        with self._lock:
            if key not in self._entries:
                if self._miss is not None:
                    self._miss.inc()
                return None
            self._entries.move_to_end(key)
            if self._hit is not None:
                self._hit.inc()
            return self._entries[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store `value`, dropping the least recently used entry when full."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class RollupCache:
    """Figures already computed, keyed by the data versions they were computed from."""

    def __init__(self, answers: int = 512, measures: int = 2048):
        self.definitions = LRU(4)  # trees, by every node's definition version
        self.trees = LRU(4)  # the same with each measure's data version, by both versions
        self.places = LRU(4096)  # a measure's places, baselines and targets, by definition
        self.leaves = LRU(measures)  # a measure's neighbourhood values for a day and filter
        self.figures = LRU(8 * measures, "figures")  # a measure's figures at a place, day, filter
        self.answers = LRU(answers, "answers")  # whole roll-ups, by place, day, filter, versions


def app_cache(app: Any) -> RollupCache:
    """The roll-up cache of a Flask app (one per app, created on first use)."""
    return app.extensions.setdefault("rollup_cache", RollupCache())
