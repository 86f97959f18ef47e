"""Problems with a tree file, each with its line, and pydantic's errors reworded as them."""

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from tracker.errors import TrackerError

Loc = tuple[Any, ...]  # a path into the data, e.g. ("results", 0, "outputs", 1, "id")


# --- problems -------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a tree file; `line` is 1-based, None for the file as a whole."""

    line: int | None
    message: str


class TreeError(TrackerError):
    """A results tree refused as a whole; `problems` lists every reason, in line order."""

    def __init__(self, problems: list[Problem], path: Path | str = "results_tree.yaml"):
        self.problems = problems
        self.path = Path(path)
        super().__init__(
            "\n".join(
                f"{path}:{p.line}: {p.message}" if p.line else f"{path}: {p.message}"
                for p in problems
            ),
            errors=[{"line": p.line, "message": p.message} for p in problems],
        )


_KINDS = {
    "results": "result",
    "outputs": "output",
    "measures": "measure",
    "agencies": "agency",
    "feeds": "feed",
    "report_categories": "report category",
}
_MESSAGES = {
    "model_type": "should be a mapping",
    "dict_type": "should be a mapping",
    "arguments_type": "should be a mapping",
    "list_type": "should be a list",
    "named_tuple_type": "should be a mapping with date and progress",
}


def _line(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the longest prefix of `loc` that the file has."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _label(kind: str, item: Any, index: int) -> str:
    """How a message names a listed item: by its id, else by its place in the list."""
    ident = item.get("id", item.get("code")) if isinstance(item, dict) else None
    return f"{kind} {ident!r}" if isinstance(ident, str) and ident else f"{kind} #{index + 1}"


def _describe(data: Any, loc: Loc) -> tuple[str, str]:
    """The innermost listed item on `loc` (e.g. "measure 'x'") and the field path below it."""
    owner, field, node = "", [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        if isinstance(part, int) and i and loc[i - 1] in _KINDS:
            owner, field = _label(_KINDS[loc[i - 1]], node, part), []
        else:
            field.append(part)
    return owner, _dotted(field)


def _dotted(parts: list) -> str:
    """A field path as people write it: milestones[0].progress."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "[key]":  # pydantic's marker for a bad mapping key
            text += f".{part}" if text else str(part)
    return text


def _show(value: Any) -> str:
    """A value as the file wrote it."""
    if isinstance(value, date):
        return value.isoformat()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def _reword(message: str) -> str:
    """Pydantic's message to follow a field name: "Input should be x" -> "should be x"."""
    return re.sub(r"^\w+ should", "should", message.removeprefix("Value error, "))


def _problem(error: dict, data: Any, lines: dict[Loc, int]) -> Problem:
    """A pydantic error as a problem with its line and a message people can act on."""
    loc = error["loc"]
    line = _line(lines, loc)
    if error["type"] in ("extra_forbidden", "missing"):
        owner, field = _describe(data, loc[:-1])
        where = " of ".join(part for part in (field, owner) if part)
        what = "unknown key" if error["type"] == "extra_forbidden" else "missing key"
        return Problem(line, f"{what} {loc[-1]!r}" + (f" in {where}" if where else ""))
    owner, field = _describe(data, loc)
    message = _MESSAGES.get(error["type"]) or _reword(error["msg"])
    if not isinstance(error["input"], dict | list):
        message += f", got {_show(error['input'])}"
    if field:
        message = f"{field} {message}"
    if owner:
        return Problem(line, f"{owner}: {message}" if field else f"{owner} {message}")
    return Problem(line, message if field else f"the tree {message}")


# --- cross-reference rules --------------------------------------------------------------
