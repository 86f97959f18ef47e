"""CSV: a header line, then one record a line (RFC 4180 quoting; BOM and CRLF accepted)."""

import csv
import io
from typing import Any

from importers import Fetch, Importer, ParseError, SourceRow, SourceTable, register


@register
class CsvImporter(Importer):
    """Rows numbered by the line where each record starts (header = line 1, blank lines
    count); a record with more or fewer fields than the header is kept with a problem."""

    format = "csv"

    def parse(self, body: bytes, options: dict[str, Any] | None = None) -> list[SourceRow]:
        return _source_rows(*read_records(body))

    def read(self, fetch: Fetch, url: str, options: dict[str, Any]) -> SourceTable:
        """The rows, with the header's names as columns (known even when no row follows)."""
        header, records = read_records(fetch(url, None))
        return SourceTable(_source_rows(header, records), frozenset(header))


def read_records(body: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's column names, and each record after it with the line it starts on.

    Blank lines are skipped but counted. ParseError for a body that is not UTF-8 or not
    CSV, has no header, or whose header has an empty or repeated name. Agencies' CSV
    uploads read their records from here too, without building a SourceRow each.
    """
    reader = csv.reader(io.StringIO(decode_text(body), newline=""), strict=True)
    header: list[str] | None = None
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or record == [""]:
                continue  # a blank line still counts in the line numbers
            if header is None:
                header = [name.strip() for name in record]
                _check_header(header)
            else:
                records.append((line, record))
    except csv.Error as exc:
        raise ParseError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise ParseError("the file is empty: expected a header line")
    return header, records


def record_problem(header: list[str], record: list[str]) -> str | None:
    """What is wrong with a record's shape, if anything."""
    if len(record) == len(header):
        return None
    return f"has {len(record)} fields where the header has {len(header)}"


def _source_rows(header: list[str], records: list[tuple[int, list[str]]]) -> list[SourceRow]:
    return [
        SourceRow(
            number=line,
            fields=dict(zip(header, record, strict=False)),
            problem=record_problem(header, record),
        )
        for line, record in records
    ]


def decode_text(body: bytes) -> str:
    """UTF-8 text, with or without a byte-order mark."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text (byte {exc.start})") from None


def _check_header(header: list[str]) -> None:
    missing = [i + 1 for i, name in enumerate(header) if not name]
    if missing:
        raise ParseError(f"line 1: header column {missing[0]} has no name")
    # Positions, not the name: a file that is not CSV would have its text shown.
    first: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in first:
            raise ParseError(
                f"line 1: the header names one column twice (columns {first[name]} and {position})"
            )
        first[name] = position
