"""Alembic environment: runs on the connection handed over by tracker.db.migrate."""

from alembic import context
from sqlmodel import SQLModel

import tracker.models  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    # `alembic revision --autogenerate` from the command line: use the configured URL.
    from tracker.db import make_engine
    from tracker.settings import Settings

    connection = make_engine(Settings().resolved_database_url()).connect()

# render_as_batch lets column changes work on SQLite, which cannot ALTER most things.
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
