"""Alembic's environment: runs on the connection estkit hands over (store/migrate.py), or on
``-x url=...`` when a developer runs the ``alembic`` command to draft a revision."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from estkit.store import schema
from estkit.store.database import driver_url
from estkit.store.migrate import VERSION_TABLE


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=schema.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("alembic: give the database with -x url=sqlite:///scratch.db")
    engine = create_engine(driver_url(url))
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


_main()
