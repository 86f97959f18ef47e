"""Roll-up figures (CONTRACT §3): the tree at a place, a measure's series, the trail behind
a figure, and agencies' reporting timeliness."""

from flask import current_app

from tracker.api.blueprint import api
from tracker.api.schemas import (
    ExplainAnswer,
    ExplainQuery,
    RollupAnswer,
    RollupQuery,
    SeriesPoint,
    SeriesQuery,
    TimelinessQuery,
    TimelinessRow,
)
from tracker.api.spec import endpoint
from tracker.db import get_session
from tracker.rollup import app_cache, explain, measure_series, rollup, timeliness


@endpoint(
    api,
    "/v1/rollup",
    query=RollupQuery,
    response=RollupAnswer,
    errors=(404,),
    tags=("rollup",),
)
def get_rollup(query: RollupQuery):
    """Every result, output and measure at a place on a day.

    Add `dim.NAME=VALUE` parameters (e.g. `dim.age=65+`) to keep only the measures that
    declare those dimensions and sum only the matching cells; filtered views show values
    but no progress or targets. An unknown dimension or value is a 400, an unknown place
    a 404. Measures that cover no neighbourhood of the place are left out, and so are
    outputs and results left with no measure.
    """
    answer = rollup(
        get_session(),
        place_id=query.place,
        on=query.date,
        filters=query.dimension_filters(),
        cache=app_cache(current_app),
    )
    return answer.to_json()


@endpoint(
    api,
    "/v1/measures/<measure_id>/series",
    query=SeriesQuery,
    response=list[SeriesPoint],
    errors=(404,),
    tags=("rollup",),
    path_examples={"measure_id": "homes-repaired"},
)
def get_series(measure_id: str, query: SeriesQuery):
    """A measure's value at a place on every date one of its neighbourhoods reported."""
    return measure_series(
        get_session(), measure_id=measure_id, place_id=query.place, cache=app_cache(current_app)
    )


@endpoint(
    api, "/v1/explain", query=ExplainQuery, response=ExplainAnswer, errors=(404,), tags=("rollup",)
)
def get_explain(query: ExplainQuery):
    """The trail behind one figure.

    For a measure: each neighbourhood's value with the observations behind it (date,
    revisions, agency, channel, feed run, time received). For an output or result: each
    child with its weight and progress, and whether it counted.
    """
    return explain(
        get_session(),
        node_id=query.node,
        place_id=query.place,
        on=query.date,
        cache=app_cache(current_app),
    )


@endpoint(
    api,
    "/v1/timeliness",
    query=TimelinessQuery,
    response=list[TimelinessRow],
    errors=(404,),
    tags=("rollup",),
)
def get_timeliness(query: TimelinessQuery):
    """Per measure of an agency: reports expected since start, received, and on time."""
    return timeliness(get_session(), agency_id=query.agency, cache=app_cache(current_app))
