"""The /api blueprint and its self-description."""

from flask import Blueprint, jsonify

from tracker import __version__
from tracker.api.spec import openapi_document

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/openapi.json")
def openapi():
    """OpenAPI 3.1 description of every /api/v1 route."""
    return jsonify(openapi_document("Rebuild tracker API", __version__))
