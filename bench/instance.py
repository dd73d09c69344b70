"""Fresh estkit instances for the benchmark: EC P-256 CA, on SQLite or on a PostgreSQL
database of its own (created and dropped with tests/postgres.py's helper)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.estserver import init_instance
from tests.postgres import fresh_database

STORES = ("sqlite", "postgresql")


@contextlib.contextmanager
def fresh_instance(directory: Path, store: str, extra_toml: str = "") -> Iterator[Path]:
    """An initialised instance directory whose store is a new SQLite file or a new
    PostgreSQL database (dropped on exit)."""
    with contextlib.ExitStack() as stack:
        db_args: tuple[str, ...] = ()
        if store == "postgresql":
            db_args = ("--db", stack.enter_context(fresh_database()))
        elif store != "sqlite":
            raise ValueError(f"unknown store {store!r}")
        yield init_instance(directory, extra_toml, "--key-type", "ec-p256", *db_args)
