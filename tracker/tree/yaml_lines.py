"""YAML read into plain data, with the line of every path in it."""

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from tracker.tree.problems import Loc, Problem, TreeError


def _read_yaml(path: Path) -> tuple[Any, dict[Loc, int], list[Problem]]:
    """The file's data, the line of every path in it, and problems found while reading."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TreeError([Problem(None, f"cannot read the file ({exc})")], path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = Problem(mark.line + 1 if mark else None, f"not valid YAML: {_yaml_reason(exc)}")
        raise TreeError([problem], path) from None
    except yaml.YAMLError as exc:
        raise TreeError([Problem(None, f"not valid YAML: {exc}")], path) from None
    if root is None:
        raise TreeError([Problem(None, "the file is empty")], path)
    reader = _NodeReader()
    return reader.data(root, ()), reader.lines, reader.problems


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """What PyYAML says went wrong, without its position text or "while parsing …"."""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"{context}, {problem}" if context and not context.startswith("while") else problem


class _NodeReader:
    """Turns a composed YAML node graph into plain data, noting the line of every path."""

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self._constructor = SafeConstructor()
        self._open: set[int] = set()  # collections being read, to stop recursive aliases

    def data(self, node: yaml.Node, loc: Loc) -> Any:
        """The plain value of `node`, found at `loc`."""
        line = node.start_mark.line + 1
        self.lines.setdefault(loc, line)
        if id(node) in self._open:
            self.problems.append(Problem(line, "an alias refers to itself"))
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, loc)
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        """A scalar's value; None, with a problem, when its tag does not fit it (!!int abc)."""
        try:
            return self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            reason = _yaml_reason(exc) if isinstance(exc, yaml.YAMLError) else str(exc)
            self.problems.append(Problem(node.start_mark.line + 1, f"unreadable value: {reason}"))
            return None

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict:
        """A mapping; a repeated key is a problem, since YAML would silently keep the last."""
        try:
            self._constructor.flatten_mapping(node)  # applies `<<` merge keys
        except yaml.YAMLError as exc:
            self.problems.append(Problem(node.start_mark.line + 1, _yaml_reason(exc)))
            return {}
        self._open.add(id(node))
        result: dict = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(Problem(line, "a key must be plain text"))
                continue
            key = self._scalar(key_node)
            if key in result:
                self.problems.append(Problem(line, f"duplicate key {key!r}"))
                continue
            self.lines[(*loc, key)] = line
            result[key] = self.data(value_node, (*loc, key))
        self._open.discard(id(node))
        return result

    def _sequence(self, node: yaml.SequenceNode, loc: Loc) -> list:
        """A list."""
        self._open.add(id(node))
        items = [self.data(item, (*loc, index)) for index, item in enumerate(node.value)]
        self._open.discard(id(node))
        return items
