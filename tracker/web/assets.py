"""Static files and compression.

Static URLs carry a hash of the file's content (`?v=…`), so browsers may keep them for a
year: a changed file is a new address. Responses are compressed (Brotli or gzip, as the
browser asks) by Flask-Compress; behind a reverse proxy that compresses, it can stay on:
a response already compressed is left alone.
"""

import functools
import hashlib
from pathlib import Path

from flask import Flask, Response, request
from flask_compress import Compress

YEAR = 365 * 24 * 3600
COMPRESSED_TYPES = [
    "text/html",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/geo+json",
    "image/svg+xml",
    "text/csv",
]


def init_app(app: Flask) -> None:
    app.config.update(
        COMPRESS_ALGORITHM=["br", "gzip"],
        COMPRESS_MIMETYPES=COMPRESSED_TYPES,
        COMPRESS_BR_LEVEL=5,
        COMPRESS_LEVEL=6,
    )
    Compress(app)
    # After-request handlers run last-registered first: this one hands Flask-Compress a
    # static file already read and closed (it would replace the open file's body without
    # closing it).
    app.after_request(_read_static_file)
    static = Path(app.static_folder)

    @app.url_defaults
    def _hashed_static(endpoint: str, values: dict) -> None:
        if endpoint == "static" and "filename" in values:
            path = static / values["filename"]
            if path.is_file():
                values["v"] = _content_hash(path, path.stat().st_mtime_ns)

    def max_age(filename: str | None) -> int | None:
        # Only a hashed address is kept long; a bare one is revalidated.
        return YEAR if request.args.get("v") else None

    app.get_send_file_max_age = max_age


def _read_static_file(response: Response) -> Response:
    if request.endpoint == "static" and response.direct_passthrough and response.status_code == 200:
        response.direct_passthrough = False
        data = response.get_data()
        response.close()
        response.set_data(data)
    return response


@functools.lru_cache(maxsize=256)
def _content_hash(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
