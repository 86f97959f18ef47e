"""Places and streets: reading boundaries and the gazetteer, storing, locating, name search.

- boundaries: PlacesError, Boundary, `read_boundaries`, GeoJSON reading and place rows;
- streets: StreetRecord, `read_streets` (segments joined into streets), NZTM projection;
- store: `store_places` (upserts, retiring places, streets), `relocate_works` and
  `measure_work_streets`;
- locate: `locate_point`, `share_by_place`, `city_extent`, `resolve_street`, distances,
  `streets_near` (the streets a work lies on);
- search: `search_streets`, `search_places`, `list_places`, and for street pages
  `street_detail` and `street_names`.

A name with a leading underscore that one module imports from another is the package's
own helper, not for code outside tracker.places.
"""

from tracker.places.boundaries import (
    Boundary,
    PlacesError,
    area_ids,
    place_rows,
    read_boundaries,
)
from tracker.places.locate import (
    NEAR_STREET_M,
    city_extent,
    locate_point,
    nztm_distances_m,
    resolve_street,
    share_by_place,
    shares_by_place,
    shares_near_street,
    streets_near,
)
from tracker.places.search import (
    list_places,
    search_places,
    search_streets,
    street_detail,
    street_names,
)
from tracker.places.store import Box, relocate_works, store_places
from tracker.places.streets import StreetRecord, read_streets

__all__ = [
    "NEAR_STREET_M",
    "Boundary",
    "Box",
    "PlacesError",
    "StreetRecord",
    "area_ids",
    "city_extent",
    "list_places",
    "locate_point",
    "nztm_distances_m",
    "place_rows",
    "read_boundaries",
    "read_streets",
    "relocate_works",
    "resolve_street",
    "search_places",
    "search_streets",
    "share_by_place",
    "shares_by_place",
    "shares_near_street",
    "store_places",
    "street_detail",
    "street_names",
    "streets_near",
]
