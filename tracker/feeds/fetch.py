"""Fetching a feed's source (CONTRACT §7): the GETs of one run, each whole answer within
the feed's timeout (a watchdog cuts a trickling one), retries with back-off, conditional
GET, size and time budgets, only the redirects `redirect_allowed` accepts, and `file:`
URLs read from inside the tree's folder. Errors name the source by `public_url` only.
"""

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from tracker import __version__
from tracker.errors import TrackerError
from tracker.models import Feed
from tracker.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS = 3  # tries per request when the connection fails or the server answers 5xx
BACKOFF_SECONDS = 0.5  # wait before the second try, doubled before each later one
MAX_RESPONSE_BYTES = 50 * 1024 * 1024  # per answer (per page for paged formats)
# A paged source that never stops saying "more" must not fill memory or hold a run (and,
# on SQLite, the scheduler's one feed thread) for hours: a budget for the whole run.
MAX_RUN_BYTES = 500 * 1024 * 1024
MAX_RUN_SECONDS = 20 * 60  # well inside run.INTERRUPTED_AFTER
CHUNK_BYTES = 16 * 1024
MAX_REDIRECTS = 5  # per request; each one checked by redirect_allowed first
USER_AGENT = f"rebuild-tracker/{__version__} (feed reader)"


class FeedError(TrackerError):
    """A run that fails as a whole; the message becomes the run's error."""


class Unchanged(Exception):
    """The source is as it was at the last successful run (HTTP 304, or the same file)."""


class _Retry(Exception):
    """A failure worth another try: a broken connection or a 5xx answer."""


class Fetcher:
    """The GETs of one run: the feed's timeout on each whole answer, retries with back-off,
    only the redirects redirect_allowed accepts, size limits, and conditional headers on the
    first request. Called as `fetch(url, params)` by importers.

    `file:` URLs are read like HTTP answers, from inside the configured tree's folder only:
    the file's modification time and size stand in for an ETag, so an untouched file gives
    an `unchanged` run.
    """

    def __init__(self, feed: Feed):
        self.feed = feed
        self.requests = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.status: int | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.http = requests.Session()
        self.http.headers["User-Agent"] = USER_AGENT
        self.adapter = _CuttableAdapter()
        for prefix in ("http://", "https://"):
            self.http.mount(prefix, self.adapter)

    def __call__(self, url: str, params: dict[str, Any] | None = None) -> bytes:
        """The body at `url` with query `params`; Unchanged or FeedError otherwise."""
        first = self.requests == 0
        self.requests += 1
        body = self._fetch(url, params, first)
        self.bytes += len(body)
        if self.bytes > MAX_RUN_BYTES:
            raise FeedError(
                f"the source sent over {MAX_RUN_BYTES:,} bytes in {self.requests} answers; "
                "stopped reading"
            )
        if self._run_left() <= 0:
            raise self._over_run_time()
        return body

    def close(self) -> None:
        """Close the run's HTTP connections."""
        self.http.close()

    def _fetch(self, url: str, params: dict[str, Any] | None, first: bool) -> bytes:
        """One answer, with retries inside the run's time; Unchanged or FeedError otherwise."""
        if url.startswith("file:"):
            return self._read_file(Path(url[5:]), first)
        headers = {}
        if first and self.feed.etag:
            headers["If-None-Match"] = self.feed.etag
        if first and self.feed.last_modified:
            headers["If-Modified-Since"] = self.feed.last_modified
        attempt = 1
        while True:
            try:
                return self._get(url, params, headers, first)
            except _Retry as exc:
                if attempt == ATTEMPTS:
                    raise FeedError(f"{exc} (tried {ATTEMPTS} times)") from None
            pause = BACKOFF_SECONDS * 2 ** (attempt - 1)
            if pause >= self._run_left():
                raise self._over_run_time()
            time.sleep(pause)
            attempt += 1

    def _run_left(self) -> float:
        """Seconds left of the run's MAX_RUN_SECONDS."""
        return self.started + MAX_RUN_SECONDS - time.monotonic()

    def _over_run_time(self) -> FeedError:
        return FeedError(
            f"reading the source took over {_duration(MAX_RUN_SECONDS)} "
            f"({self.requests} answers); stopped reading"
        )

    def _get(self, url: str, params: dict | None, headers: dict, first: bool) -> bytes:
        """One try, redirects included, all within the feed's timeout (and the run's time
        left); _Retry for failures worth another."""
        allowed = min(self.feed.timeout, self._run_left())
        if allowed <= 0:
            raise self._over_run_time()
        shown = public_url(url)
        with _Watchdog(self.adapter, allowed) as watchdog:
            try:
                body = self._follow(url, params, headers, first, allowed)
            except requests.RequestException as exc:
                # A connection that never opened is worth another try, however slow.
                if watchdog.fired and not isinstance(exc, requests.ConnectTimeout):
                    raise self._too_slow(shown, allowed) from None
                raise _failure(exc, shown, allowed) from None
            if watchdog.fired:  # a body of no declared length just ends when cut
                raise self._too_slow(shown, allowed)
        return body

    def _too_slow(self, shown: str, allowed: float) -> FeedError:
        """The error of an answer cut off by the watchdog."""
        if allowed < self.feed.timeout:
            return self._over_run_time()
        return FeedError(f"no complete answer from {shown} within {self.feed.timeout:g} s")

    def _follow(
        self, url: str, params: dict | None, headers: dict, first: bool, timeout: float
    ) -> bytes:
        """GET `url`, following at most MAX_REDIRECTS redirects, each one checked first."""
        shown = public_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            with self.http.get(
                url,
                params=params,
                headers=headers,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
            ) as answer:
                self.status = answer.status_code
                target = self.http.get_redirect_target(answer)
                if target is None:
                    return self._answer(answer, shown, first)
            target = urljoin(answer.url, target)
            self._check_redirect(shown, answer.url, target)
            url, params = target, None
        raise FeedError(f"too many redirects from {shown} (over {MAX_REDIRECTS}); not followed")

    def _check_redirect(self, shown: str, from_url: str, to_url: str) -> None:
        """FeedError for a redirect not to follow; the target is the source's, so only the
        operator's log names it."""
        if urlsplit(to_url).scheme not in ("http", "https"):
            problem = "a non-http URL"
        elif not redirect_allowed(from_url, to_url):
            problem = "a private address"
        else:
            return
        log.warning(
            "feed %s: redirect from %s to %s not followed",
            self.feed.id,
            public_url(from_url),
            public_url(to_url),
        )
        raise FeedError(f"{shown} redirected to {problem}; not followed")

    def _answer(self, answer: requests.Response, shown: str, first: bool) -> bytes:
        """The body of an answer that is not a redirect; Unchanged, _Retry or FeedError."""
        if answer.status_code == 304 and first:
            raise Unchanged
        if answer.status_code >= 500:
            raise _Retry(f"{_status_text(answer.status_code)} from {shown}")
        if answer.status_code != 200:
            raise FeedError(f"{_status_text(answer.status_code)} from {shown}")
        body = self._body(answer)
        if first:
            self.etag = self._validator(answer, "ETag", "etag")
            self.last_modified = self._validator(answer, "Last-Modified", "last_modified")
        return body

    def _validator(self, answer: requests.Response, header: str, column: str) -> str | None:
        """A validator to send back next time; None when it is longer than the Feed column
        that would keep it (PostgreSQL would refuse the whole run's transaction)."""
        value = answer.headers.get(header)
        limit = Feed.__table__.c[column].type.length
        if value is not None and len(value) > limit:
            log.warning(
                "feed %s: %s of %d characters is over the %d kept; not kept, so the next run "
                "reads the whole answer again (no conditional GET)",
                self.feed.id,
                header,
                len(value),
                limit,
            )
            return None
        return value

    def _body(self, answer: requests.Response) -> bytes:
        """The whole body within the size limit (the _Watchdog bounds its time)."""
        declared = answer.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise FeedError(_too_large(int(declared)))
        chunks, size = [], 0
        for chunk in answer.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise FeedError(_too_large(size))
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_file(self, path: Path, first: bool) -> bytes:
        """A local file inside the tree's folder, answered like HTTP (200, or Unchanged for
        the same file)."""
        real, folder = path.resolve(), tree_folder()
        if not real.is_relative_to(folder):
            # `tracker check` refuses such a URL; this stops a link or a row changed since.
            log.warning("feed %s: %s is outside %s; not read", self.feed.id, real, folder)
            raise FeedError(f"{path.name} is outside the tree's folder; not read")
        try:
            stat = path.stat()
            etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
            if first and etag == self.feed.etag:
                self.status = 304
                raise Unchanged
            if stat.st_size > MAX_RESPONSE_BYTES:
                raise FeedError(_too_large(stat.st_size))
            body = path.read_bytes()
        except OSError as exc:
            self.status = 404
            raise FeedError(f"cannot read {path.name}: {exc.strerror}") from None
        self.status = 200
        if first:
            self.etag = etag
        return body


def tree_folder() -> Path:
    """The folder `file:` feeds must stay inside: the configured tree's (TRACKER_TREE)."""
    return Settings().tree.resolve().parent


def _failure(exc: requests.RequestException, shown: str, timeout: float) -> Exception:
    """The run's error for a request that failed, or _Retry when another try may do better."""
    if isinstance(exc, requests.ConnectTimeout):
        return _Retry(f"could not connect to {shown} within {timeout:g} s")
    if isinstance(exc, requests.Timeout):
        return FeedError(f"no answer from {shown} within {timeout:g} s")
    if isinstance(exc, requests.ConnectionError):
        # requests reports a read timeout in the middle of a body as a ConnectionError.
        if "timed out" in str(exc):
            return FeedError(f"no answer from {shown} within {timeout:g} s")
        return _Retry(f"could not connect to {shown}")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return _Retry(f"the connection to {shown} broke before the whole answer came")
    return FeedError(f"could not fetch {shown}: {type(exc).__name__}")


def _status_text(code: int) -> str:
    """The status with its standard phrase, "HTTP 404 Not Found": the server's own is its
    content."""
    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def _duration(seconds: float) -> str:
    """20 minutes, or 1.5 s."""
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} s"


class _CuttableAdapter(HTTPAdapter):
    """requests' adapter, remembering the socket of the request under way so that a
    _Watchdog can cut it.

    The socket is taken when its connection connects or is reused, not when it is cut: an
    HTTP/1.0 answer or a `Connection: close` one detaches it from its connection.
    """

    def __init__(self) -> None:
        self.sock: Any = None
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._remember_sockets(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        self._remember_sockets(manager)
        return manager

    def _remember_sockets(self, manager: Any) -> None:
        """Make the manager's pools and connections tell this adapter the socket in use."""
        adapter = self

        def remembering(pool_class: type) -> type:
            if getattr(pool_class, "remembers", False):  # a proxy manager is reused
                return pool_class

            class Connection(pool_class.ConnectionCls):
                def connect(self) -> None:
                    super().connect()
                    adapter.sock = self.sock

            class Pool(pool_class):
                remembers = True
                ConnectionCls = Connection

                def _get_conn(self, timeout: float | None = None) -> Any:
                    connection = super()._get_conn(timeout)
                    adapter.sock = connection.sock  # None until a new one connects
                    return connection

            return Pool

        manager.pool_classes_by_scheme = {
            scheme: remembering(pool) for scheme, pool in manager.pool_classes_by_scheme.items()
        }


class _Watchdog:
    """Cuts the adapter's connection once `seconds` pass, so that no read waits past them.

    A socket timeout bounds each wait for bytes, not the whole answer: a server sending a
    byte a second could otherwise hold a run with a 30 s timeout for as long as it likes
    (and, on SQLite, every feed behind it).
    """

    def __init__(self, adapter: _CuttableAdapter, seconds: float):
        self.adapter = adapter
        self.fired = False
        self._done = threading.Event()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._timer.cancel()

    def _cut(self) -> None:
        """Shut the connection's socket down, which ends a read blocked on it at once."""
        self.fired = True
        while not self._done.is_set():
            sock = self.adapter.sock
            if sock is not None:
                # The plain socket's shutdown: a TLS socket's own would tear down its state
                # under the thread reading it. A TLS-in-TLS transport wraps a `socket`.
                with contextlib.suppress(OSError, TypeError):
                    socket.socket.shutdown(getattr(sock, "socket", sock), socket.SHUT_RDWR)
                return
            self._done.wait(0.05)  # still connecting: its own timeout ends that


def redirect_allowed(
    from_url: str, to_url: str, resolve: Callable[[str], list[str]] | None = None
) -> bool:
    """Whether a run may follow a redirect: never from a public host to a non-public one.

    A feed configured on a loopback or private address (a test server, an intranet) may
    redirect within such addresses; a public server must not point the tracker at the
    host's own services, its network or a cloud metadata address. The source is public
    when any of its addresses is (or none is known); the target is not when any of its
    addresses is not. `resolve(host)` lists a name's addresses (default: host_addresses).
    """
    resolve = resolve or host_addresses
    source = _addresses(urlsplit(from_url).hostname, resolve)
    target = _addresses(urlsplit(to_url).hostname, resolve)
    from_public = not source or any(_is_public(address) for address in source)
    return not from_public or all(_is_public(address) for address in target)


def host_addresses(host: str) -> list[str]:
    """The addresses a host name resolves to; none when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({info[4][0] for info in found})


def _addresses(host: str | None, resolve: Callable[[str], list[str]]) -> list[str]:
    """A URL host's addresses: itself when it is an address, else what `resolve` gives."""
    if not host:
        return []
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return resolve(host)


def _is_public(address: str) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local,
    shared (carrier NAT), reserved or multicast."""
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone: fe80::1%eth0
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def public_url(url: str) -> str:
    """`url` fit for a public error message: no user, password or query (they may hold keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _too_large(size: int) -> str:
    return (
        f"the answer is {size / 1024 / 1024:.1f} MB, over the "
        f"{MAX_RESPONSE_BYTES // 1024 // 1024} MB limit"
    )
