"""Feed formats: each module turns a published file's bytes into plain rows.

A format is a class with a `format` name and a `parse` method, registered with
`@register`. Every module in this package is imported by `load_importers()`, and so is
every module named in the TRACKER_IMPORTERS setting: a site adds a format in a module of
its own, outside this package, that registers itself exactly as the built-in ones do.
Importers never touch the database.

`Importer.read` is what a feed run calls: it gets a `fetch(url, params)` callable from
tracker.feeds, so timeouts, retries, conditional GET and size limits live in one place,
and a format that pages (ArcGIS, CKAN) asks for as many pages as it needs.
"""

import importlib
import pkgutil
from collections.abc import Callable, Iterable
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


# GET `url` with extra query `params`; the whole body, or an exception that ends the run.
Fetch = Callable[[str, dict[str, Any] | None], bytes]


@dataclass
class SourceTable:
    """What a source holds: its rows and the column names it declares.

    `columns` is None when the source cannot say (a JSON list with no records), so a
    feed run does not call a column "missing" from an empty source.
    """

    rows: list[SourceRow]
    columns: frozenset[str] | None


class Importer:
    """Base class: a format name and a parser from bytes to rows."""

    format: ClassVar[str]
    # Whether rows carry their geometry apart from the fields (GeoJSON, ArcGIS).
    geometry: ClassVar[bool] = False

    def parse(self, body: bytes, options: dict[str, Any] | None = None) -> list[SourceRow]:
        raise NotImplementedError

    def read(self, fetch: Fetch, url: str, options: dict[str, Any]) -> SourceTable:
        """Fetch and parse a whole source; formats that page override this."""
        rows = self.parse(fetch(url, None), options)
        return SourceTable(rows, columns_of(rows))


def columns_of(rows: list[SourceRow]) -> frozenset[str] | None:
    """Every field name some row has; None when there are no rows to tell."""
    if not rows:
        return None
    return frozenset(name for row in rows for name in row.fields)


@dataclass
class Page:
    """One answer of a paged source: its rows, the columns it declares, whether more follow."""

    rows: list[SourceRow]
    columns: frozenset[str] | None
    more: bool


# A server that keeps saying "more" (or repeats a page) must not keep a run going forever.
MAX_PAGES = 10_000


def read_pages(
    fetch: Fetch,
    request: Callable[[int, int], tuple[str, dict[str, Any] | None]],
    parse_page: Callable[[bytes, int], Page],
) -> SourceTable:
    """Read pages until one says no more follow.

    `request(offset, page)` gives the URL and parameters of a page (offset: records read
    so far; page: 1-based); `parse_page(body, offset)` numbers its rows from `offset`, so
    rows are numbered from 0 across the whole source.
    """
    rows: list[SourceRow] = []
    columns: frozenset[str] | None = None
    for page in range(1, MAX_PAGES + 1):
        answer = parse_page(fetch(*request(len(rows), page)), len(rows))
        rows.extend(answer.rows)
        if columns is None:
            columns = answer.columns
        if not answer.more:
            return SourceTable(rows, columns if columns is not None else columns_of(rows))
        if not answer.rows:
            raise ParseError(f"page {page} says more records follow but holds none")
    raise ParseError(f"still more records after {MAX_PAGES} pages; stopped reading")


def local_page(url: str, page: int) -> str:
    """The file holding page `page` (1-based) of a paged source copied to a folder.

    A `file:` URL cannot take query parameters, so a local copy of a paged service is a
    folder of its answers: page-1.json, page-2.json … read in order.
    """
    return f"{url.rstrip('/')}/page-{page}.json"


REGISTRY: dict[str, type[Importer]] = {}


def register(cls: type[Importer]) -> type[Importer]:
    """Class decorator: make `cls` the importer for its `format`."""
    REGISTRY[cls.format] = cls
    return cls


def load_importers(site_modules: Iterable[str] = ()) -> dict[str, type[Importer]]:
    """Import every module of this package and the site's own (TRACKER_IMPORTERS), and
    return every format registered so far."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for name in site_modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise TrackerError(
                f"TRACKER_IMPORTERS names {name!r}, which cannot be imported ({exc})"
            ) from None
    return REGISTRY


def known_formats() -> list[str]:
    """The names of every registered format, built-in and the site's own, sorted."""
    return sorted(load_importers())


def get_importer(format_name: str) -> Importer:
    """An importer for `format_name`; ParseError naming the known formats otherwise."""
    formats = load_importers()
    if format_name not in formats:
        raise ParseError(f"unknown format {format_name!r}; known: {', '.join(sorted(formats))}")
    return formats[format_name]()
