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
        text = decode_text(body)
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header: list[str] | None = None
        rows: list[SourceRow] = []
        start = 1
        try:
            for record in reader:
                line, start = start, reader.line_num + 1
                if not record or record == [""]:
                    continue  # a blank line still counts in the line numbers
                if header is None:
                    header = [name.strip() for name in record]
                    _check_header(header)
                    continue
                fields = dict(zip(header, record, strict=False))
                row = SourceRow(number=line, fields=fields)
                if len(record) != len(header):
                    row.problem = f"has {len(record)} fields where the header has {len(header)}"
                rows.append(row)
        except csv.Error as exc:
            raise ParseError(f"line {reader.line_num}: not valid CSV ({exc})") from None
        if header is None:
            raise ParseError("the file is empty: expected a header line")
        return rows

    def read(self, fetch: Fetch, url: str, options: dict[str, Any]) -> SourceTable:
        """The rows, with the header's names as columns (known even when no row follows)."""
        body = fetch(url, None)
        return SourceTable(self.parse(body, options), frozenset(self.header(body)))

    @staticmethod
    def header(body: bytes) -> list[str]:
        """The header's column names (for checking required columns before the rows)."""
        for record in csv.reader(io.StringIO(decode_text(body), newline="")):
            if record and record != [""]:
                return [name.strip() for name in record]
        raise ParseError("the file is empty: expected a header line")


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
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ParseError(f"line 1: header names column {name!r} twice")
        seen.add(name)
