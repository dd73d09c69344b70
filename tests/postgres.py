"""A real PostgreSQL for the store's tests: one fresh database per test, dropped afterwards.

The server is ESTKIT_TEST_POSTGRES (an admin URL; default the local postgres user over TCP,
as scripts/test starts it).  Where none answers, the tests that need it skip with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("ESTKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def unreachable_reason() -> str | None:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL at {ADMIN_URL} ({first}); scripts/test starts one when run as root"


def _url_for(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """An empty database with a unique name; yields its postgresql:// URL."""
    name = f"estkit_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def rows(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    """The rows of one query, read straight from the database (not through estkit)."""
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()
