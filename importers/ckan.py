"""CKAN DataStore: `datastore_search`, read `limit` records at a time from `offset`.

The feed's URL is the action (`…/api/3/action/datastore_search`); the resource is given
by the `resource_id` option or in the URL's query. A `file:` URL is a folder of saved
answers (page-1.json …).
"""

import logging
import re
from typing import Any

from importers import (
    Fetch,
    Importer,
    Page,
    ParseError,
    SourceRow,
    SourceTable,
    local_page,
    read_pages,
    register,
)
from importers.json import load_json, record_row

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})T[\d:.]+$")


@register
class CkanImporter(Importer):
    """Records numbered from 0 across pages.

    Options: `resource_id`, `page_size` (default 1000; a site's rows_max may send fewer,
    and the next page starts after what came).
    """

    format = "ckan"

    def parse(self, body: bytes, options: dict[str, Any] | None = None) -> list[SourceRow]:
        """The rows of one datastore_search answer."""
        return self._page(body, 0).rows

    def read(self, fetch: Fetch, url: str, options: dict[str, Any]) -> SourceTable:
        """Every page of the resource."""
        return read_pages(
            fetch, lambda offset, page: self._request(url, offset, page, options), self._page
        )

    @staticmethod
    def _request(url: str, offset: int, page: int, options: dict) -> tuple[str, dict | None]:
        """The address and query parameters of one page."""
        if url.startswith("file:"):
            return local_page(url, page), None
        params: dict[str, Any] = {
            "offset": offset,
            "limit": int(options.get("page_size", PAGE_SIZE)),
        }
        if options.get("resource_id"):
            params["resource_id"] = options["resource_id"]
        return url, params

    @staticmethod
    def _page(body: bytes, offset: int) -> Page:
        """Rows, columns and whether more follow, from one answer."""
        data = load_json(body)
        if not isinstance(data, dict):
            raise ParseError("expected a CKAN API answer (a JSON object)")
        if data.get("success") is False:
            # CKAN's message is the server's text: the operator's log has it, the public
            # error does not.
            log.warning("CKAN refused the request: %.500s", data.get("error"))
            raise ParseError("CKAN refused the request (its message is in the operator's log)")
        result = data.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("records"), list):
            raise ParseError("the answer has no result.records list")
        records = result["records"]
        fields = [f for f in result.get("fields") or [] if isinstance(f, dict)]
        # The DataStore adds its own row number, _id: not a column of the publisher's.
        columns = frozenset(f.get("id") for f in fields if f.get("id") != "_id") or None
        rows = [record_row(offset + i, record) for i, record in enumerate(records)]
        # timestamp columns come as 2024-03-31T00:00:00; the date is what is meant.
        stamps = {f.get("id") for f in fields if f.get("type") in ("timestamp", "date")}
        for row in rows:
            for name in stamps & row.fields.keys():
                value = row.fields[name]
                match = TIMESTAMP.match(value) if isinstance(value, str) else None
                if match:
                    row.fields[name] = match[1]
        total = result.get("total")
        read = offset + len(records)
        if isinstance(total, int) and not result.get("total_was_estimated"):
            more = read < total
        else:
            # Large tables report an estimated total (or none): read until a page is empty.
            more = bool(records)
        return Page(rows, columns, more)
