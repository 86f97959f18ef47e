"""schemathesis against a live server: every route of /api/openapi.json, on both backends.

The real app (not the test client, and not in TESTING mode, so its own error handler
answers) serves a small seeded city on 127.0.0.1 at a free port, from werkzeug's server in
a thread. schemathesis reads the document from that server and generates requests for
every operation in it: data that fits the document and data that breaks it, and for the
write routes each of those with a valid agency token and without one. Every answer must
be no server error, have a status code, content type, headers and body the document
declares for it, and refuse what the document says is invalid.

Generation is derandomised, so a run is the same run each time and a failure reproduces;
schemathesis prints a curl command for it. Run with `-s` to see the case count per route.
"""

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from sqlmodel import Session
from werkzeug.serving import make_server

from tracker import create_app
from tracker.auth import issue_token
from tracker.submissions import submit_observations, submit_works

# Cases per operation, per generation mode and per token variant. The document has 11
# operations: 2 writes, and 2 reads that take no parameter (one request each is all there
# is to ask), plus each write route's example body: (7 + 2 * 2) * 2 modes * 100 + 2 + 2 =
# 2,204 cases per backend, about 35 s each here (2 cores).
CASES = 100
MINIMUM_CASES = 1_000
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.ignored_auth,
]
GENERATION = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# The seeded city: a value of each kind of measure, with and without dimensions, and works
# placed by street and by geometry, so reads have something to roll up and explain.
OBSERVATIONS = {
    "eqc": [
        {"measure": "homes-repaired", "place": p, "date": d, "value": v}
        for p, d, v in (
            ("opawa", "2014-01-31", 20),
            ("opawa", "2014-06-30", 45),
            ("st-albans", "2014-06-30", 80),
            ("riccarton", "2014-03-31", 120),
        )
    ],
    "council": [
        {"measure": "wellbeing-score", "place": "opawa", "date": "2014-12-31", "value": 61.5},
        {"measure": "wellbeing-score", "place": "riccarton", "date": "2014-12-31", "value": 58},
        *(
            {
                "measure": "people-supported",
                "place": place,
                "date": "2014-03-31",
                "value": 10 + i,
                "dims": {"age": age},
            }
            for i, (place, age) in enumerate(
                [("opawa", "65+"), ("opawa", "0-14"), ("st-albans", "15-64")]
            )
        ),
    ],
}
WORKS = {
    "council": [
        {
            "id": "WW-1",
            "title": "Renew wastewater main, Ōpāwa Road",
            "status": "complete",
            "street": "opawa-road",
            "actual_start": "2013-11-04",
            "actual_end": "2014-03-20",
            "measure": "pipes-relaid",
            "quantity": 1.2,
        },
        {
            "id": "WW-2",
            "title": "Reline sewer, Riccarton",
            "status": "planned",
            "geometry": {"type": "Point", "coordinates": [172.605, -43.525]},
            "planned_start": "2015-02-01",
        },
    ],
}


# Whose measures the document's example bodies name.
EXAMPLE_AGENCY = {"/api/v1/observations": "eqc", "/api/v1/works": "council"}


@dataclass
class LiveServer:
    base: str
    tokens: dict[str, str]  # agency id -> a valid Bearer token


@pytest.fixture
def live_server(settings, loaded) -> Iterator[LiveServer]:
    """The app on 127.0.0.1 at a free port, on the seeded tiny city; tokens for each agency."""
    engine, _ = loaded
    with Session(engine) as session:
        for agency, rows in OBSERVATIONS.items():
            submit_observations(session, agency_id=agency, rows=rows, channel="api")
        for agency, rows in WORKS.items():
            submit_works(session, agency_id=agency, rows=rows, channel="api")
        tokens = {agency: issue_token(session, agency, "schemathesis") for agency in OBSERVATIONS}
        session.commit()
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", tokens)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["engine"].dispose()


def is_write(operation) -> bool:
    return operation.method.upper() == "POST"


def run_cases(operation, mode, headers, base, http, cases, statuses) -> None:
    """CASES generated requests to `operation`, each answer checked against the document."""

    @GENERATION
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        check_case(case, base, http, headers, cases, statuses)

    run()


def check_case(case, base, http, headers, cases, statuses) -> None:
    response = case.call(base_url=base, session=http, headers=headers)
    case.validate_response(response, checks=CHECKS, headers=headers)
    cases[case.operation.label] += 1
    statuses[case.operation.label, headers is not None].add(response.status_code)


def test_schemathesis_finds_no_fault_in_any_route(live_server, capsys):
    """Over a thousand generated requests to every route of the document, with and without
    a token: no 5xx, and every answer is one the document declares."""
    schema = schemathesis.openapi.from_url(f"{live_server.base}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    document = requests.get(f"{live_server.base}/api/openapi.json", timeout=10).json()
    declared = {(path, method) for path, item in document["paths"].items() for method in item}
    assert {(op.path, op.method.lower()) for op in operations} == declared

    cases: Counter[str] = Counter()
    statuses: defaultdict[tuple[str, bool], set[int]] = defaultdict(set)
    http = requests.Session()
    started = time.monotonic()
    for operation in operations:
        declared_input = document["paths"][operation.path][operation.method.lower()]
        if "parameters" not in declared_input and "requestBody" not in declared_input:
            # One request is all there is to ask of it (hypothesis refuses to repeat it).
            check_case(operation.Case(), live_server.base, http, None, cases, statuses)
            continue
        tokens = [live_server.tokens["eqc"], None] if is_write(operation) else [None]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for token in tokens:
                headers = {"Authorization": f"Bearer {token}"} if token else None
                run_cases(operation, mode, headers, live_server.base, http, cases, statuses)
    # The document's own example bodies, sent as their agency: stored (201).
    for operation in operations:
        if is_write(operation):
            content = document["paths"][operation.path]["post"]["requestBody"]["content"]
            agency = EXAMPLE_AGENCY[operation.path]
            example = operation.Case(
                body=content["application/json"]["example"], media_type="application/json"
            )
            headers = {"Authorization": f"Bearer {live_server.tokens[agency]}"}
            check_case(example, live_server.base, http, headers, cases, statuses)
    seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\nschemathesis: {cases.total()} cases in {seconds:.1f} s")
        for label, count in sorted(cases.items()):
            print(f"  {count:5d}  {label}")
    assert set(cases) == {op.label for op in operations}, "a route got no case"
    assert cases.total() >= MINIMUM_CASES
    for label in ("POST /api/v1/observations", "POST /api/v1/works"):
        # With the token the rows themselves were judged (stored or refused with 422) …
        assert {201, 422} <= statuses[label, True], statuses[label, True]
        # … and without one every request was a 401 (or refused before any token is read).
        assert 401 in statuses[label, False] and not statuses[label, False] & {201, 422}


def test_a_nul_character_in_a_measure_id_is_a_422_not_a_500(client, loaded):
    # Found by schemathesis on PostgreSQL: the write path looked the measure up (and
    # PostgreSQL refused the NUL) before any check of the row.
    engine, _ = loaded
    with Session(engine) as session:
        token = issue_token(session, "eqc")
        session.commit()
    row = {"measure": "homes\x00", "place": "opawa", "date": "2014-03-31", "value": 1}
    answer = client.post(
        "/api/v1/observations",
        json={"observations": [row, {**row, "measure": "homes-repaired", "note": {"a\x00": 1}}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 422
    assert answer.get_json()["errors"] == [
        {"row": 0, "field": "measure", "message": "measure holds a NUL character"},
        {"row": 1, "field": "note", "message": "note holds a NUL character"},
    ]
