"""Agency API tokens (stored only as hashes), staff login and roles."""

import hashlib
import secrets

from sqlmodel import Session, select

from tracker.errors import NotFound, TrackerError
from tracker.models import Agency, ApiToken, utcnow

TOKEN_PREFIX = "rt_"


def hash_token(token: str) -> str:
    """SHA-256 of a token. Tokens carry 256 random bits, so a fast hash is enough to make a
    leaked table useless, and it lets a request's token be found by its hash directly."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, agency_id: str, label: str = "") -> str:
    """Create a token for `agency_id` and return it; it is never shown again."""
    agency = session.get(Agency, agency_id)
    if agency is None or agency.retired_at is not None:
        raise NotFound(f"no agency {agency_id!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(agency_id=agency_id, token_hash=hash_token(token), label=label))
    session.flush()
    return token


def agency_for_token(session: Session, token: str) -> ApiToken:
    """The live token row for `token`, its last use recorded; TrackerError 401 otherwise."""
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        raise TrackerError("unknown or revoked token", status=401)
    row.last_used_at = utcnow()
    return row
