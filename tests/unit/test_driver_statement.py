"""DriverStatement sends what SQLAlchemy's execute() would and reads back what it would, with
the same exceptions, on SQLite and PostgreSQL alike (store/database.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, insert, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from estkit.store import Store, schema
from estkit.store.database import SQLITE_CACHE_KIB, DriverStatement, _engines, insert_row

T0 = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
ELSEWHERE = timezone(timedelta(hours=-7))


@pytest.fixture
def writer(store_url: str) -> Iterator[Engine]:
    """The store's own write engine (BEGIN IMMEDIATE on SQLite) on a fresh schema."""
    store = Store(store_url)
    store.create_schema()
    store.close()
    engine, reader = _engines(store_url, 5.0)
    yield engine
    engine.dispose()
    reader.dispose()


def user_row(name: str, **changes: Any) -> dict[str, Any]:
    row = {
        "name": name,
        "secret_hash": "$argon2id$h",
        "labels": '["iot"]',
        "once": True,
        "created_at": T0.astimezone(ELSEWHERE),
        "consumed_at": None,
    }
    return row | changes


def certificate_row(serial: str) -> dict[str, Any]:
    return {
        "serial": serial,
        "label": "",
        "subject": "CN=a",
        "sans": "[]",
        "not_before": T0,
        "not_after": T0 + timedelta(days=1),
        "key_fingerprint": "00" * 32,
        "requester": "user:u",
        "kind": "enroll",
        "replaces_serial": None,
        "issuer_id": "ab",
        "issued_at": T0.astimezone(ELSEWHERE),
        "status": "valid",
        "revoked_at": None,
        "revocation_reason": None,
        "der": bytes(range(256)),  # NUL included: bytea on PostgreSQL
        "subject_key_id": "ab" * 20,
    }


def stored(writer: Engine, table: str, key: str) -> list[tuple[Any, ...]]:
    """Rows as the database keeps them (no type processing), without the key column."""
    with writer.connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {table} ORDER BY {key}")).all()
    return [tuple(row._mapping[c] for c in row._mapping if c not in (key, "id")) for row in rows]


def test_inserts_store_what_execute_stores(writer: Engine) -> None:
    with writer.begin() as connection:
        insert_row(schema.users).execute(connection, user_row("a-driver", consumed_at=T0))
        connection.execute(insert(schema.users), user_row("b-execute", consumed_at=T0))
        insert_row(schema.certificates).execute(connection, certificate_row("01"))
        connection.execute(insert(schema.certificates), certificate_row("02"))
    users = stored(writer, "users", "name")
    certificates = stored(writer, "certificates", "serial")
    assert users[0] == users[1]
    assert certificates[0] == certificates[1]


@pytest.mark.parametrize("consumed_at", [None, T0.astimezone(ELSEWHERE)])
def test_first_reads_what_execute_reads(writer: Engine, consumed_at: datetime | None) -> None:
    users = select(schema.users).where(schema.users.c.name == bindparam("name"))
    certificates = select(schema.certificates).where(
        schema.certificates.c.serial == bindparam("serial")
    )
    with writer.begin() as connection:
        insert_row(schema.users).execute(connection, user_row("a", consumed_at=consumed_at))
        insert_row(schema.certificates).execute(connection, certificate_row("01"))
        user = DriverStatement(users).first(connection, {"name": "a"})
        assert user == dict(connection.execute(users, {"name": "a"}).one()._mapping)
        assert user is not None and user["once"] is True and user["created_at"].tzinfo == UTC
        certificate = DriverStatement(certificates).first(connection, {"serial": "01"})
        expected = dict(connection.execute(certificates, {"serial": "01"}).one()._mapping)
        assert certificate == expected
        assert DriverStatement(users).first(connection, {"name": "missing"}) is None


def test_errors_are_sqlalchemys(writer: Engine) -> None:
    with writer.begin() as connection:
        insert_row(schema.users).execute(connection, user_row("a"))
    with pytest.raises(IntegrityError), writer.begin() as connection:
        insert_row(schema.users).execute(connection, user_row("a"))
    with pytest.raises(StatementError, match="naive datetime"), writer.begin() as connection:
        insert_row(schema.users).execute(connection, user_row("b", created_at=datetime(2030, 1, 1)))


def test_outside_a_transaction_it_begins_one_as_execute_does(writer: Engine) -> None:
    with writer.connect() as connection:
        insert_row(schema.users).execute(connection, user_row("a"))
        assert connection.in_transaction()
        connection.rollback()
    assert stored(writer, "users", "name") == []


def test_a_statement_that_needs_python_side_defaults_is_refused(writer: Engine) -> None:
    """``once`` has a Python-side default that only execute() would fill in."""
    partial = DriverStatement(insert(schema.users), ["name", "secret_hash", "created_at"])
    with pytest.raises(ValueError, match="not a statement"), writer.begin() as connection:
        partial.execute(connection, {"name": "a", "secret_hash": "h", "created_at": T0})


def test_every_sqlite_connection_is_durable_with_a_bounded_cache(tmp_path: Path) -> None:
    """Both engines' connections: WAL, a flush per commit (synchronous=FULL), and the page
    cache of SQLITE_CACHE_KIB (SQLite's 2 MiB default, kept by each connection once full,
    showed as resident growth in the memory benchmark)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    writer, reader = _engines(url, 5.0)
    try:
        for engine in (writer, reader):
            with engine.connect() as connection:
                settings = [
                    connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "synchronous", "cache_size")
                ]
            assert settings == ["wal", 2, -SQLITE_CACHE_KIB]
    finally:
        writer.dispose()
        reader.dispose()
