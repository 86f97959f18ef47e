"""The `tracker` command (CONTRACT §5)."""

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click
from sqlalchemy import Engine
from sqlmodel import Session

from tracker.db import make_engine, migrate, session_scope
from tracker.errors import TrackerError
from tracker.settings import Settings


def initialise(
    settings: Settings, report: Callable[[str], None] | None = None
) -> tuple[Engine, "Tree"]:  # noqa: F821
    """Create or migrate the schema, then load the tree's places and nodes (idempotent).

    `report` gets a line for each thing the new tree retired, moved or left unshown; a
    change that would drop data silently is refused whole (TreeChangeRefused).
    """
    from tracker.places import read_streets
    from tracker.tree import load_tree, store_tree

    tree = load_tree(settings.tree)
    streets = read_streets(tree.places.streets, tree.boundaries) if tree.places.streets else None
    engine = make_engine(settings.resolved_database_url())
    try:
        migrate(engine)
        with session_scope(engine) as session:
            changes = store_tree(session, tree, streets=streets)
    except BaseException:
        engine.dispose()
        raise
    for line in changes.lines() if report else ():
        report(line)
    return engine, tree


@click.group()
@click.version_option(package_name="rebuild-tracker")
def main() -> None:
    """Rebuild tracker: results, measures and works for Christchurch / Ōtautahi, by place."""
    from importers import load_importers

    # The site's own feed formats, before any command reads the tree or runs a feed.
    with _refusals():
        load_importers(Settings().importer_modules())


@main.command()
def init() -> None:
    """Create or migrate the database and load TRACKER_TREE and its places."""
    settings = Settings()
    started = time.perf_counter()
    with _refusals():
        engine, tree = initialise(settings, report=click.echo)
    engine.dispose()
    click.echo(
        f"Database ready; tree {tree.path} loaded: {len(tree.boundaries)} neighbourhoods, "
        f"{len(tree.measures())} measures ({time.perf_counter() - started:.1f} s)."
    )


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def check(path: Path) -> None:
    """Validate a results tree file; exit 1 listing every problem with its line."""
    from tracker.tree import TreeError, load_tree

    try:
        tree = load_tree(path)
    except TreeError as exc:
        click.echo(exc.message, err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {path}.", err=True)
        sys.exit(1)
    click.echo(
        f"{path}: ok ({len(tree.agencies)} agencies, {len(tree.measures())} measures, "
        f"{len(tree.boundaries)} neighbourhoods)."
    )


@main.command()
def demo() -> None:
    """Init plus the bundled Christchurch demo data (synthetic, labelled demo)."""
    from tracker.demo import load_demo
    from tracker.places import read_streets

    settings = Settings()
    started = time.perf_counter()
    with _refusals():
        engine, tree = initialise(settings, report=click.echo)
        streets = read_streets(tree.places.streets, tree.boundaries) if tree.places.streets else []
        with session_scope(engine) as session:
            counts = load_demo(session, tree, streets)
    engine.dispose()
    click.echo(
        f"Demo city ready: {counts['observations']} observation rows and {counts['works']} "
        f"works submitted ({time.perf_counter() - started:.1f} s)."
    )


@main.command("import")
@click.argument("feed_id", metavar="[FEED]", required=False)
def import_feeds(feed_id: str | None) -> None:
    """Run one feed (FEED) or every feed now; exit 1 when a run failed."""
    from tracker.feeds import run_feeds

    engine = make_engine(Settings().resolved_database_url())
    try:
        with _refusals():
            runs = run_feeds(engine, [feed_id] if feed_id else None)
    finally:
        engine.dispose()
    for run in runs:
        line = f"{run.feed_id}: {run.status}, {run.rows} rows stored, {run.rejected} rejected"
        click.echo(line + (f": {run.error}" if run.error else ""))
    if not runs:
        click.echo("The tree has no feeds.")
    if any(run.status == "failed" for run in runs):
        sys.exit(1)


@main.command("backup")
@click.argument("path", type=click.Path(path_type=Path))
def backup_database(path: Path) -> None:
    """Back up the database to the new file PATH while the site runs (SQLite: a checked
    online copy; PostgreSQL: pg_dump --format=custom)."""
    from tracker.backup import backup

    with _refusals():
        summary = backup(Settings().resolved_database_url(), path)
    click.echo(summary.line())


@main.command("restore")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already holds data.")
def restore_database(path: Path, force: bool) -> None:
    """Replace the database with the backup at PATH and migrate it; a database that holds
    data is replaced only with --force."""
    from tracker.backup import restore

    with _refusals():
        summary = restore(Settings().resolved_database_url(), path, force=force)
    click.echo(summary.line())


@main.command()
@click.option(
    "--lease-seconds",
    default=60,
    show_default=True,
    type=click.IntRange(min=2),
    help="How long the lease outlives a silent scheduler before another takes over.",
)
def scheduler(lease_seconds: int) -> None:
    """Run feeds on their schedules until SIGTERM or Ctrl-C (one scheduler at a time)."""
    from tracker.observability import configure_logging
    from tracker.scheduler import FeedScheduler, Timing

    configure_logging(Settings())  # TRACKER_LOG_FORMAT text or json, as the web workers
    # APScheduler logs every heartbeat at INFO; its warnings (missed runs) still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    engine = make_engine(Settings().resolved_database_url())
    try:
        FeedScheduler(engine, timing=Timing(lease=lease_seconds)).run_until_signalled()
    finally:
        engine.dispose()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the web app with gunicorn (production: `gunicorn -c deploy/gunicorn.conf.py
    wsgi:app`, docs/operations.md)."""
    import tempfile

    from gunicorn.app.base import BaseApplication

    # Every worker's metrics in one folder, summed by /metrics (tracker/metrics.py); set
    # before the app (and prometheus-client) is imported.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tracker-metrics-"))
    from tracker import create_worker_app

    app = create_worker_app()  # made before the workers fork, which inherit it frozen

    def child_exit(_server, worker) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("child_exit", child_exit)
            # The app logs one access line per request (tracker.access).

        def load(self):
            return app

    click.echo(f"Serving on http://{host}:{port}")
    Server().run()


@main.group()
def agency() -> None:
    """Agency credentials."""


@agency.command("token")
@click.argument("agency_id")
@click.option("--label", default="", help="What the token is for, shown in listings.")
def agency_token(agency_id: str, label: str) -> None:
    """Issue an API token for AGENCY_ID; the token alone is printed on the last line."""
    from tracker.auth import issue_token

    engine = make_engine(Settings().resolved_database_url())
    try:
        with _refusals(), session_scope(engine) as session:
            token = issue_token(session, agency_id, label)
    finally:
        engine.dispose()
    click.echo(f"Token for {agency_id} (shown once; only its hash is stored):")
    click.echo(token)


@agency.command("tokens")
@click.argument("agency_id")
def agency_tokens(agency_id: str) -> None:
    """List AGENCY_ID's API tokens: id, label, created, last used, revoked."""
    from tracker.auth import list_tokens

    with _database() as session:
        tokens = list_tokens(session, agency_id)
    if not tokens:
        click.echo(f"No tokens for {agency_id}.")
        return
    _echo_credentials(tokens, "LABEL", lambda t: t.label)


def _echo_credentials(rows, last: str, label: Callable) -> None:
    """Agency tokens or Open311 keys as a table: id, created, last used, revoked, label."""
    click.echo(f"{'ID':>5}  {'CREATED':16}  {'LAST USED':16}  {'REVOKED':16}  {last}")
    for row in rows:
        times = "  ".join(
            f"{_minute(moment) or '-':16}"
            for moment in (row.created_at, row.last_used_at, row.revoked_at)
        )
        click.echo(f"{row.id:>5}  {times}  {label(row)}")


@agency.command("revoke")
@click.argument("token_id", type=int)
def agency_revoke(token_id: int) -> None:
    """Revoke API token TOKEN_ID (see `tracker agency tokens`); it is refused at once."""
    from tracker.auth import revoke_token

    with _database() as session:
        token = revoke_token(session, token_id)
    click.echo(f"Token {token.id} of {token.agency_id} revoked at {_minute(token.revoked_at)} UTC.")


@main.group()
def open311() -> None:
    """Open311 GeoReport v2 api_keys for client applications (they POST reports)."""


@open311.command("key")
@click.argument("name")
def open311_key(name: str) -> None:
    """Issue an api_key for the client application NAME; the key alone is printed on the
    last line."""
    from tracker.open311 import issue_key

    with _database() as session:
        key = issue_key(session, name)
    click.echo(f"Open311 api_key for {name.strip()} (shown once; only its hash is stored):")
    click.echo(key)


@open311.command("keys")
def open311_keys() -> None:
    """List the Open311 api_keys: id, created, last used, revoked, name (never the key)."""
    from tracker.open311 import list_keys

    with _database() as session:
        keys = list_keys(session)
    if not keys:
        click.echo("No Open311 api_keys.")
        return
    _echo_credentials(keys, "NAME", lambda k: k.name)


@open311.command("revoke")
@click.argument("key_id", type=int)
def open311_revoke(key_id: int) -> None:
    """Revoke Open311 api_key KEY_ID (see `tracker open311 keys`); its POSTs get 403 at once."""
    from tracker.open311 import revoke_key

    with _database() as session:
        key = revoke_key(session, key_id)
    click.echo(f"Open311 api_key {key.id} ({key.name}) revoked at {_minute(key.revoked_at)} UTC.")


@main.group()
def mail() -> None:
    """The outbox: every mail the tracker sends waits there until sent."""


@mail.command("send")
def mail_send() -> None:
    """Send the mail that is due now (the scheduler does this every minute)."""
    from tracker.mail import deliver, outbox_counts

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        with _refusals():
            sent = deliver(engine, settings)
        with Session(engine) as session:
            counts = outbox_counts(session)
    finally:
        engine.dispose()
    click.echo(f"{sent} sent; {counts['queued']} queued, {counts['failed']} failed.")
    if not settings.smtp_host:
        click.echo("TRACKER_SMTP_HOST is not set: mail stays queued.")


@main.group()
def alerts() -> None:
    """Email alerts for a place or street."""


@alerts.command("digest")
def alerts_digest() -> None:
    """Queue the digests that are due and drop expired unconfirmed alerts."""
    from tracker.alerts import run_digests

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        with _refusals():
            result = run_digests(engine, settings)
    finally:
        engine.dispose()
    click.echo(
        f"{result.queued} digests queued, {result.quiet} with nothing new, "
        f"{result.expired} unconfirmed alerts expired."
    )


@main.group()
def user() -> None:
    """Staff accounts: agency staff and officials."""


@user.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["agency", "official"]), required=True)
@click.option("--agency", "agency_id", help="The agency of agency staff.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_add(email: str, role: str, agency_id: str | None, password_stdin: bool) -> None:
    """Create a staff account; asks for the password twice unless --password-stdin."""
    from tracker.auth import create_user

    password = _read_password(password_stdin)
    with _database() as session:
        account = create_user(session, email, password, role, agency_id)
    where = f" of {account.agency_id}" if account.agency_id else ""
    click.echo(f"Created {account.role} account {account.email}{where} (id {account.id}).")


@user.command("password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_password(email: str, password_stdin: bool) -> None:
    """Set a new password for EMAIL (its open sessions end); asks twice unless --password-stdin."""
    from tracker.auth import find_user, set_password

    password = _read_password(password_stdin)
    with _database() as session:
        account = set_password(session, find_user(session, email).id, password)
    click.echo(f"New password set for {account.email}; its open sessions are ended.")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@contextmanager
def _database() -> Iterator[Session]:
    """A session on the configured database, committed at the end; refusals exit 1."""
    engine = make_engine(Settings().resolved_database_url())
    try:
        with _refusals(), session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def _minute(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


class _refusals:
    """Print a TrackerError's message and exit 1 instead of a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, _tb) -> bool:
        if isinstance(exc, TrackerError):
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(1)
        return False
