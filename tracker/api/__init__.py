"""The JSON API. Routes are declared with `spec.endpoint`, one module per subject, so the
OpenAPI document at /api/openapi.json always describes exactly what is served."""

# Each route module registers its routes on `api` when imported.
from tracker.api import audit, feeds, places, rollup, submissions, works  # noqa: F401
from tracker.api.blueprint import api

__all__ = ["api"]
