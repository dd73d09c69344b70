"""HTTP Basic accounts (only secret hashes are stored)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from estkit.store import schema
from estkit.store.audit import write_audit
from estkit.store.database import Database, DriverStatement
from estkit.store.records import AuditEvent, UserRecord

# Compiled once: every Basic-authenticated request reads its user (see store/certificates.py).
_USER_BY_NAME = DriverStatement(
    select(schema.users).where(schema.users.c.name == bindparam("name"))
)


class UserExists(Exception):
    """A user of that name exists already."""


class UserChanged(Exception):
    """The Basic account that authorized a request was removed or replaced (a new secret, new
    labels) after its secret was checked."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def confirm_user(connection: Connection, account: UserRecord) -> None:
    """In the transaction that acts on the account's authority: it must still be stored as it
    was when its secret was checked (using up a one-time secret is checked separately)."""
    row = _USER_BY_NAME.first(connection, {"name": account.name})
    if row is None or not _user_record(row).same_account(account):
        raise UserChanged(account.name)


class UserTable(Database):
    def add_user(self, user: UserRecord, audit: AuditEvent | None = None) -> None:
        def work(connection: Connection) -> None:
            connection.execute(
                insert(schema.users).values(
                    name=user.name,
                    secret_hash=user.secret_hash,
                    labels=None if user.labels is None else json.dumps(list(user.labels)),
                    once=user.once,
                    created_at=user.created_at,
                    consumed_at=user.consumed_at,
                )
            )
            write_audit(connection, audit)

        self._write(work, lambda _exc: UserExists(user.name))

    def user(self, name: str) -> UserRecord | None:
        row = self._read_row(_USER_BY_NAME, {"name": name})
        return None if row is None else _user_record(row)

    def confirm_user(self, account: UserRecord) -> None:
        """confirm_user in a read of its own (before acting on the account elsewhere)."""
        self._read(lambda connection: confirm_user(connection, account))

    def users(self) -> list[UserRecord]:
        def query(connection: Connection) -> list[UserRecord]:
            rows = connection.execute(select(schema.users).order_by(schema.users.c.name))
            return [_user_record(row._mapping) for row in rows]

        return self._read(query)

    def remove_user(self, name: str, audit: AuditEvent | None = None) -> bool:
        def work(connection: Connection) -> bool:
            result = connection.execute(delete(schema.users).where(schema.users.c.name == name))
            if result.rowcount:
                write_audit(connection, audit)
            return bool(result.rowcount)

        return self._write(work)


def _user_record(row: Any) -> UserRecord:
    labels = row["labels"]
    return UserRecord(
        name=row["name"],
        secret_hash=row["secret_hash"],
        labels=None if labels is None else tuple(json.loads(labels)),
        once=bool(row["once"]),
        created_at=row["created_at"],
        consumed_at=row["consumed_at"],
    )
