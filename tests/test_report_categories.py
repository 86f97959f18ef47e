"""The tree's `report_categories`: checked with their lines, stored in order, retired when
dropped and brought back when they return."""

from pathlib import Path

import pytest
from sqlmodel import select
from test_tree import add_places, problems_of, tree_text, write_tree

from tracker.models import ReportCategory
from tracker.tree import Problem, load_tree, store_tree

# Appended to test_tree's BASE (76 lines), so the first category's code is on line 78.
CATEGORIES = """\
report_categories:
  - code: pothole
    name: Pothole or damaged road surface
    description: Holes, cracks or sunken patches in a road.
    agency: council
    group: Roads
    keywords: [road, pothole]
  - code: home-repair
    name: Concern about a home repair
    agency: eqc
"""
FIRST = len(tree_text().splitlines()) + 2  # the line of the first category's code


def text(categories: str = CATEGORIES, *changes: tuple[str, str]) -> str:
    for old, new in changes:
        assert old in categories, old
        categories = categories.replace(old, new, 1)
    return tree_text() + categories


def test_a_tree_without_report_categories_stays_valid(tmp_path):
    assert load_tree(write_tree(tmp_path, tree_text())).report_categories == []


def test_loads_report_categories_in_file_order(tmp_path):
    tree = load_tree(write_tree(tmp_path, text()))
    pothole, home = tree.report_categories
    assert (pothole.code, pothole.agency, pothole.group, pothole.keywords) == (
        "pothole",
        "council",
        "Roads",
        ["road", "pothole"],
    )
    assert (home.code, home.description, home.group, home.keywords) == ("home-repair", "", None, [])


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("agency: council", "agency: nobody", FIRST + 3,
         "report category 'pothole': unknown agency 'nobody'"),
        ("code: home-repair", "code: pothole", FIRST + 6,
         f"duplicate report category code 'pothole': already used at line {FIRST}"),
        ("code: pothole", "code: Pot_hole", FIRST,
         "report category 'Pot_hole': code must be a lower-case slug (letters, digits, "
         "hyphens), got 'Pot_hole'"),
        ("code: pothole", "code: " + "p" * 51, FIRST,
         f"report category '{'p' * 51}': code should have at most 50 characters, "
         f"got '{'p' * 51}'"),
        ("    name: Pothole or damaged road surface\n", "", FIRST,
         "missing key 'name' in report category 'pothole'"),
        ("    group: Roads\n", "    colour: red\n", FIRST + 4,
         "unknown key 'colour' in report category 'pothole'"),
    ],
    ids=["unknown agency", "duplicate code", "bad code", "long code", "missing name",
         "unknown key"],
)  # fmt: skip
def test_refuses_a_broken_category_at_its_line(tmp_path, old, new, line, message):
    assert Problem(line, message) in problems_of(tmp_path, text(CATEGORIES, (old, new)))


def test_tracker_check_refuses_a_category_of_an_unknown_agency(tmp_path, runner):
    from tracker.cli import main

    path = write_tree(tmp_path, text(CATEGORIES, ("agency: eqc", "agency: nobody")))
    result = runner.invoke(main, ["check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:{FIRST + 8}: report category 'home-repair': unknown agency 'nobody'" in (
        result.output
    )


def stored(session) -> dict[str, tuple]:
    session.expire_all()
    return {
        row.code: (row.position, row.agency_id, row.name, row.retired_at is not None)
        for row in session.exec(select(ReportCategory))
    }


def test_store_tree_upserts_categories_in_order_and_retires_dropped_ones(session, tmp_path):
    add_places(session)
    store_tree(session, load_tree(write_tree(tmp_path, text())))
    session.commit()
    assert stored(session) == {
        "pothole": (0, "council", "Pothole or damaged road surface", False),
        "home-repair": (1, "eqc", "Concern about a home repair", False),
    }
    # Reordered and renamed: the same rows, updated.
    pothole, home = CATEGORIES.split("  - code: ")[1:]
    swapped = text("report_categories:\n  - code: " + home + "  - code: " + pothole)
    swapped = swapped.replace("name: Pothole or", "name: A pothole or")
    store_tree(session, load_tree(write_tree(tmp_path, swapped)))
    session.commit()
    assert stored(session) == {
        "home-repair": (0, "eqc", "Concern about a home repair", False),
        "pothole": (1, "council", "A pothole or damaged road surface", False),
    }
    # Dropped: retired, never deleted (reports point at it).
    store_tree(session, load_tree(write_tree(tmp_path, tree_text())))
    session.commit()
    assert {code: row[3] for code, row in stored(session).items()} == {
        "pothole": True,
        "home-repair": True,
    }
    # Back again: un-retired.
    store_tree(session, load_tree(write_tree(tmp_path, text())))
    session.commit()
    assert {code: row[3] for code, row in stored(session).items()} == {
        "pothole": False,
        "home-repair": False,
    }


def test_the_bundled_tree_routes_every_category_to_one_of_its_agencies():
    tree = load_tree(Path(__file__).parent.parent / "results_tree.yaml")
    agencies = {agency.id for agency in tree.agencies}
    codes = [category.code for category in tree.report_categories]
    assert len(codes) >= 9 and len(set(codes)) == len(codes)
    assert {category.agency for category in tree.report_categories} <= agencies
    assert {"pothole", "water-leak", "wastewater-overflow", "home-repair"} <= set(codes)
