"""Serialising a read-then-write across processes, the same way on every backend.

On SQLite every write transaction already holds the database's one write lock from its first
statement (``BEGIN IMMEDIATE``), so nothing more is needed.  PostgreSQL runs READ COMMITTED
transactions side by side: two of them could read the same "latest" row and both act on it.
There the transaction takes a transaction-scoped advisory lock named by what it protects;
PostgreSQL releases it at COMMIT or ROLLBACK, and ``lock_timeout`` bounds the wait.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, func, select


def lock_key(*names: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name (e.g. ``"crl", issuer_id``)."""
    digest = hashlib.sha256("\x00".join(("estkit", *names)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def serialize(connection: Connection, *names: str) -> None:
    """Hold a lock named ``names`` until this write transaction ends (PostgreSQL only)."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(lock_key(*names))))
