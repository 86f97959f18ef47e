"""Places and streets: GeoJSON boundaries and street search."""

from tracker.api.blueprint import api
from tracker.api.schemas import PlaceCollection, StreetMatch, StreetsQuery
from tracker.api.spec import endpoint
from tracker.db import get_session
from tracker.places import list_places, search_streets


@endpoint(api, "/v1/places", response=PlaceCollection, tags=("places",))
def places():
    """Every place (city, areas, neighbourhoods) as a GeoJSON FeatureCollection."""
    return {
        "features": [
            {
                "id": p["id"],
                "properties": {
                    "id": p["id"],
                    "name": p["name"],
                    "level": p["level"],
                    "parent": p["parent_id"],
                },
                "geometry": p["geometry"],
            }
            for p in list_places(get_session())
        ]
    }


@endpoint(api, "/v1/streets", query=StreetsQuery, response=list[StreetMatch], tags=("places",))
def streets(query: StreetsQuery):
    """Streets whose name has a word starting with each word typed (at most 20, best first)."""
    return search_streets(get_session(), query.q)
