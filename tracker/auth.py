"""Agency API tokens (stored only as hashes), staff accounts, login and roles.

Data functions only: they take a database session and never commit, so a caller's one
transaction holds each change with its audit event. The web side (the signed-in user,
`login_required`) is tracker.web.auth.
"""

import hashlib
import re
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import update
from sqlmodel import Session, select
from werkzeug.security import check_password_hash, generate_password_hash

from tracker.errors import NotFound, TrackerError
from tracker.models import Agency, ApiToken, AuditEvent, User, utcnow

TOKEN_PREFIX = "rt_"
LABEL_MAX = 200  # ApiToken.label
ROLES = ("agency", "official")
PASSWORD_MIN = 12
PASSWORD_MAX = 1024  # hashing cost does not grow with length, but there is no need for more
# scrypt at werkzeug's cost (N=2^15, r=8, p=1), named so that the tests may lower it. The
# cost is kept in each hash, so hashes made at another cost still check.
PASSWORD_METHOD = "scrypt:32768:8:1"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_FAILED_LOGINS = 5
LOCK_TIME = timedelta(minutes=15)
LOGIN_REFUSED = "Wrong email or password, or the account is locked or disabled."
AGENCY_RETIRED = (
    "Your agency, {agency}, is no longer part of the results tree, so its accounts cannot "
    "sign in. Ask an official if it should come back."
)


def hash_token(token: str) -> str:
    """SHA-256 of a token. Tokens carry 256 random bits, so a fast hash is enough to make a
    leaked table useless, and it lets a request's token be found by its hash directly."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(
    session: Session,
    agency_id: str,
    label: str = "",
    *,
    by_user_id: int | None = None,
    channel: str = "cli",
) -> str:
    """Create a token for `agency_id` and return it; it is never shown again."""
    agency = session.get(Agency, agency_id)
    if agency is None or agency.retired_at is not None:
        raise NotFound(f"no agency {agency_id!r}")
    if len(label) > LABEL_MAX:
        raise TrackerError(f"the label is longer than {LABEL_MAX} characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(agency_id=agency_id, token_hash=hash_token(token), label=label)
    session.add(row)
    session.flush()
    _audit(session, "token.issue", f"token/{row.id}", agency_id, by_user_id, channel, new=label)
    return token


def agency_for_token(session: Session, token: str) -> ApiToken:
    """The live token row for `token`, its last use recorded; TrackerError 401 otherwise.

    A token of an agency the tree no longer has is refused like a revoked one, and works
    again if a later tree brings the agency back.
    """
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        raise TrackerError("unknown or revoked token", status=401)
    if agency_retired(session, row.agency_id):
        raise TrackerError(
            f"agency {row.agency_id!r} is no longer in the results tree; its tokens are refused",
            status=401,
        )
    row.last_used_at = utcnow()
    return row


def agency_retired(session: Session, agency_id: str | None) -> bool:
    """Whether `agency_id` names an agency the tree dropped (retired); False for None."""
    if agency_id is None:
        return False
    agency = session.get(Agency, agency_id)
    return agency is None or agency.retired_at is not None


def list_tokens(session: Session, agency_id: str | None = None) -> list[ApiToken]:
    """Every token (of one agency, if given), by agency then age; revoked ones included."""
    query = select(ApiToken).order_by(ApiToken.agency_id, ApiToken.id)
    if agency_id is not None:
        query = query.where(ApiToken.agency_id == agency_id)
    return list(session.exec(query))


def revoke_token(
    session: Session, token_id: int, *, by_user_id: int | None = None, channel: str = "cli"
) -> ApiToken:
    """Revoke a token at once (its next request gets 401); NotFound for an unknown id.

    Revoking a revoked token keeps its first revocation time and records nothing new.
    """
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        _audit(
            session,
            "token.revoke",
            f"token/{row.id}",
            row.agency_id,
            by_user_id,
            channel,
            old=row.label,
        )
        session.flush()
    return row


# --- staff accounts -----------------------------------------------------------------------


def hash_password(password: str) -> str:
    """A salted scrypt hash of `password` (werkzeug's format, method named inside)."""
    return generate_password_hash(password, method=PASSWORD_METHOD)


def create_user(
    session: Session,
    email: str,
    password: str,
    role: str,
    agency_id: str | None = None,
    *,
    by_user_id: int | None = None,
    channel: str = "cli",
) -> User:
    """A new staff account; TrackerError (400, or 409 for a taken email) says what is wrong.

    Agency staff belong to one live agency; officials to none. Emails are kept lower-case
    so that sign-in ignores case.
    """
    email = email.strip().lower()
    problems = _account_problems(session, email, password, role, agency_id)
    if problems:
        raise TrackerError(" ".join(problems))
    if session.exec(select(User.id).where(User.email == email)).first() is not None:
        raise TrackerError(f"there is already an account for {email}", status=409)
    user = User(email=email, password_hash=hash_password(password), role=role, agency_id=agency_id)
    session.add(user)
    session.flush()
    _audit(
        session,
        "user.create",
        f"user/{email}",
        agency_id,
        by_user_id,
        channel,
        new={"role": role, "agency": agency_id},
    )
    return user


def _account_problems(
    session: Session, email: str, password: str, role: str, agency_id: str | None
) -> list[str]:
    """Every reason the account cannot be created, as sentences."""
    problems = []
    if len(email) > 254 or not EMAIL.match(email):
        problems.append(f"{email!r} is not an email address.")
    problems += _password_problems(password)
    if role not in ROLES:
        problems.append(f"The role must be one of {', '.join(ROLES)}.")
    elif role == "official" and agency_id:
        problems.append("Officials do not belong to an agency.")
    elif role == "agency":
        agency = session.get(Agency, agency_id) if agency_id else None
        if agency is None or agency.retired_at is not None:
            problems.append(f"Agency staff need an existing agency; got {agency_id!r}.")
    return problems


def _password_problems(password: str) -> list[str]:
    if len(password) < PASSWORD_MIN:
        return [f"The password must have at least {PASSWORD_MIN} characters."]
    if len(password) > PASSWORD_MAX:
        return [f"The password must have at most {PASSWORD_MAX} characters."]
    return []


def list_users(session: Session) -> list[User]:
    """Every staff account, officials first, then by agency and email."""
    return list(session.exec(select(User).order_by(User.role.desc(), User.agency_id, User.email)))


def disable_user(
    session: Session, user_id: int, *, by_user_id: int | None = None, channel: str = "cli"
) -> User:
    """Disable an account: it can no longer sign in, and its open sessions end."""
    user = _get_user(session, user_id)
    if user_id == by_user_id:
        raise TrackerError("you cannot disable your own account")
    if user.disabled_at is None:
        user.disabled_at = utcnow()
        # Ends its sessions for good: enabling it again must not bring them back.
        user.session_version += 1
        _audit(session, "user.disable", f"user/{user.email}", user.agency_id, by_user_id, channel)
        session.flush()
    return user


def enable_user(
    session: Session, user_id: int, *, by_user_id: int | None = None, channel: str = "cli"
) -> User:
    """Let a disabled account sign in again (with the password it had)."""
    user = _get_user(session, user_id)
    if user.disabled_at is not None:
        user.disabled_at = None
        _audit(session, "user.enable", f"user/{user.email}", user.agency_id, by_user_id, channel)
        session.flush()
    return user


def set_password(
    session: Session,
    user_id: int,
    password: str,
    *,
    by_user_id: int | None = None,
    channel: str = "cli",
) -> User:
    """Give an account a new password, for staff who forgot theirs: the old one stops
    working, a lock-out from failed sign-ins is lifted, and every open session of the
    account ends (someone else may have been using the old password)."""
    user = _get_user(session, user_id)
    problems = _password_problems(password)
    if problems:
        raise TrackerError(" ".join(problems))
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.session_version += 1
    _audit(session, "user.password", f"user/{user.email}", user.agency_id, by_user_id, channel)
    session.flush()
    return user


def find_user(session: Session, email: str) -> User:
    """The account with `email` (any case); NotFound otherwise."""
    user = _user_by_email(session, email)
    if user is None:
        raise NotFound(f"no account for {email.strip().lower()}")
    return user


def _user_by_email(session: Session, email: str) -> User | None:
    """Emails are stored lower-case (create_user), so sign-in and look-ups ignore case."""
    return session.exec(select(User).where(User.email == email.strip().lower())).first()


def _get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no account {user_id}")
    return user


def _audit(
    session: Session,
    action: str,
    entity_id: str,
    agency_id: str | None,
    user_id: int | None,
    channel: str,
    *,
    old=None,
    new=None,
) -> None:
    session.add(
        AuditEvent(
            agency_id=agency_id,
            user_id=user_id,
            channel=channel,
            action=action,
            entity_id=entity_id,
            old=old,
            new=new,
        )
    )


# --- signing in -----------------------------------------------------------------------------


class LoginRefused(TrackerError):
    """A refused sign-in. The message never says whether the account exists."""

    status = 401


@dataclass
class LoginThrottle:
    """Failed sign-ins per client address in a sliding window, kept in this process.

    Failures only: a whole office behind one address signing in each morning must not
    lock itself out. Each process keeps its own count, so with N workers an address gets
    at most N × `limit` tries per window: still far too few to guess passwords.
    """

    limit: int = 20
    window: timedelta = timedelta(minutes=10)
    max_addresses: int = 10_000
    _failures: dict[str, deque[datetime]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allows(self, address: str, now: datetime) -> bool:
        """Whether `address` may try again now."""
        with self._lock:
            return self._prune(address, now) < self.limit

    def record_failure(self, address: str, now: datetime) -> None:
        with self._lock:
            if address not in self._failures and len(self._failures) >= self.max_addresses:
                for key in list(self._failures):
                    self._prune(key, now)
                if len(self._failures) >= self.max_addresses:  # forget the oldest address
                    del self._failures[next(iter(self._failures))]
            self._failures.setdefault(address, deque()).append(now)

    def _prune(self, address: str, now: datetime) -> int:
        """Forget the address's failures that left the window; how many remain."""
        times = self._failures.get(address)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
        return len(times)


def authenticate(
    session: Session,
    email: str,
    password: str,
    *,
    address: str,
    throttle: LoginThrottle,
    now: datetime | None = None,
) -> User:
    """The account for these credentials, its sign-in recorded; LoginRefused otherwise.

    Unknown email, wrong password, locked and disabled accounts get the same message and
    take the same time, so accounts cannot be discovered. MAX_FAILED_LOGINS wrong
    passwords in a row lock the account for LOCK_TIME. Changes are flushed, not
    committed: the caller commits whether or not sign-in succeeded, so failures count.
    """
    now = now or utcnow()
    if not throttle.allows(address, now):
        raise LoginRefused(
            "Too many failed sign-ins from your network. Try again in a few minutes.", status=429
        )
    user = _user_by_email(session, email)
    usable = user is not None and user.disabled_at is None and not _locked(user, now)
    # Hash even when the answer is already known, so timing does not tell accounts apart.
    matches = check_password_hash(user.password_hash if usable else _dummy_hash(), password)
    if not (usable and matches):
        throttle.record_failure(address, now)
        if usable:
            _count_failure(user, now)
            session.flush()
        raise LoginRefused(LOGIN_REFUSED)
    user.failed_logins = 0
    user.locked_until = None
    # Said only to someone who knows the password: it reveals nothing to others.
    if agency_retired(session, user.agency_id):
        session.flush()
        raise LoginRefused(AGENCY_RETIRED.format(agency=user.agency_id), status=403)
    user.last_login_at = now
    session.flush()
    return user


def _locked(user: User, now: datetime) -> bool:
    return user.locked_until is not None and _aware(user.locked_until) > now


def _count_failure(user: User, now: datetime) -> None:
    """One more wrong password; the last one allowed locks the account and resets the count."""
    user.failed_logins += 1
    if user.failed_logins >= MAX_FAILED_LOGINS:
        user.locked_until = now + LOCK_TIME
        user.failed_logins = 0


def _aware(moment: datetime) -> datetime:
    """SQLite gives stored times back without their zone; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def active_user(session: Session, user_id: int) -> User | None:
    """The account with this id if it may still act (exists, not disabled, its agency
    still in the tree), else None, which ends its open sessions at once."""
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None or agency_retired(session, user.agency_id):
        return None
    return user


def live_agencies(session: Session) -> list[Agency]:
    """Agencies that may hold tokens and staff, by name."""
    return list(
        session.exec(select(Agency).where(Agency.retired_at.is_(None)).order_by(Agency.name))
    )


ROLE_NAMES = {"agency": "agency staff", "official": "officials"}


def require_role(user: User | None, role: str | None, *, what: str = "this page") -> User:
    """The user, when signed in with `role` (any role for None); 401 or 403 otherwise."""
    if user is None:
        raise TrackerError(f"sign in to see {what}", status=401)
    if role is not None and user.role != role:
        raise TrackerError(f"{what} is for {ROLE_NAMES[role]}", status=403)
    return user


def end_sessions(session: Session, user_id: int) -> None:
    """End every browser session of an account (the cookie's session version moves on)."""
    session.execute(
        update(User).where(User.id == user_id).values(session_version=User.session_version + 1)
    )


def get_agency(session: Session, agency_id: str | None) -> Agency | None:
    """The agency with this id, or None."""
    return session.get(Agency, agency_id) if agency_id else None
