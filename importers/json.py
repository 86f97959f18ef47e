"""JSON: a list of records (objects), at the top or under a dotted `path` option."""

import json
from typing import Any

from importers import Importer, ParseError, SourceRow, register
from importers.csv import decode_text


@register
class JsonImporter(Importer):
    """Records numbered from 0 in list order, as the API numbers a JSON body's rows.

    Options: `path`, e.g. "data.items", when the list is not the whole body.
    """

    format = "json"

    def parse(self, body: bytes, options: dict[str, Any] | None = None) -> list[SourceRow]:
        records = follow_path(load_json(body), (options or {}).get("path"))
        if not isinstance(records, list):
            raise ParseError(f"expected a list of records, found {_kind(records)}")
        return [record_row(number, record) for number, record in enumerate(records)]


def load_json(body: bytes) -> Any:
    """The parsed body; ParseError saying where it stops being JSON."""
    text = decode_text(body)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def follow_path(data: Any, path: str | None) -> Any:
    """The value at a dotted path ("result.records"; a number indexes a list)."""
    if not path:
        return data
    for depth, step in enumerate(path.split(".")):
        if isinstance(data, dict) and step in data:
            data = data[step]
        elif isinstance(data, list) and step.isdigit() and int(step) < len(data):
            data = data[int(step)]
        else:
            where = ".".join(path.split(".")[:depth]) or "the top"
            raise ParseError(f"no {step!r} under {where} (path {path!r})")
    return data


def record_row(number: int, record: Any) -> SourceRow:
    """A row from one JSON record; anything but an object is kept with a problem."""
    if not isinstance(record, dict):
        return SourceRow(number, {}, problem=f"a record must be an object, found {_kind(record)}")
    return SourceRow(number, record)


def _kind(value: Any) -> str:
    """A JSON type name for messages."""
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")
