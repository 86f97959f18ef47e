"""Roll-up: what every figure means (CONTRACT §3), computed in SQL and cached per data version.

The one interface pages, the API, feeds and exports read figures through. One module per
job: `definitions` (the tree as the roll-up sees it), `rules` (§3 on plain numbers),
`leaves` (neighbourhood values, in SQL), `figures` (places, areas, the city, outputs and
results), `series`, `trail` (explain), `timeliness` and `cache`.

The database does the heavy part: for each (measure, place, dimension cell) the latest few
observations dated on or before the day asked about, and for flow measures the sums over
[start, day]. Python then combines these small per-(measure, neighbourhood) results into
areas, the city, outputs and results.

Caching. Every write bumps `Node.data_version` of the measures it changes, and loading the
tree bumps both it and `Node.definition_version` of the nodes whose definition changed.
Each request reads every node's two versions in one query and keys everything by them, so
a warm request computes nothing, a write to a few measures recomputes only those measures
(and re-reads no definition), and app processes sharing one database never serve each
other's stale figures. The cache lives in the process (`RollupCache`, bounded LRUs), one
per app.
"""

from tracker.rollup.cache import RollupCache, app_cache
from tracker.rollup.definitions import MeasureDef, load_definitions
from tracker.rollup.figures import rollup
from tracker.rollup.rules import (
    expected_progress,
    forecast,
    months_before,
    progress,
    stale_before,
    status,
)
from tracker.rollup.series import measure_series
from tracker.rollup.timeliness import period_index, timeliness
from tracker.rollup.trail import explain

__all__ = [
    "MeasureDef",
    "RollupCache",
    "app_cache",
    "expected_progress",
    "explain",
    "forecast",
    "load_definitions",
    "measure_series",
    "months_before",
    "period_index",
    "progress",
    "rollup",
    "stale_before",
    "status",
    "timeliness",
]
