"""The schema's version: Alembic revisions shipped in store/migrations/, run in code.

One source of truth: a new database is made by running every revision (``create_schema``),
an existing one is brought forward by the same revisions (``estkit db upgrade``), and the
revision a database is at lives in its ``estkit_schema_version`` table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, column, inspect, select, table

from estkit.store import schema
from estkit.store.locks import serialize

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "estkit_schema_version"
HEAD_REVISION = "0004"
"""The newest revision in migrations/versions.  Checking a database against it needs no
Alembic: the server (every worker) and the operator commands start without loading it (it
costs import time and ~11 MB per process).  A test keeps it equal to Alembic's head."""

# Alembic narrates every context at INFO; serve logs INFO, and the commands print their own
# one-line summary.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


class SchemaNotCurrent(ValueError):
    """The database is not at the schema this estkit needs; the message says what to run."""


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return HEAD_REVISION


def script_revisions() -> tuple[str | None, set[str]]:
    """Alembic's own view of migrations/versions: (head, every revision)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config())
    return scripts.get_current_head(), {s.revision for s in scripts.walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None for a database without a version table."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    versions = table(VERSION_TABLE, column("version_num"))
    rows = connection.execute(select(versions.c.version_num)).scalars().all()
    if len(rows) > 1:
        raise SchemaNotCurrent(f"the database has several schema versions ({', '.join(rows)})")
    return rows[0] if rows else None


def has_estkit_tables(connection: Connection) -> bool:
    names = set(inspect(connection).get_table_names())
    return bool(names & {*schema.metadata.tables, VERSION_TABLE})


def upgrade(connection: Connection) -> None:
    """Run every revision the database lacks, in the caller's write transaction."""
    from alembic import command

    serialize(connection, "schema")  # two upgraders on one PostgreSQL database queue
    command.upgrade(_config(connection), "head")
    missing = sorted(set(schema.metadata.tables) - set(inspect(connection).get_table_names()))
    if missing:
        # A table added to schema.py without a revision would be silently absent here.
        raise RuntimeError(
            f"store/schema.py defines {', '.join(missing)} but no revision in "
            f"{MIGRATIONS / 'versions'} creates it: add a migration"
        )


def create_or_check(connection: Connection, remedy: str) -> None:
    """Every revision on a database without estkit tables; otherwise ``check_current``."""
    serialize(connection, "schema")
    if current_revision(connection) is None and not has_estkit_tables(connection):
        upgrade(connection)
    else:
        check_current(connection, remedy)


def check_current(connection: Connection, remedy: str) -> None:
    """Refuse a database that is not exactly at the head revision."""
    head = head_revision()
    current = current_revision(connection)
    if current == head:
        return
    if current is None:
        state = (
            "holds an estkit schema from before schema versions"
            if has_estkit_tables(connection)
            else "has no estkit schema"
        )
        raise SchemaNotCurrent(f"the database {state}; run '{remedy}'")
    _, known = script_revisions()
    if current not in known:
        raise SchemaNotCurrent(
            f"the database schema is at revision {current}, newer than this estkit knows "
            f"(its newest is {head}): run a newer estkit"
        )
    raise SchemaNotCurrent(
        f"the database schema is at revision {current}, this estkit needs {head}: run '{remedy}'"
    )
