"""A result's city-wide page (`/results/ID`) and a measure's (`/measures/ID`)."""

from flask import Blueprint

from tracker.errors import NotFound

bp = Blueprint("results", __name__)


@bp.get("/results/<node_id>")
def result(node_id: str):
    """A result or output across the city: every neighbourhood, leaders and laggards."""
    raise NotFound(f"no result {node_id!r}")


@bp.get("/measures/<node_id>")
def measure(node_id: str):
    """A measure over time against its trajectory, by place and by dimension."""
    raise NotFound(f"no measure {node_id!r}")
