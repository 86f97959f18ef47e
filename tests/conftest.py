"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL: a throwaway database is created on the server named by TRACKER_TEST_POSTGRES
(default: the local server) for the session and dropped at the end. When the server
cannot be reached the PostgreSQL variants are skipped, except under CI=true, where that
is a failure.
"""

import os
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import PG_SERVER, TINY_TREE, orphans
from helpers import empty_postgres as _empty_postgres
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from tracker import auth, create_app
from tracker.db import make_engine, migrate
from tracker.settings import Settings

# Tests read a page right after a write and expect to see it, so kept pages are never
# served out of date here (servers the tests start inherit this); tests/test_page_cache.py
# covers the default allowance, which a test asks for by setting page_stale_seconds.
os.environ["TRACKER_PAGE_STALE_SECONDS"] = "0"

# A password hashed at full cost takes 0.1-0.15 s, twice over for each staff sign-in: a
# third of the staff tests' time. The tests check what is hashed, not how hard, and
# test_auth checks the full cost outside them. (Servers the tests start use the full cost.)
auth.PASSWORD_METHOD = "scrypt:1024:8:1"


@pytest.fixture(scope="session")
def postgres_database():
    """URL of a fresh PostgreSQL database for this test session, migrated once."""
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL not reachable at {PG_SERVER}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"tracker_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "tracker.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    _empty_postgres(url)
    return url


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    """A session on a migrated, empty database (no places or tree loaded)."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """Settings for the tiny test city on this test's database."""
    return Settings(
        database_url=database_url,
        tree=TINY_TREE,
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        map_tiles="",  # no page test loads anything from outside
        _env_file=None,
    )


@pytest.fixture
def loaded(settings):
    """The tiny city's places and tree stored in the database; returns (engine, tree)."""
    from tracker.cli import initialise

    engine, tree = initialise(settings)
    yield engine, tree
    assert orphans(engine) == [], "rows left pointing at nothing"
    engine.dispose()


@pytest.fixture
def app(settings, loaded):
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    # A page rebuilding in the background (tests/test_page_cache.py) ends before its database.
    assert app.extensions["page_rebuilder"].wait(30), "a page rebuild did not end"
    app.extensions["engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(settings, monkeypatch):
    """A CLI runner whose environment points the tracker at this test's database."""
    monkeypatch.setenv("TRACKER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TRACKER_TREE", str(settings.tree))
    monkeypatch.setenv("TRACKER_INSTANCE_PATH", str(settings.instance_path))
    monkeypatch.setenv("TRACKER_SECRET_KEY", "test-secret")
    return CliRunner()


def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadgroup`, every test under tests/browser runs on one worker (one demo
    city, one Chromium), and every other test wherever a worker is free. By path, not by
    xdist's group mark: with pytest 9.2 xdist's mark no longer groups anything."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BrowserTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "browser" if nodeid.startswith("tests/browser/") else nodeid

    return BrowserTestsTogether(config, log)
