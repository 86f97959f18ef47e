"""The results tree: every rule of CONTRACT §2 with its line, and storing a tree."""

import textwrap
from datetime import date
from pathlib import Path

import pytest
from sqlmodel import select

from tracker.errors import TrackerError
from tracker.models import Agency, Dimension, Feed, MeasurePlace, Node, Place
from tracker.tree import Problem, TreeError, load_tree, store_tree

BOUNDARIES = Path(__file__).parent / "fixtures" / "tiny_city" / "neighbourhoods.geojson"
NEIGHBOURHOODS = ["opawa", "st-albans", "riccarton", "red-zone-park"]

# Line numbers in the tests below count lines of this text.
BASE = textwrap.dedent(
    """\
    version: 1
    city: {id: christchurch, name: Christchurch}
    places:
      boundaries: BOUNDARIES
      id_property: id
      name_property: name
      area_property: ward
    dimensions:
      age: ["0-14", "15-64", "65+"]
    agencies:
      - id: eqc
        name: Earthquake Commission
        feeds:
          - id: eqc-repairs
            url: file:repairs.csv
            format: csv
            every: 6h
            provides: observations
            measure: homes-repaired
      - id: council
        name: City Council
    results:
      - id: housing
        title: Safe, warm, dry homes
        outputs:
          - id: eqc-home-repairs
            agency: eqc
            title: Damaged homes repaired
            weight: 2
            measures:
              - id: homes-repaired
                title: Homes with repairs completed
                type: output
                unit: homes
                kind: cumulative
                aggregate: sum
                frequency: monthly
                start: 2011-09-01
                due: 2016-12-31
                target: {opawa: 120, st-albans: 90}
                dimensions: [age]
                weight: 1
          - id: council-parks
            agency: council
            title: Parks restored
            measures:
              - id: park-quality
                title: Park quality score
                type: output
                unit: points
                kind: level
                aggregate: mean
                frequency: yearly
                start: 2012-01-01
                due: 2015-12-31
                target: 80
    """
)
M = " " * 12  # indentation of a measure's keys
F = " " * 8  # indentation of a feed's keys


def tree_text(*changes: tuple[str, str]) -> str:
    """BASE with each (old, new) applied once; `old` must be there."""
    text = BASE.replace("BOUNDARIES", str(BOUNDARIES))
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def write_tree(tmp_path: Path, text: str) -> Path:
    """Write `text` as tmp_path/results_tree.yaml."""
    path = tmp_path / "results_tree.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    """The problems load_tree reports for `text`."""
    with pytest.raises(TreeError) as caught:
        load_tree(write_tree(tmp_path, text))
    return caught.value.problems


def load(tmp_path: Path, *changes: tuple[str, str]):
    """Load BASE with `changes` applied."""
    return load_tree(write_tree(tmp_path, tree_text(*changes)))


# --- refusals -----------------------------------------------------------------------------

CASES = [
    # structure
    ("version: 1", "version: 2", 1, "version should be 1, got 2"),
    (
        f"{M}weight: 1\n",
        f"{M}weigth: 1\n",
        42,
        "unknown key 'weigth' in measure 'homes-repaired'",
    ),
    (f"{M}unit: homes\n", "", 31, "missing key 'unit' in measure 'homes-repaired'"),
    (f"{M}unit: homes\n", f"{M}unit: homes\n{M}unit: houses\n", 35, "duplicate key 'unit'"),
    (
        "- id: housing",
        "- id: Housing",
        23,
        "result 'Housing': id must be a lower-case slug (letters, digits, hyphens), got 'Housing'",
    ),
    (
        "name: Christchurch}",
        "name: Christchurch, timezone: Mars/Olympus}",
        2,
        "city.timezone must be an IANA time zone name such as Pacific/Auckland, got 'Mars/Olympus'",
    ),
    (
        "due: 2016-12-31",
        "due: someday",
        39,
        "measure 'homes-repaired': due must be a date like 2016-12-31, got 'someday'",
    ),
    (
        "target: 80",
        "target: lots",
        56,
        "measure 'park-quality': target must be a number or a map of place id to number, "
        "got 'lots'",
    ),
    (
        "target: 80\n",
        f"target: 80\n{M}places: [opawa, opawa]\n",
        57,
        "measure 'park-quality': places lists 'opawa' twice",
    ),
    (
        f"{M}weight: 1\n",
        f"{M}weight: 1\n{M}source: feeds\n",
        43,
        "measure 'homes-repaired': source should be 'works', got 'feeds'",
    ),
    ("version: 1\n", "version: 1\nvresion: 1\n", 2, "unknown key 'vresion'"),
    (
        'age: ["0-14"',
        'age: ["0|14"',
        9,
        "dimensions.age[0] must not contain '|' or '=', got '0|14'",
    ),
    # ids
    ("- id: council-parks", "- id: housing", 43, "duplicate id 'housing': already used at line 23"),
    (
        "- id: park-quality",
        "- id: homes-repaired",
        47,
        "duplicate id 'homes-repaired': already used at line 31",
    ),
    (
        "  - id: council\n",
        "  - id: eqc\n    name: EQC again\n  - id: council\n",
        20,
        "duplicate agency id 'eqc': already used at line 11",
    ),
    (
        "agency: council",
        "agency: scirt",
        44,
        "output 'council-parks': unknown agency 'scirt'",
    ),
    # places, baselines and targets
    (
        "st-albans: 90}",
        "avonside: 90}",
        40,
        "measure 'homes-repaired': unknown place 'avonside' in target",
    ),
    (
        "dimensions: [age]",
        f"places: [opawa, st-albans, narnia]\n{M}dimensions: [age]",
        41,
        "measure 'homes-repaired': unknown place 'narnia' in places",
    ),
    (
        "dimensions: [age]",
        f"baseline: {{opawa: 0, st-albans: 0, narnia: 0}}\n{M}dimensions: [age]",
        41,
        "measure 'homes-repaired': unknown place 'narnia' in baseline",
    ),
    (
        "dimensions: [age]",
        f"baseline: {{opawa: 5}}\n{M}dimensions: [age]",
        41,
        "measure 'homes-repaired': baseline has no value for 'st-albans'",
    ),
    (
        "dimensions: [age]",
        f"places: [opawa, st-albans, riccarton]\n{M}dimensions: [age]",
        40,
        "measure 'homes-repaired': target has no value for 'riccarton'",
    ),
    (
        "dimensions: [age]",
        f"places: [opawa]\n{M}dimensions: [age]",
        40,
        "measure 'homes-repaired': target names 'st-albans', not one of its places",
    ),
    (
        "target: 80\n",
        f"target: 80\n{M}places: []\n",
        57,
        "measure 'park-quality': places lists no place",
    ),
    (
        "dimensions: [age]",
        f"baseline: 5\n{M}dimensions: [age]",
        41,
        "measure 'homes-repaired': a baseline number other than 0 cannot go with a target "
        "map; give the baseline per place",
    ),
    # dimensions
    (
        "aggregate: sum",
        "aggregate: max",
        41,
        "measure 'homes-repaired': dimensions need aggregate: sum, not 'max'",
    ),
    (
        "dimensions: [age]",
        "dimensions: [age, sex]",
        41,
        "measure 'homes-repaired': dimension 'sex' is not declared under dimensions",
    ),
    # dates and milestones
    (
        "due: 2016-12-31",
        "due: 2010-01-01",
        39,
        "measure 'homes-repaired': due 2010-01-01 is before start 2011-09-01",
    ),
    (
        "due: 2016-12-31\n",
        f"due: 2016-12-31\n{M}milestones: [{{date: 2017-06-30, progress: 0.5}}]\n",
        40,
        "measure 'homes-repaired': milestone 2017-06-30 is outside start 2011-09-01 .. "
        "due 2016-12-31",
    ),
    (
        "due: 2016-12-31\n",
        f"due: 2016-12-31\n{M}milestones:\n"
        f"{M}  - {{date: 2014-01-01, progress: 0.6}}\n"  # date order counts, not file order
        f"{M}  - {{date: 2013-01-01, progress: 0.5}}\n"
        f"{M}  - {{date: 2015-01-01, progress: 0.55}}\n",
        43,
        "measure 'homes-repaired': milestone 2015-01-01 progress 0.55 is below the 0.6 of "
        "milestone 2014-01-01",
    ),
    (
        "due: 2016-12-31\n",
        f"due: 2016-12-31\n{M}milestones: [{{date: 2013-01-01, progress: 1.5}}]\n",
        40,
        "measure 'homes-repaired': milestones[0].progress must be between 0 and 1, got 1.5",
    ),
    # weights
    (
        "title: Safe, warm, dry homes\n",
        "title: Safe, warm, dry homes\n    weight: -1\n",
        25,
        "result 'housing': weight must be greater than 0, got -1",
    ),
    (
        "weight: 2",
        "weight: 0",
        29,
        "output 'eqc-home-repairs': weight must be greater than 0, got 0",
    ),
    (
        f"{M}weight: 1",
        f"{M}weight: -0.5",
        42,
        "measure 'homes-repaired': weight must be greater than 0, got -0.5",
    ),
    # feeds
    (
        f"{F}every: 6h\n",
        f"{F}every: 6h\n{F}cron: '0 3 * * *'\n",
        18,
        "feed 'eqc-repairs': give every or cron, not both",
    ),
    (f"{F}every: 6h\n", "", 14, "feed 'eqc-repairs' needs every (e.g. 6h) or cron"),
    (
        "every: 6h",
        "every: 6 hours",
        17,
        "feed 'eqc-repairs': every must be a positive whole number followed by m, h or d "
        "(e.g. 6h), got '6 hours'",
    ),
    (
        "every: 6h",
        "cron: '0 25 * * *'",
        17,
        "feed 'eqc-repairs': cron is not a valid cron expression (Error validating expression "
        "'25': the last value (25) is higher than the maximum value (23)), got '0 25 * * *'",
    ),
    (
        "every: 6h",
        "cron: '0 3 * *'",
        17,
        "feed 'eqc-repairs': cron must have 5 fields: minute hour day month weekday, got '0 3 * *'",
    ),
    (
        "    name: City Council\n",
        "    name: City Council\n    feeds:\n"
        "      - {id: eqc-repairs, url: 'https://example.org/x.json', format: json, every: 1d}\n",
        23,
        "duplicate feed id 'eqc-repairs': already used at line 14",
    ),
    (
        "measure: homes-repaired",
        "measure: homes-fixed",
        19,
        "feed 'eqc-repairs': unknown measure 'homes-fixed'",
    ),
    (
        "measure: homes-repaired",
        "measure: park-quality",
        19,
        "feed 'eqc-repairs': measure 'park-quality' belongs to agency 'council'",
    ),
    (
        "format: csv",
        "format: xls",
        16,
        "feed 'eqc-repairs': format should be 'arcgis', 'ckan', 'csv', 'geojson' or 'json', "
        "got 'xls'",
    ),
    (
        "provides: observations",
        "provides: rows",
        18,
        "feed 'eqc-repairs': provides should be 'observations' or 'works', got 'rows'",
    ),
    (
        f"{F}provides: observations\n",
        f"{F}provides: observations\n{F}place_match: fuzzy\n",
        19,
        "feed 'eqc-repairs': place_match should be 'id' or 'name', got 'fuzzy'",
    ),
    (
        f"{F}provides: observations\n",
        f"{F}provides: observations\n{F}fields: {{place: [suburb]}}\n",
        19,
        "feed 'eqc-repairs': fields.place should be a valid string",
    ),
    (
        "url: file:repairs.csv",
        "url: ftp://example.org/repairs.csv",
        15,
        "feed 'eqc-repairs': url must start with http://, https:// or file:, "
        "got 'ftp://example.org/repairs.csv'",
    ),
    *(
        (
            "url: file:repairs.csv",
            f"url: {url}",
            15,
            f"feed 'eqc-repairs': url must name a file inside the tree's folder, got '{url}'",
        )
        for url in ("file:../instance/secret_key", "file:/etc/passwd", "file:data/../../x.csv")
    ),
    # changing the tree safely: renames, moves and retirements
    (
        f"{M}weight: 1\n",
        f"{M}weight: 1\n{M}was: park-quality\n",
        43,
        "measure 'homes-repaired': was names 'park-quality', which is still in the tree; "
        "a renamed measure's old id must be gone from it",
    ),
    (
        f"{M}weight: 1\n",
        f"{M}weight: 1\n{M}was: Homes\n",
        43,
        "measure 'homes-repaired': was must be a lower-case slug (letters, digits, hyphens), "
        "got 'Homes'",
    ),
    (
        f"{M}weight: 1\n",
        f"{M}weight: 1\n{M}moved_from: eqc\n",
        43,
        "measure 'homes-repaired': moved_from names 'eqc', the agency of its own output",
    ),
    (
        "target: 80\n",
        "target: 80\nretired:\n  measures: [park-quality]\n",
        58,
        "retired.measures lists 'park-quality', which is still in the tree",
    ),
    (
        "target: 80\n",
        "target: 80\nretired:\n  places: [opawa]\n",
        58,
        "retired.places lists 'opawa', which the boundaries still have",
    ),
    (
        "target: 80\n",
        'target: 80\nretired:\n  dimension_values: {age: ["0-14"]}\n',
        58,
        "retired.dimension_values lists age=0-14, which dimensions still declares",
    ),
    ("target: 80\n", "target: 80\nretired:\n  nodes: [x]\n", 58, "unknown key 'nodes' in retired"),
    (
        "  area_property: ward\n",
        "  area_property: ward\n  renamed: {nowhere: lost}\n",
        8,
        "places.renamed: 'nowhere' is not in the boundaries (renamed maps each new id to its "
        "old one)",
    ),
    (
        "  area_property: ward\n",
        "  area_property: ward\n  renamed: {opawa: st-albans}\n",
        8,
        "places.renamed: the old id 'st-albans' is still in the boundaries",
    ),
    (
        "  area_property: ward\n",
        "  area_property: ward\n  renamed:\n    opawa: lost\n    riccarton: lost\n",
        10,
        "places.renamed: 'lost' is renamed twice ('opawa' too)",
    ),
]


@pytest.mark.parametrize(("old", "new", "line", "message"), CASES, ids=[c[3] for c in CASES])
def test_refuses_a_broken_rule_at_its_line(tmp_path, old, new, line, message):
    assert problems_of(tmp_path, tree_text((old, new))) == [Problem(line, message)]


@pytest.mark.parametrize(
    ("changes", "line", "message"),
    [
        (
            [
                (f"{M}weight: 1\n", f"{M}weight: 1\n{M}was: old-homes\n"),
                ("target: 80\n", f"target: 80\n{M}was: old-homes\n"),
            ],
            58,
            "measure 'park-quality': was names 'old-homes', already taken at line 43",
        ),
        (
            [
                (f"{M}weight: 1\n", f"{M}weight: 1\n{M}was: old-homes\n"),
                ("target: 80\n", "target: 80\nretired: {measures: [old-homes]}\n"),
            ],
            43,
            "measure 'homes-repaired': was names 'old-homes', which retired.measures lists "
            "too; its history either moves here or stops being shown",
        ),
        (
            [
                ("  area_property: ward\n", "  area_property: ward\n  renamed: {opawa: lost}\n"),
                ("target: 80\n", "target: 80\nretired: {places: [lost]}\n"),
            ],
            8,
            "places.renamed: 'lost' is under retired.places too; its history either moves "
            "to 'opawa' or stops being shown",
        ),
    ],
)
def test_refuses_renames_that_contradict_each_other(tmp_path, changes, line, message):
    assert problems_of(tmp_path, tree_text(*changes)) == [Problem(line, message)]


def test_accepts_renames_moves_and_retirements(tmp_path):
    tree = load(
        tmp_path,
        (f"{M}weight: 1\n", f"{M}weight: 1\n{M}was: old-homes\n{M}moved_from: scirt\n"),
        ("  area_property: ward\n", "  area_property: ward\n  renamed: {opawa: old-opawa}\n"),
        (
            "target: 80\n",
            "target: 80\nretired:\n  measures: [gone]\n  places: [lost]\n"
            '  dimension_values: {age: ["0-4"], sex: [other]}\n',
        ),
    )
    homes = tree.measures()[0]
    assert (homes.was, homes.moved_from) == ("old-homes", "scirt")
    assert tree.places.renamed == {"opawa": "old-opawa"}
    assert tree.retired.measures == ["gone"] and tree.retired.places == ["lost"]
    assert tree.retired.dimension_values == {"age": ["0-4"], "sex": ["other"]}


def test_reports_every_planted_fault_with_its_line(tmp_path):
    text = tree_text(
        ("version: 1", "version: 2"),
        ("format: csv", "format: xls"),
        ("due: 2016-12-31", "due: 2010-01-01"),  # in the same measure as a structural error
        (f"{M}weight: 1", f"{M}weigth: 1"),
        ("agency: council", "agency: scirt"),
        ("target: 80", "target: lots"),
    )
    assert problems_of(tmp_path, text) == [
        Problem(1, "version should be 1, got 2"),
        Problem(
            16,
            "feed 'eqc-repairs': format should be 'arcgis', 'ckan', 'csv', 'geojson' or "
            "'json', got 'xls'",
        ),
        Problem(39, "measure 'homes-repaired': due 2010-01-01 is before start 2011-09-01"),
        Problem(42, "unknown key 'weigth' in measure 'homes-repaired'"),
        Problem(44, "output 'council-parks': unknown agency 'scirt'"),
        Problem(
            56,
            "measure 'park-quality': target must be a number or a map of place id to number, "
            "got 'lots'",
        ),
    ]


def test_tree_error_lists_one_problem_per_line_with_the_path(tmp_path):
    path = write_tree(tmp_path, tree_text(("version: 1", "version: 2"), ("weight: 2", "weight: 0")))
    with pytest.raises(TreeError) as caught:
        load_tree(path)
    assert isinstance(caught.value, TrackerError)
    assert str(caught.value) == caught.value.message
    assert caught.value.message.splitlines() == [
        f"{path}:1: version should be 1, got 2",
        f"{path}:29: output 'eqc-home-repairs': weight must be greater than 0, got 0",
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "version: 1\ncity: [oops\n",
            3,
            "not valid YAML: expected ',' or ']', but got '<stream end>'",
        ),
        ("version: 1\n  city: x\n", 2, "not valid YAML: mapping values are not allowed here"),
        ("", None, "the file is empty"),
        ("- 1\n", 1, "the tree should be a mapping"),
    ],
)
def test_refuses_a_file_that_is_not_a_tree(tmp_path, text, line, message):
    assert problems_of(tmp_path, text) == [Problem(line, message)]


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("version: 1", "version: &v [1, *v]", 1, "an alias refers to itself"),
        (
            "version: 1",
            "version: !!int one",
            1,
            "unreadable value: invalid literal for int() with base 10: 'one'",
        ),
        ("version: 1\n", "version: 1\n? [a]\n: b\n", 2, "a key must be plain text"),
    ],
)
def test_reports_yaml_that_has_no_plain_value(tmp_path, old, new, line, message):
    assert Problem(line, message) in problems_of(tmp_path, tree_text((old, new)))


def test_refuses_boundaries_that_cannot_be_read(tmp_path):
    text = tree_text((str(BOUNDARIES), "nowhere.geojson"))
    [problem] = problems_of(tmp_path, text)
    assert problem == Problem(
        4, f"places.boundaries: {tmp_path / 'nowhere.geojson'}: file not found"
    )


def test_refuses_a_missing_streets_file(tmp_path):
    text = tree_text(
        ("  area_property: ward\n", "  area_property: ward\n  streets: streets.geojson\n")
    )
    assert problems_of(tmp_path, text) == [
        Problem(8, f"places.streets: {tmp_path / 'streets.geojson'}: file not found")
    ]


# --- a valid tree -------------------------------------------------------------------------


def test_loads_a_valid_tree(tmp_path):
    tree = load(tmp_path)
    assert tree.path == tmp_path / "results_tree.yaml"
    assert (tree.version, tree.city.id, tree.city.timezone) == (
        1,
        "christchurch",
        "Pacific/Auckland",
    )
    assert tree.places.boundaries == BOUNDARIES.resolve()
    assert (tree.places.area_property, tree.places.streets) == ("ward", None)
    assert tree.neighbourhood_ids == NEIGHBOURHOODS
    assert all(boundary.area for boundary in tree.boundaries)  # area_property was read
    assert tree.dimensions == {"age": ["0-14", "15-64", "65+"]}
    [feed] = tree.feeds()
    assert (feed.agency, feed.every, feed.cron, feed.timeout) == ("eqc", "6h", None, 30)
    assert feed.url == f"file:{tmp_path / 'repairs.csv'}"
    assert feed.path == tmp_path / "repairs.csv"
    assert [m.id for m in tree.measures()] == ["homes-repaired", "park-quality"]


def test_accepts_a_cron_schedule(tmp_path):
    [feed] = load(tmp_path, ("every: 6h", "cron: '0 3 * * 1-5'")).feeds()
    assert (feed.every, feed.cron) == (None, "0 3 * * 1-5")


def test_resolves_paths_against_the_tree_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hoods.geojson").write_bytes(BOUNDARIES.read_bytes())
    tree = load(tmp_path, (str(BOUNDARIES), "data/hoods.geojson"))
    assert tree.places.boundaries == tmp_path / "data" / "hoods.geojson"
    assert tree.neighbourhood_ids == NEIGHBOURHOODS


def test_refuses_a_file_feed_that_a_link_takes_outside_the_tree_folder(tmp_path):
    folder, outside = tmp_path / "tree", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "data").symlink_to(outside, target_is_directory=True)
    text = tree_text(("url: file:repairs.csv", "url: file:data/repairs.csv"))
    assert problems_of(folder, text) == [
        Problem(
            15,
            "feed 'eqc-repairs': url must name a file inside the tree's folder, "
            "got 'file:data/repairs.csv'",
        )
    ]


@pytest.mark.parametrize(
    ("new", "places"),
    [
        ("target: 80\n", NEIGHBOURHOODS),  # a number target: every neighbourhood
        ("", NEIGHBOURHOODS),  # no target at all: the same
        ("target: {riccarton: 70, opawa: 60}\n", ["riccarton", "opawa"]),  # the map's keys
        (f"target: 80\n{M}places: [st-albans, opawa]\n", ["st-albans", "opawa"]),  # as listed
    ],
)
def test_resolves_a_measures_places(tmp_path, new, places):
    measure = load(tmp_path, ("target: 80\n", new)).measures()[1]
    assert measure.places == places


def test_measure_values_are_typed(tmp_path):
    milestones = f"{M}milestones: [{{date: 2013-01-01, progress: 0.2}}]\n"
    first, second = load(
        tmp_path, ("due: 2016-12-31\n", f"due: 2016-12-31\n{milestones}")
    ).measures()
    assert (first.baseline, first.target) == (0.0, {"opawa": 120.0, "st-albans": 90.0})
    assert (first.start, first.due) == (date(2011, 9, 1), date(2016, 12, 31))
    assert first.milestones == [(date(2013, 1, 1), 0.2)]
    assert first.milestones[0].progress == 0.2
    assert (first.dimensions, first.weight, first.source) == (["age"], 1.0, None)
    assert (second.baseline, second.target, second.milestones) == (0.0, 80.0, [])


def test_iter_nodes_walks_depth_first_in_file_order(tmp_path):
    sub = "    results:\n      - {id: rebuilt-homes, title: Rebuilt homes}\n"
    tree = load(tmp_path, ("    outputs:\n", sub + "    outputs:\n"))
    assert [(n.id, kind, parent, position) for n, kind, parent, position in tree.iter_nodes()] == [
        ("housing", "result", None, 0),
        ("rebuilt-homes", "result", "housing", 0),
        ("eqc-home-repairs", "output", "housing", 1),
        ("homes-repaired", "measure", "eqc-home-repairs", 0),
        ("council-parks", "output", "housing", 2),
        ("park-quality", "measure", "council-parks", 0),
    ]


# --- storing ------------------------------------------------------------------------------


def add_places(session) -> None:
    """The neighbourhood rows that measures refer to (stored by the places code in the app)."""
    for place_id in NEIGHBOURHOODS:
        session.add(
            Place(
                id=place_id,
                name=place_id,
                level="neighbourhood",
                parent_id=None,
                search_key=place_id,
                geometry="{}",
                display_geometry="{}",
                label_lon=172.6,
                label_lat=-43.5,
                min_lon=172.6,
                min_lat=-43.5,
                max_lon=172.7,
                max_lat=-43.4,
            )
        )
    session.commit()


def store(session, tmp_path, *changes) -> None:
    """Store BASE with `changes` and commit; later reads come from the database."""
    store_tree(session, load(tmp_path, *changes))
    session.commit()
    session.expire_all()


def snapshot(session) -> dict:
    """Every row store_tree writes, as plain data read back from the database."""
    session.expire_all()
    tables = {"agency": Agency, "node": Node, "place": MeasurePlace, "dim": Dimension, "feed": Feed}
    return {
        name: sorted(repr(sorted(row.model_dump().items())) for row in session.exec(select(model)))
        for name, model in tables.items()
    }


def versions(session) -> dict[str, int]:
    """Each node's data_version."""
    session.expire_all()
    return {node.id: node.data_version for node in session.exec(select(Node))}


def place_rows(session, measure_id: str) -> dict[str, tuple]:
    """A measure's MeasurePlace rows as {place: (baseline, target)}."""
    session.expire_all()
    rows = session.exec(select(MeasurePlace).where(MeasurePlace.measure_id == measure_id))
    return {row.place_id: (row.baseline, row.target) for row in rows}


def test_store_tree_writes_the_tree(session, tmp_path):
    add_places(session)
    store(session, tmp_path)
    node = session.get(Node, "homes-repaired")
    assert (node.kind, node.parent_id, node.position, node.agency_id) == (
        "measure",
        "eqc-home-repairs",
        0,
        None,
    )
    assert (node.measure_kind, node.aggregate, node.start, node.dimensions) == (
        "cumulative",
        "sum",
        date(2011, 9, 1),
        ["age"],
    )
    output = session.get(Node, "council-parks")
    assert (output.kind, output.parent_id, output.position, output.agency_id) == (
        "output",
        "housing",
        1,
        "council",
    )
    feed = session.get(Feed, "eqc-repairs")
    assert (feed.agency_id, feed.measure_id, feed.every) == ("eqc", "homes-repaired", "6h")
    dimensions = session.exec(select(Dimension).order_by(Dimension.position))
    assert [(d.name, d.value, d.position) for d in dimensions] == [
        ("age", "0-14", 0),
        ("age", "15-64", 1),
        ("age", "65+", 2),
    ]


def test_store_tree_twice_changes_nothing(session, tmp_path):
    add_places(session)
    store(session, tmp_path)
    first = snapshot(session)
    store(session, tmp_path)
    assert snapshot(session) == first


@pytest.mark.parametrize(
    ("changes", "measure_id", "rows", "city"),
    [
        (  # a map gives each leaf its value; baseline 0 is zero everywhere
            (),
            "homes-repaired",
            {"opawa": (0.0, 120.0), "st-albans": (0.0, 90.0)},
            (0.0, None),
        ),
        (  # a number on a mean measure applies to every place
            (),
            "park-quality",
            {place: (0.0, 80.0) for place in NEIGHBOURHOODS},
            (None, None),
        ),
        (  # a number on a sum measure is the city's alone
            [
                ("aggregate: mean", "aggregate: sum"),
                ("target: 80\n", f"target: 80\n{M}baseline: 5\n"),
            ],
            "park-quality",
            {place: (None, None) for place in NEIGHBOURHOODS},
            (5.0, 80.0),
        ),
        (
            [
                (
                    "target: 80\n",
                    f"target: 80\n{M}milestones: [{{date: 2013-01-01, progress: 0.5}}]\n",
                )
            ],
            "park-quality",
            {place: (0.0, 80.0) for place in NEIGHBOURHOODS},
            (None, None),
        ),
    ],
)
def test_store_tree_gives_each_measure_place_its_baseline_and_target(
    session, tmp_path, changes, measure_id, rows, city
):
    add_places(session)
    store(session, tmp_path, *changes)
    assert place_rows(session, measure_id) == rows
    node = session.get(Node, measure_id)
    assert (node.city_baseline, node.city_target) == city


def test_store_tree_stores_milestones_as_json(session, tmp_path):
    add_places(session)
    store(
        session,
        tmp_path,
        ("target: 80\n", f"target: 80\n{M}milestones: [{{date: 2013-01-01, progress: 0.5}}]\n"),
    )
    assert session.get(Node, "park-quality").milestones == [{"date": "2013-01-01", "progress": 0.5}]


def test_store_tree_retires_dropped_ids_and_brings_them_back(session, tmp_path):
    add_places(session)
    store(session, tmp_path)
    session.get(Feed, "eqc-repairs").etag = '"v1"'
    session.commit()
    # Without the eqc feed and the council (lines 13-21) and its output (lines 43-56).
    kept = tree_text().splitlines(keepends=True)
    store_tree(session, load_tree(write_tree(tmp_path, "".join(kept[:12] + kept[21:42]))))
    session.commit()
    session.expire_all()
    retired = {node.id for node in session.exec(select(Node)) if node.retired_at is not None}
    assert retired == {"council-parks", "park-quality"}
    assert session.get(Feed, "eqc-repairs").retired_at is not None
    assert session.get(Agency, "council").retired_at is not None
    assert session.get(Agency, "eqc").retired_at is None
    assert place_rows(session, "park-quality") == {place: (0.0, 80.0) for place in NEIGHBOURHOODS}

    store(session, tmp_path)
    session.expire_all()
    assert all(node.retired_at is None for node in session.exec(select(Node)))
    assert session.get(Agency, "council").retired_at is None
    feed = session.get(Feed, "eqc-repairs")
    assert (feed.retired_at, feed.etag) == (None, '"v1"')


def test_store_tree_bumps_data_version_only_on_change(session, tmp_path):
    add_places(session)
    store(session, tmp_path)
    before = versions(session)
    store(session, tmp_path)
    assert versions(session) == before
    store(session, tmp_path, ("opawa: 120", "opawa: 150"))
    assert versions(session) == before | {"homes-repaired": before["homes-repaired"] + 1}
    store(session, tmp_path, ("opawa: 120", "opawa: 150"))
    assert versions(session)["homes-repaired"] == before["homes-repaired"] + 1


def test_store_tree_deletes_places_a_measure_no_longer_covers(session, tmp_path):
    add_places(session)
    store(session, tmp_path)
    store(session, tmp_path, ("target: {opawa: 120, st-albans: 90}", "target: {opawa: 120}"))
    assert place_rows(session, "homes-repaired") == {"opawa": (0.0, 120.0)}
    assert versions(session)["homes-repaired"] == 1


def test_store_tree_forgets_the_etag_when_a_feed_moves(session, tmp_path):
    add_places(session)
    store(session, tmp_path)
    session.get(Feed, "eqc-repairs").etag = '"v1"'
    session.commit()
    store(session, tmp_path, ("url: file:repairs.csv", "url: https://example.org/repairs.csv"))
    feed = session.get(Feed, "eqc-repairs")
    assert (feed.url, feed.etag) == ("https://example.org/repairs.csv", None)
