"""The `tracker` command, through click's runner, on SQLite and PostgreSQL."""

from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from tracker.auth import hash_token
from tracker.cli import main
from tracker.db import make_engine
from tracker.models import ApiToken, Node, Place, Street

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_city"


def _tiny_tree_text() -> str:
    """The tiny city's tree with absolute data paths, to copy elsewhere and change."""
    text = (TINY / "tree.yaml").read_text(encoding="utf-8")
    for name in ("neighbourhoods.geojson", "streets.geojson"):
        text = text.replace(f": {name}", f": {TINY / name}")
    return text


def _count(url: str, model) -> int:
    engine = make_engine(url)
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(model))
    engine.dispose()
    return count


def test_init_loads_places_and_tree_and_is_safe_twice(runner, settings):
    first = runner.invoke(main, ["init"])
    assert first.exit_code == 0, first.output
    counts = [_count(settings.database_url, m) for m in (Place, Street, Node)]
    second = runner.invoke(main, ["init"])
    assert second.exit_code == 0, second.output
    assert [_count(settings.database_url, m) for m in (Place, Street, Node)] == counts
    assert counts[0] == 7  # city, two areas, four neighbourhoods
    assert "4 neighbourhoods" in first.output


def test_init_refuses_a_bad_tree_and_writes_nothing(runner, settings, tmp_path, monkeypatch):
    bad = tmp_path / "tree.yaml"
    bad.write_text(_tiny_tree_text().replace("agency: eqc", "agency: nobody"))
    monkeypatch.setenv("TRACKER_TREE", str(bad))
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 1
    assert "nobody" in result.output
    assert _count(settings.database_url, Node) == 0


def test_check_accepts_a_good_tree(runner):
    result = runner.invoke(main, ["check", str(TINY / "tree.yaml")])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_check_lists_every_problem_with_its_line(runner, tmp_path):
    text = _tiny_tree_text().replace("agency: eqc", "agency: nobody")
    text = text.replace("kind: flow", "kind: flowing")
    text = text.replace("baseline: 50", "baseline: 50\n            colour: red")
    bad = tmp_path / "tree.yaml"
    bad.write_text(text)
    lines = text.splitlines()
    expected = [
        next(i for i, line in enumerate(lines, 1) if needle in line)
        for needle in ("agency: nobody", "kind: flowing", "colour: red")
    ]
    result = runner.invoke(main, ["check", str(bad)])
    assert result.exit_code == 1
    for line in expected:
        assert f":{line}:" in result.output, (line, result.output)
    assert "3 problem(s)" in result.output


def test_agency_token_prints_the_token_last_and_stores_only_its_hash(runner, settings):
    assert runner.invoke(main, ["init"]).exit_code == 0
    result = runner.invoke(main, ["agency", "token", "eqc", "--label", "nightly upload"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert len(token) > 40
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        rows = session.scalars(select(ApiToken)).all()
    engine.dispose()
    assert [(r.agency_id, r.token_hash, r.label) for r in rows] == [
        ("eqc", hash_token(token), "nightly upload")
    ]
    assert token not in rows[0].token_hash


def test_agency_token_refuses_an_unknown_agency(runner):
    assert runner.invoke(main, ["init"]).exit_code == 0
    result = runner.invoke(main, ["agency", "token", "nobody"])
    assert result.exit_code == 1
    assert "nobody" in result.output


def test_every_command_is_documented_in_the_readme():
    readme = (FIXTURES.parent.parent / "README.md").read_text(encoding="utf-8")
    commands = [
        f"tracker {name} {sub}" if hasattr(command, "commands") else f"tracker {name}"
        for name, command in main.commands.items()
        for sub in (getattr(command, "commands", None) or [""])
    ]
    assert len(commands) >= 5
    for command in commands:
        assert f"`{command.strip()}" in readme, command
