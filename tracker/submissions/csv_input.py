"""CSV request bodies read into rows shaped like the JSON API's, with their line numbers."""

from dataclasses import dataclass, field
from typing import Any

from tracker.geometry import lon_lat, parse_geometry
from tracker.submissions.batches import RowError, SubmissionRejected
from tracker.submissions.works import WORK_ROW_FIELDS

OBSERVATION_CSV_REQUIRED = ("measure", "place", "date", "value")
WORK_CSV_COLUMNS = {*WORK_ROW_FIELDS, "lon", "lat"}


@dataclass
class InputRows:
    """Rows read from a request body, shaped like the JSON API's, with their numbers (CSV:
    the line each record starts on) and the problems found while reading them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def read_observations_csv(body: bytes) -> InputRows:
    """Observations from `measure,place,date,value[,dim.NAME…][,note]`.

    An empty value cell retracts (like JSON null); an empty dim cell leaves that
    dimension out. A file-level problem (not CSV, missing or unknown columns) raises
    SubmissionRejected with `row: null`.
    """
    header, records = _csv_records(
        body, required=OBSERVATION_CSV_REQUIRED, allowed={"note"}, prefix="dim."
    )
    # Cells by position: a dict per record of a large upload would cost more than the rest.
    base = [(name, header.index(name)) for name in OBSERVATION_CSV_REQUIRED]
    dims = [(name[4:], i) for i, name in enumerate(header) if name.startswith("dim.")]
    note = header.index("note") if "note" in header else None
    result = InputRows()
    for line, record in _well_formed(header, records, result):
        row: dict[str, Any] = {name: record[i] for name, i in base}
        if dims:
            cell = {name: record[i] for name, i in dims if record[i] != ""}
            if cell:
                row["dims"] = cell
        if note is not None and record[note]:
            row["note"] = record[note]
        _add_row(result, line, row)
    return result


def read_works_csv(body: bytes) -> InputRows:
    """Works from a CSV with `id,title,status` and a `geometry` (WKT or GeoJSON), `lon`+`lat` or
    `street` column, plus the optional date, measure and quantity columns."""
    from shapely.geometry import mapping

    header, records = _csv_records(
        body, required=("id", "title", "status"), allowed=WORK_CSV_COLUMNS
    )
    result = InputRows()
    for line, record in _well_formed(header, records, result):
        fields = dict(zip(header, record, strict=True))
        row = {k: v for k, v in fields.items() if v != "" and k not in ("lon", "lat")}
        lon, lat = fields.get("lon", ""), fields.get("lat", "")
        geometry, problem, name = None, None, "geometry"
        if row.get("geometry"):
            geometry, problem = parse_geometry(row["geometry"])
        elif lon or lat:
            geometry, problem = lon_lat(lon, lat)
            name = "lon"
        if problem:
            result.errors.append(RowError(line, name, problem))
            continue
        if geometry is not None:
            row["geometry"] = mapping(geometry)
        _add_row(result, line, row)
    return result


def _csv_records(body: bytes, *, required, allowed, prefix: str | None = None):
    """The CSV's records after checking its header; file-level problems refuse it whole."""
    from importers import ParseError
    from importers.csv import read_records

    try:
        header, records = read_records(body)
    except ParseError as exc:
        raise SubmissionRejected([RowError(None, None, exc.message)]) from None
    problems = [
        RowError(None, name, f"missing column {name!r}") for name in required if name not in header
    ]
    known = set(required) | set(allowed)
    problems += [
        RowError(None, name, f"unknown column {name!r}")
        for name in header
        if name not in known
        and not (prefix and name.startswith(prefix) and len(name) > len(prefix))
    ]
    if problems:
        raise SubmissionRejected(problems)
    return header, records


def _well_formed(header: list[str], records, result: InputRows):
    """(line, record) of the records with as many fields as the header; the others
    become row errors."""
    from importers.csv import record_problem

    for line, record in records:
        problem = record_problem(header, record)
        if problem:
            result.errors.append(RowError(line, None, f"the record {problem}"))
        else:
            yield line, record


def _add_row(result: InputRows, number: int, row: dict[str, Any]) -> None:
    result.rows.append(row)
    result.row_numbers.append(number)
