"""Feed formats: each module turns a published file's bytes into plain rows.

A format is a class with a `format` name and a `parse` method, registered with
`@register`. Every module in this package is imported by `load_importers()`, so a site
adds a format by dropping a module here that registers itself exactly as the built-in
ones do. Importers never touch the database.
"""

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

from tracker.errors import TrackerError


class ParseError(TrackerError):
    """A body that cannot be read as a whole (not the format, missing columns …)."""

    status = 422


@dataclass
class SourceRow:
    """One record of a source: where it starts (a line or record number), its fields, and
    what is wrong with its shape, if anything (too many fields …)."""

    number: int
    fields: dict[str, Any]
    geometry: dict[str, Any] | None = None
    problem: str | None = None


class Importer:
    """Base class: a format name and a parser from bytes to rows."""

    format: ClassVar[str]

    def parse(self, body: bytes, options: dict[str, Any] | None = None) -> list[SourceRow]:
        raise NotImplementedError


REGISTRY: dict[str, type[Importer]] = {}


def register(cls: type[Importer]) -> type[Importer]:
    """Class decorator: make `cls` the importer for its `format`."""
    REGISTRY[cls.format] = cls
    return cls


def load_importers() -> dict[str, type[Importer]]:
    """Import every module of this package (built-in and site formats) and return them."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return REGISTRY


def get_importer(format_name: str) -> Importer:
    """An importer for `format_name`; ParseError naming the known formats otherwise."""
    formats = load_importers()
    if format_name not in formats:
        raise ParseError(f"unknown format {format_name!r}; known: {', '.join(sorted(formats))}")
    return formats[format_name]()
