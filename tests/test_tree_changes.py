"""The tree changes over the years: `tracker init` retires, moves and refuses, never loses.

Each test loads a small city, stores rows through the API, edits the tree or its
boundaries the way the people keeping the file would, runs `tracker init` again and
checks what residents, agencies and officials then see.
"""

import copy
import json
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from sqlmodel import Session
from staff_helpers import add_user, sign_in

from tracker.auth import issue_token
from tracker.cli import main
from tracker.models import Agency, Feed, Node, Observation, ObservationRevision, Place, WorkPlace
from tracker.settings import Settings

TINY = Path(__file__).parent / "fixtures" / "tiny_city"
ON = "2015-01-01"  # the day figures are read for

HOMES = {
    "id": "homes-repaired",
    "title": "Homes with repairs completed",
    "type": "output",
    "unit": "homes",
    "kind": "cumulative",
    "aggregate": "sum",
    "frequency": "monthly",
    "start": date(2012, 1, 1),
    "due": date(2016, 12, 31),
    "target": 1000,
    "dimensions": ["age"],
}
PIPES = {
    "id": "pipes-relaid",
    "title": "Wastewater pipe relaid",
    "type": "output",
    "unit": "km",
    "kind": "cumulative",
    "aggregate": "sum",
    "frequency": "monthly",
    "start": date(2012, 1, 1),
    "due": date(2016, 12, 31),
    "target": 10,
    "source": "works",
}
TREE = {
    "version": 1,
    "city": {"id": "tiny", "name": "Tiny City"},
    "places": {
        "boundaries": "neighbourhoods.geojson",
        "area_property": "ward",
        "streets": "streets.geojson",
    },
    "dimensions": {"age": ["0-14", "15-64", "65+"]},
    "agencies": [
        {"id": "eqc", "name": "Earthquake Commission"},
        {
            "id": "council",
            "name": "City Council",
            "feeds": [
                {
                    "id": "council-works",
                    "url": "https://example.org/works.csv",
                    "format": "csv",
                    "every": "6h",
                    "provides": "works",
                }
            ],
        },
    ],
    "results": [
        {
            "id": "housing",
            "title": "Safe, warm, dry homes",
            "outputs": [
                {
                    "id": "eqc-repairs",
                    "agency": "eqc",
                    "title": "Damaged homes repaired",
                    "measures": [HOMES],
                }
            ],
        },
        {
            "id": "water",
            "title": "Working wastewater",
            "outputs": [
                {
                    "id": "council-pipes",
                    "agency": "council",
                    "title": "Wastewater pipes relaid",
                    "measures": [PIPES],
                }
            ],
        },
    ],
}
IN_RED_ZONE_PARK = [172.615, -43.525]  # the north-east square of the tiny city


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """The small city above, in a folder of its own that tests edit."""
    folder = tmp_path / "city"
    folder.mkdir()
    for name in ("neighbourhoods.geojson", "streets.geojson"):
        shutil.copy(TINY / name, folder / name)
    settings = Settings(
        database_url=database_url,
        tree=folder / "tree.yaml",
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        _env_file=None,
    )
    write_tree(settings, TREE)
    return settings


@pytest.fixture
def tree() -> dict:
    """A copy of the tree to edit."""
    return copy.deepcopy(TREE)


@pytest.fixture
def tokens(loaded) -> dict[str, str]:
    engine, _ = loaded
    with Session(engine) as session:
        issued = {agency: issue_token(session, agency) for agency in ("eqc", "council")}
        session.commit()
    return issued


def write_tree(settings: Settings, tree: dict) -> None:
    settings.tree.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")


def boundaries(settings: Settings) -> list[dict]:
    """The features of the city's boundaries file."""
    return json.loads((settings.tree.parent / "neighbourhoods.geojson").read_text())["features"]


def write_boundaries(settings: Settings, features: list[dict]) -> None:
    data = {"type": "FeatureCollection", "features": features}
    (settings.tree.parent / "neighbourhoods.geojson").write_text(json.dumps(data))


def without_red_zone_park(settings: Settings) -> list[dict]:
    """The boundaries with red-zone-park gone and riccarton stretched over its square."""
    features = [f for f in boundaries(settings) if f["properties"]["id"] != "red-zone-park"]
    riccarton = next(f for f in features if f["properties"]["id"] == "riccarton")
    riccarton["geometry"]["coordinates"] = [
        [[172.6, -43.53], [172.62, -43.53], [172.62, -43.52], [172.6, -43.52], [172.6, -43.53]]
    ]
    return features


def init(runner):
    """`tracker init`, as an operator runs it after editing the tree."""
    return runner.invoke(main, ["init"])


def init_with(runner, settings: Settings, tree: dict):
    """Write `tree` and run init, which must accept it."""
    write_tree(settings, tree)
    result = init(runner)
    assert result.exit_code == 0, result.output
    return result


def post(client, token: str, kind: str, rows: list[dict]):
    return client.post(
        f"/api/v1/{kind}", json={kind: rows}, headers={"Authorization": f"Bearer {token}"}
    )


def observation(place: str = "riccarton", value: float = 5, age: str = "0-14", **extra) -> dict:
    return {
        "measure": "homes-repaired",
        "place": place,
        "date": "2014-03-31",
        "value": value,
        "dims": {"age": age},
        **extra,
    }


def work(ref: str = "w1", at: list[float] = IN_RED_ZONE_PARK, **extra) -> dict:
    return {
        "id": ref,
        "title": "Relay a main",
        "status": "complete",
        "geometry": {"type": "Point", "coordinates": at},
        "actual_end": "2014-05-01",
        "measure": "pipes-relaid",
        "quantity": 2,
        **extra,
    }


def figure(client, place: str, node_id: str) -> dict | None:
    """The node `node_id` of the roll-up at `place`, None when the roll-up leaves it out."""
    answer = client.get(f"/api/v1/rollup?place={place}&date={ON}")
    assert answer.status_code == 200, answer.get_json()
    nodes = list(answer.get_json()["results"])
    while nodes:
        node = nodes.pop()
        if node["id"] == node_id:
            return node
        nodes += node["children"]
    return None


def count(loaded, model, *conditions) -> int:
    with Session(loaded[0]) as session:
        return session.scalar(select(func.count()).select_from(model).where(*conditions))


def without_council(tree: dict) -> dict:
    """The tree without the council: its agency entry, its feed and its output."""
    tree["agencies"] = [a for a in tree["agencies"] if a["id"] != "council"]
    tree["results"] = [r for r in tree["results"] if r["id"] != "water"]
    return tree


# --- a removed agency -----------------------------------------------------------------------


def test_a_removed_agencys_token_gets_401_on_every_write_until_it_comes_back(
    client, runner, settings, tree, tokens
):
    assert post(client, tokens["council"], "works", [work()]).status_code == 201
    init_with(runner, settings, without_council(tree))
    plain = {k: v for k, v in work(ref="w2").items() if k not in ("measure", "quantity")}
    for kind, rows in (("works", [plain]), ("observations", [observation()])):
        answer = post(client, tokens["council"], kind, rows)
        assert answer.status_code == 401, answer.get_json()
        assert "council" in answer.get_json()["error"]
    assert post(client, tokens["eqc"], "observations", [observation()]).status_code == 201

    write_tree(settings, TREE)
    assert init(runner).exit_code == 0
    assert post(client, tokens["council"], "works", [work(ref="w2")]).status_code == 201


def test_a_removed_agency_is_reported_its_feeds_stop_and_its_history_keeps_its_name(
    app, client, runner, settings, tree, tokens, loaded
):
    post(client, tokens["council"], "works", [work()])
    result = init_with(runner, settings, without_council(tree))
    lines = result.output.splitlines()
    assert "Retired agencies: council" in lines
    assert "Retired feeds: council-works" in lines
    assert "Retired results: water" in lines
    assert "Retired outputs: council-pipes" in lines
    assert "Retired measures: pipes-relaid" in lines
    assert (
        "Agency 'council': 1 API token and 0 staff accounts stop working until it is back in "
        "the tree; its works (1) stay shown, read-only." in lines
    )
    with Session(loaded[0]) as session:
        assert session.get(Feed, "council-works").retired_at is not None
        assert session.get(Agency, "council").retired_at is not None
    ran = runner.invoke(main, ["import", "council-works"])
    assert ran.exit_code == 1 and "no feed 'council-works'" in ran.output

    add_user(app, "official@city.example", role="official")
    sign_in(client, "official@city.example")
    trail = client.get("/api/v1/audit").get_json()
    assert [(e["action"], e["agency"]) for e in trail if e["entity"] == "council/w1"] == [
        ("work.create", "council")
    ]
    shown = client.get("/api/v1/works?bbox=172.6,-43.54,172.62,-43.52").get_json()
    assert [f["id"] for f in shown["features"]] == ["council/w1"]


def test_a_removed_agencys_staff_cannot_sign_in_and_their_sessions_end(
    app, client, runner, settings, tree
):
    add_user(app, "staff@council.example", agency_id="council")
    assert sign_in(client, "staff@council.example").status_code == 303
    assert client.get("/agency").status_code == 200
    write_tree(settings, without_council(tree))
    assert init(runner).exit_code == 0

    answer = client.get("/agency")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/login")
    refused = sign_in(client, "staff@council.example")
    assert refused.status_code == 403
    assert "no longer part of the results tree" in refused.get_data(as_text=True)

    write_tree(settings, TREE)
    assert init(runner).exit_code == 0
    assert sign_in(client, "staff@council.example").status_code == 303


# --- a removed or redrawn place ---------------------------------------------------------------


def test_a_removed_place_is_retired_and_its_works_move_to_the_place_that_holds_them(
    client, runner, settings, tokens, loaded
):
    assert post(client, tokens["council"], "works", [work()]).status_code == 201
    assert figure(client, "red-zone-park", "pipes-relaid")["value"] == 2
    assert figure(client, "riccarton", "pipes-relaid")["value"] in (None, 0)
    write_boundaries(settings, without_red_zone_park(settings))
    result = init(runner)
    assert result.exit_code == 0, result.output
    assert "Retired places: red-zone-park" in result.output
    assert "1 work located again in the new boundaries." in result.output

    ids = [f["id"] for f in client.get("/api/v1/places").get_json()["features"]]
    assert "red-zone-park" not in ids and "riccarton" in ids
    assert client.get(f"/api/v1/rollup?place=red-zone-park&date={ON}").status_code == 404
    explain = client.get(f"/api/v1/explain?node=pipes-relaid&place=red-zone-park&date={ON}")
    assert explain.status_code == 404
    assert client.get("/api/v1/works?place=red-zone-park").status_code == 404
    # The same app, its cache warm from before: the works-derived figure moved with the work.
    assert figure(client, "riccarton", "pipes-relaid")["value"] == 2
    located = client.get("/api/v1/works?place=riccarton").get_json()["features"]
    assert [(f["id"], f["properties"]["places"]) for f in located] == [
        ("council/w1", ["riccarton"])
    ]
    assert post(client, tokens["council"], "works", [work(ref="w2")]).status_code == 201
    assert count(loaded, WorkPlace, WorkPlace.place_id == "red-zone-park") == 0
    with Session(loaded[0]) as session:
        assert session.get(Place, "red-zone-park").retired_at is not None


def test_a_removed_place_comes_back_when_the_boundaries_have_it_again(
    client, runner, settings, tokens
):
    original = boundaries(settings)
    post(client, tokens["council"], "works", [work()])
    write_boundaries(settings, without_red_zone_park(settings))
    assert init(runner).exit_code == 0
    assert client.get(f"/api/v1/rollup?place=red-zone-park&date={ON}").status_code == 404
    write_boundaries(settings, original)
    assert init(runner).exit_code == 0
    assert figure(client, "red-zone-park", "pipes-relaid")["value"] == 2
    assert figure(client, "riccarton", "pipes-relaid")["value"] in (None, 0)


def test_removing_a_place_with_observations_is_refused_until_the_tree_retires_it(
    client, runner, settings, tree, tokens, loaded
):
    post(client, tokens["eqc"], "observations", [observation(place="red-zone-park")])
    write_boundaries(settings, without_red_zone_park(settings))
    refused = init(runner)
    assert refused.exit_code == 1
    assert "place 'red-zone-park' is gone from the boundaries but has 1 stored observation" in (
        refused.output
    )
    assert "retired: {places: [red-zone-park]}" in refused.output
    assert "nothing was changed" in refused.output
    assert figure(client, "red-zone-park", "homes-repaired")["value"] == 5

    tree["retired"] = {"places": ["red-zone-park"]}
    result = init_with(runner, settings, tree)
    assert "Place 'red-zone-park': 1 stored observation no longer shown (retired)." in (
        result.output
    )
    assert client.get(f"/api/v1/rollup?place=red-zone-park&date={ON}").status_code == 404
    assert count(loaded, Observation) == 1  # stopped showing, not deleted


def test_a_renamed_place_keeps_its_observations(client, runner, settings, tree, tokens, loaded):
    post(client, tokens["eqc"], "observations", [observation(place="riccarton")])
    post(client, tokens["eqc"], "observations", [observation(place="riccarton", value=6)])
    features = boundaries(settings)
    for feature in features:
        if feature["properties"]["id"] == "riccarton":
            feature["properties"]["id"] = "riccarton-central"
    write_boundaries(settings, features)
    refused = init(runner)
    assert refused.exit_code == 1 and "place 'riccarton' is gone" in refused.output

    tree["places"]["renamed"] = {"riccarton-central": "riccarton"}
    result = init_with(runner, settings, tree)
    assert "Place 'riccarton' renamed 'riccarton-central': 1 observation moved." in result.output
    assert figure(client, "riccarton-central", "homes-repaired")["value"] == 6
    assert client.get(f"/api/v1/rollup?place=riccarton&date={ON}").status_code == 404
    assert count(loaded, ObservationRevision) == 1  # the replaced 5 is still in the history
    assert count(loaded, Observation, Observation.place_id == "riccarton") == 0


def test_a_rename_does_not_merge_two_neighbourhoods_series(
    client, runner, settings, tree, tokens, loaded
):
    post(
        client,
        tokens["eqc"],
        "observations",
        [observation(place="riccarton"), observation(place="red-zone-park", date="2014-06-30")],
    )
    features = [f for f in boundaries(settings) if f["properties"]["id"] != "riccarton"]
    write_boundaries(settings, features)
    tree["places"]["renamed"] = {"red-zone-park": "riccarton"}
    write_tree(settings, tree)
    refused = init(runner)
    assert refused.exit_code == 1
    assert (
        "'riccarton' cannot be renamed 'red-zone-park': 'red-zone-park' already holds "
        "observations of the same series as 1 observation of 'riccarton'" in refused.output
    )
    assert count(loaded, Observation, Observation.place_id == "riccarton") == 1


# --- a removed or renamed measure ------------------------------------------------------------


def without_homes(tree: dict) -> dict:
    tree["results"][0]["outputs"][0]["measures"] = []
    return tree


def test_removing_a_measure_with_observations_is_refused_until_the_tree_retires_it(
    client, runner, settings, tree, tokens, loaded
):
    post(client, tokens["eqc"], "observations", [observation(), observation(age="65+")])
    write_tree(settings, without_homes(tree))
    refused = init(runner)
    assert refused.exit_code == 1
    assert (
        "measure 'homes-repaired' is gone from the tree but has 2 stored observations"
        in refused.output
    )
    assert "`retired: {measures: [homes-repaired]}`" in refused.output
    assert "`was: homes-repaired`" in refused.output
    with Session(loaded[0]) as session:
        assert session.get(Node, "homes-repaired").retired_at is None

    tree["retired"] = {"measures": ["homes-repaired"]}
    result = init_with(runner, settings, tree)
    assert "Retired measures: homes-repaired" in result.output
    assert "Measure 'homes-repaired': 2 stored observations no longer shown (retired)." in (
        result.output
    )


def rename_measure(runner, settings: Settings, tree: dict, result: int, new_id: str):
    """Give the measure of the `result`-th result a new id, say `was`, and run init."""
    measure = tree["results"][result]["outputs"][0]["measures"][0]
    measure["id"], measure["was"] = new_id, measure["id"]
    return init_with(runner, settings, tree)


def test_a_renamed_measure_keeps_its_observations_and_revisions(
    client, runner, settings, tree, tokens, loaded
):
    post(client, tokens["eqc"], "observations", [observation(value=5)])
    post(client, tokens["eqc"], "observations", [observation(value=7)])
    result = rename_measure(runner, settings, tree, 0, "homes-rebuilt")
    assert "Measure 'homes-repaired' renamed 'homes-rebuilt': 1 observation and 0 works moved." in (
        result.output
    )
    assert "Retired measures: homes-repaired" in result.output
    series = client.get("/api/v1/measures/homes-rebuilt/series?place=riccarton").get_json()
    assert [(p["date"], p["value"]) for p in series] == [("2014-03-31", 7)]
    assert count(loaded, ObservationRevision) == 1
    answer = post(client, tokens["eqc"], "observations", [observation(measure="homes-rebuilt")])
    assert answer.status_code == 201
    assert figure(client, "tiny", "homes-repaired") is None

    again = init(runner)  # the file still says `was`: nothing more to move
    assert again.exit_code == 0 and "moved" not in again.output


def test_a_renamed_works_measure_keeps_its_works(client, runner, settings, tree, tokens):
    post(client, tokens["council"], "works", [work()])
    result = rename_measure(runner, settings, tree, 1, "pipes-renewed")
    assert "Measure 'pipes-relaid' renamed 'pipes-renewed': 0 observations and 1 work moved." in (
        result.output
    )
    assert figure(client, "tiny", "pipes-renewed")["value"] == 2


# --- a removed dimension value ----------------------------------------------------------------


def test_removing_a_dimension_value_with_observations_is_refused_until_the_tree_retires_it(
    client, runner, settings, tree, tokens
):
    post(client, tokens["eqc"], "observations", [observation(age="0-14"), observation(age="65+")])
    assert figure(client, "tiny", "homes-repaired")["value"] == 10
    tree["dimensions"]["age"] = ["15-64", "65+"]
    write_tree(settings, tree)
    refused = init(runner)
    assert refused.exit_code == 1
    assert "dimension value age=0-14 is gone from the tree but 1 stored observation" in (
        refused.output
    )
    assert figure(client, "tiny", "homes-repaired")["value"] == 10

    tree["retired"] = {"dimension_values": {"age": ["0-14"]}}
    result = init_with(runner, settings, tree)
    assert "Retired dimension values: age=0-14" in result.output
    assert "Dimension value age=0-14: 1 stored observation no longer counted (retired)." in (
        result.output
    )
    assert figure(client, "tiny", "homes-repaired")["value"] == 5


# --- a measure moved to another agency --------------------------------------------------------


def homes_under_council(tree: dict, **acknowledgement) -> dict:
    """The tree with homes-repaired moved from the EQC's output to the council's."""
    measure = tree["results"][0]["outputs"][0]["measures"].pop()
    tree["results"][1]["outputs"][0]["measures"].append(measure | acknowledgement)
    return tree


def test_moving_a_measure_to_another_agency_is_refused_until_the_tree_confirms_it(
    client, runner, settings, tree, tokens
):
    post(client, tokens["eqc"], "observations", [observation(), observation(age="65+")])
    write_tree(settings, homes_under_council(copy.deepcopy(tree)))
    refused = init(runner)
    assert refused.exit_code == 1
    assert (
        "measure 'homes-repaired' moves from agency 'eqc' to 'council', handing it "
        "2 observations" in refused.output
    )
    assert "`moved_from: eqc`" in refused.output
    assert post(client, tokens["eqc"], "observations", [observation(value=9)]).status_code == 201

    result = init_with(runner, settings, homes_under_council(tree, moved_from="eqc"))
    assert (
        "Warning: measure 'homes-repaired' moved from agency 'eqc' to 'council': its "
        "2 observations are now 'council''s, and only 'council' may write it." in result.output
    )
    assert post(client, tokens["council"], "observations", [observation()]).status_code == 201
    assert post(client, tokens["eqc"], "observations", [observation()]).status_code == 403
    assert init(runner).exit_code == 0  # moved already: the acknowledgement is history now


def test_changing_a_measures_dimensions_with_observations_is_refused_until_the_tree_retires_them(
    client, runner, settings, tree, tokens
):
    post(client, tokens["eqc"], "observations", [observation(age="0-14"), observation(age="65+")])
    assert figure(client, "tiny", "homes-repaired")["value"] == 10
    homes = tree["results"][0]["outputs"][0]["measures"][0]
    assert homes["id"] == "homes-repaired"
    homes.pop("dimensions")  # the cells age=… would fit no cell of a measure without any
    write_tree(settings, tree)
    refused = init(runner)
    assert refused.exit_code == 1
    assert (
        "measure 'homes-repaired' changes its dimensions [age] → [], but 2 stored "
        "observations were stored under the old cells" in refused.output
    )
    assert figure(client, "tiny", "homes-repaired")["value"] == 10

    tree["retired"] = {"measure_dimensions": ["homes-repaired"]}
    result = init_with(runner, settings, tree)
    assert (
        "Measure homes-repaired (dimensions [age] → []): 2 stored observations no longer "
        "counted (retired)." in result.output
    )
    assert figure(client, "tiny", "homes-repaired")["value"] is None
