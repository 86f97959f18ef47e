"""Per-client rate limits whose counters live in the database, so they hold across every
web worker and host.

Each hit adds one to the row (bucket, client, window_start) of a fixed window, in one
atomic upsert (INSERT … ON CONFLICT DO UPDATE … RETURNING count, on SQLite and
PostgreSQL alike); the hit is refused once the count passes the limit. The client is
stored as an HMAC-SHA256 of its address with the app's secret key, never the address.
The count is part of the caller's transaction: a request that is rolled back is not
counted. Old windows are pruned on a small fraction of hits, or by `prune`.
"""

import hashlib
import hmac
import ipaddress
import math
import random
from datetime import UTC, datetime, timedelta

from flask import current_app, request
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from tracker.errors import TrackerError
from tracker.models import RateCounter, utcnow

KEEP = timedelta(days=1)  # windows that started longer ago than this are pruned
PRUNE_CHANCE = 0.01  # the share of hits that also prune


def client_key(address: str, *, secret: str | None = None) -> str:
    """The client as stored: HMAC-SHA256 of `address` with the app's secret key, in hex."""
    key = secret if secret is not None else current_app.config["SECRET_KEY"]
    return hmac.new(key.encode(), address.encode(), hashlib.sha256).hexdigest()


IPV6_PREFIX = 64  # one home or phone gets a whole /64: counted as one client


def request_client() -> str:
    """Who the current request counts as: its IPv4 address, or its IPv6 /64 network (one
    subscriber holds a whole /64 and could take a new address per request). The address is
    the peer's, or the client's as the trusted proxies give it (TRACKER_PROXY_HOPS)."""
    return client_of(request.remote_addr or "unknown")


def client_of(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))


def window_start(now: datetime, per_seconds: int) -> datetime:
    """The start of the fixed window of `per_seconds` that holds `now`."""
    seconds = int(now.timestamp()) // per_seconds * per_seconds
    return datetime.fromtimestamp(seconds, UTC)


def hit(session: Session, *, bucket: str, client: str, per_seconds: int, now: datetime) -> int:
    """Count one hit of `client` (stored as given) in its window; returns the new count."""
    start = window_start(now, per_seconds)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(RateCounter).values(
        bucket=bucket, client=client, window_start=start, count=1
    )
    statement = statement.on_conflict_do_update(
        index_elements=["bucket", "client", "window_start"],
        set_={"count": RateCounter.count + 1},
    ).returning(RateCounter.count)
    return session.execute(statement).scalar_one()


def enforce(
    session: Session,
    *,
    bucket: str,
    client: str,
    limit: int,
    per_seconds: int,
    now: datetime | None = None,
    what: str = "requests",
) -> None:
    """Count a hit of `client` (an address; stored as its client_key) in `bucket`; refuse
    it with a 429 and a retry-after once more than `limit` fell in this window."""
    if not 0 < per_seconds <= KEEP.total_seconds():
        raise ValueError("per_seconds must be between 1 and a day")
    now = now or utcnow()
    count = hit(session, bucket=bucket, client=client_key(client), per_seconds=per_seconds, now=now)
    if random.random() < PRUNE_CHANCE:
        prune(session, now=now)
    if count <= limit:
        return
    end = window_start(now, per_seconds) + timedelta(seconds=per_seconds)
    retry_after = max(1, math.ceil((end - now).total_seconds()))
    minutes = math.ceil(retry_after / 60)
    raise TrackerError(
        f"Too many {what} from your network. "
        f"Try again in {minutes} minute{'' if minutes == 1 else 's'}.",
        status=429,
        retry_after=retry_after,
    )


def prune(session: Session, *, now: datetime | None = None) -> int:
    """Delete windows that started more than a day ago (none is still open); returns how many."""
    cutoff = (now or utcnow()) - KEEP
    result = session.execute(delete(RateCounter).where(RateCounter.window_start < cutoff))
    return result.rowcount
