"""The /api blueprint. Routes are declared with `spec.endpoint`, one module per subject, so
the OpenAPI document at /api/openapi.json always describes exactly what is served."""

from flask import Blueprint, jsonify

from tracker import __version__
from tracker.api.spec import openapi_document

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/openapi.json")
def openapi():
    """OpenAPI 3.1 description of every /api/v1 route."""
    return jsonify(openapi_document("Rebuild tracker API", __version__))


# Route modules register themselves on `api` when imported.
from tracker.api import places  # noqa: E402, F401
