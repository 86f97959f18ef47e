"""`load_tree`: read a results tree file and check it whole."""

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tracker.places import Boundary, PlacesError, read_boundaries
from tracker.tree.checker import _Checker
from tracker.tree.problems import Loc, Problem, TreeError, _line, _problem
from tracker.tree.specs import Tree
from tracker.tree.yaml_lines import _read_yaml


def load_tree(path: str | Path) -> Tree:
    """Read and check a results tree; TreeError lists every problem with its line."""
    path = Path(path).resolve()
    data, lines, problems = _read_yaml(path)
    boundaries = _read_places(data, lines, path.parent, problems)
    ids = [boundary.id for boundary in boundaries] if boundaries is not None else None
    problems += _Checker(data, lines, ids).run()
    context = {"base": path.parent, "place_ids": ids or [], "path": path, "boundaries": boundaries}
    try:
        tree = Tree.model_validate(data, context=context)
    except ValidationError as exc:
        problems += [_problem(error, data, lines) for error in exc.errors(include_url=False)]
    if problems:
        # Several rules can see the same fault; say it once.
        unique = list(dict.fromkeys(problems))
        raise TreeError(sorted(unique, key=lambda p: p.line or 0), path)
    return tree


def _read_places(
    data: Any, lines: dict[Loc, int], base: Path, problems: list[Problem]
) -> list[Boundary] | None:
    """The neighbourhoods named in `places` (None when unreadable); notes missing files."""
    places = data.get("places") if isinstance(data, dict) else None
    if not isinstance(places, dict):
        return None
    streets = places.get("streets")
    if isinstance(streets, str) and not (base / streets).is_file():
        line = _line(lines, ("places", "streets"))
        problems.append(
            Problem(line, f"places.streets: {(base / streets).resolve()}: file not found")
        )
    file = places.get("boundaries")
    names = {
        "id_property": places.get("id_property", "id"),
        "name_property": places.get("name_property", "name"),
    }
    area = places.get("area_property")
    # Malformed settings are reported by the structural check; nothing to read then.
    if not isinstance(file, str) or not all(isinstance(v, str) for v in names.values()):
        return None
    if area is not None and not isinstance(area, str):
        return None
    try:
        return read_boundaries((base / file).resolve(), **names, area_property=area)
    except PlacesError as exc:
        line = _line(lines, ("places", "boundaries"))
        problems.append(Problem(line, f"places.boundaries: {exc.message}"))
        return None
