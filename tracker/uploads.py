"""CSV uploads waiting for their Confirm, kept in the instance folder under a random id.

The preview and the confirm must read the very same bytes, and a browser session (a
signed cookie of a few kilobytes) cannot hold a 10 MB file, so the file waits on disk:
`<id>.csv` with `<id>.json` naming its owner. Only the user who uploaded it can read it;
a confirmed or discarded upload is deleted, and anything older than MAX_AGE is swept
away at the next upload. On several hosts behind one address the instance folder must be
shared (or uploads kept in the database instead).
"""

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from tracker.errors import NotFound

KINDS = ("observations", "works")
MAX_AGE_SECONDS = 3600
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class PendingUpload:
    id: str
    kind: str  # observations | works
    filename: str
    agency_id: str
    user_id: int
    body: bytes


def save_upload(
    folder: Path, *, kind: str, filename: str, agency_id: str, user_id: int, body: bytes
) -> str:
    """Keep an uploaded file until it is confirmed or discarded; returns its id."""
    if kind not in KINDS:
        raise ValueError(f"unknown upload kind {kind!r}")
    folder.mkdir(parents=True, exist_ok=True)
    _sweep(folder)
    upload_id = secrets.token_hex(16)
    (folder / f"{upload_id}.csv").write_bytes(body)
    meta = {"kind": kind, "filename": filename, "agency_id": agency_id, "user_id": user_id}
    (folder / f"{upload_id}.json").write_text(json.dumps(meta), encoding="utf-8")
    return upload_id


def load_upload(folder: Path, upload_id: str, *, user_id: int) -> PendingUpload:
    """The upload `upload_id` of `user_id`; NotFound if it is gone or someone else's."""
    gone = NotFound("This upload is no longer here (it was confirmed, discarded or expired).")
    if not UPLOAD_ID.match(upload_id):
        raise gone
    try:
        meta = json.loads((folder / f"{upload_id}.json").read_text(encoding="utf-8"))
        body = (folder / f"{upload_id}.csv").read_bytes()
    except FileNotFoundError:
        raise gone from None
    if meta["user_id"] != user_id:
        raise gone
    return PendingUpload(id=upload_id, body=body, **meta)


def discard_upload(folder: Path, upload_id: str) -> None:
    """Delete an upload's files (a no-op when they are already gone)."""
    if UPLOAD_ID.match(upload_id):
        for suffix in (".json", ".csv"):
            (folder / f"{upload_id}{suffix}").unlink(missing_ok=True)


def _sweep(folder: Path) -> None:
    """Delete uploads older than MAX_AGE_SECONDS, which nobody will confirm any more."""
    cutoff = time.time() - MAX_AGE_SECONDS
    for path in folder.glob("*.json"):
        try:
            old = path.stat().st_mtime < cutoff
        except FileNotFoundError:  # another worker swept it just now
            continue
        if old:
            discard_upload(folder, path.stem)
