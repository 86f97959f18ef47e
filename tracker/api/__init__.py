"""The /api/v1 blueprint. Routes are declared with `endpoint`, so the OpenAPI document
at /api/openapi.json always describes exactly what is served."""

from flask import Blueprint, jsonify

from tracker import __version__
from tracker.api.schemas import PlaceCollection, StreetMatch, StreetsQuery
from tracker.api.spec import endpoint, openapi_document
from tracker.db import get_session

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/openapi.json")
def openapi():
    """OpenAPI 3.1 description of every /api/v1 route."""
    return jsonify(openapi_document("Rebuild tracker API", __version__))


@endpoint(api, "/v1/places", response=PlaceCollection, tags=("places",))
def places():
    """Every place (city, areas, neighbourhoods) as a GeoJSON FeatureCollection."""
    from tracker.places import list_places

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
    from tracker.places import search_streets

    return search_streets(get_session(), query.q)
