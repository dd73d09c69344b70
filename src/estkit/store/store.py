"""The store: one class over SQLAlchemy Core, SQLite by default.

Durability: a write returns only after its transaction is committed, and on SQLite the
connection runs in WAL mode with ``synchronous=FULL``, so the commit has been fsync'd.  Write
transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy
timeout instead of failing on a stale snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from estkit.errors import ServiceUnavailable
from estkit.store import schema
from estkit.store.records import AuditEvent, CertificateRecord, UserRecord

T = TypeVar("T")


class StoreUnavailable(ServiceUnavailable):
    """The database could not be read or written; the operation did not happen."""


class SerialCollision(Exception):
    """A serial number already exists; the caller draws a new one."""


class UserExists(Exception):
    """A user of that name exists already."""


class OnceSecretConsumed(Exception):
    """A one-time bootstrap secret was already used by an earlier enrollment."""


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin listener issues BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    return on_connect


def _engines(url: str, busy_timeout: float) -> tuple[Engine, Engine]:
    """(writer, reader) engines; on SQLite the writer takes the write lock up front."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True)
        return engine, engine
    connect_args = {"check_same_thread": False, "timeout": busy_timeout}
    writer = create_engine(url, connect_args=connect_args)
    reader = create_engine(url, connect_args=connect_args)
    for engine in (writer, reader):
        event.listen(engine, "connect", _sqlite_pragmas(int(busy_timeout * 1000)))

    @event.listens_for(writer, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(reader, "begin")
    def _begin_deferred(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return writer, reader


class Store:
    """Certificates, users and audit events in one relational database."""

    def __init__(self, url: str, *, busy_timeout: float = 5.0, retry_after: int = 5) -> None:
        self.url = url
        self.retry_after = retry_after
        """Seconds a client is told to wait (Retry-After) when the store cannot answer."""
        self._writer, self._reader = _engines(url, busy_timeout)

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()

    def create_schema(self) -> None:
        with self._guard():
            schema.metadata.create_all(self._writer)

    def _unavailable(self, exc: SQLAlchemyError) -> StoreUnavailable:
        return StoreUnavailable(
            f"the certificate store is unavailable ({_cause(exc)}); nothing was issued or "
            "recorded, retry later",
            retry_after=self.retry_after,
        )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    def _read(self, query: Callable[[Connection], T]) -> T:
        with self._guard(), self._reader.begin() as connection:
            return query(connection)

    def _write(
        self,
        work: Callable[[Connection], T],
        on_conflict: Callable[[IntegrityError], Exception] | None = None,
    ) -> T:
        """Run work in one write transaction; a constraint violation goes to on_conflict."""
        try:
            with self._writer.begin() as connection:
                return work(connection)
        except IntegrityError as exc:
            raise (on_conflict(exc) if on_conflict else self._unavailable(exc)) from exc
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    # Certificates -------------------------------------------------------------------------

    def record_certificate(
        self,
        record: CertificateRecord,
        *,
        consume_once_user: str | None = None,
        audit: AuditEvent | None = None,
    ) -> None:
        """Commit a certificate (and its audit event, and a consumed bootstrap secret) at once."""

        def work(connection: Connection) -> None:
            if consume_once_user is not None:
                result = connection.execute(
                    update(schema.users)
                    .where(schema.users.c.name == consume_once_user)
                    .where(schema.users.c.once.is_(True))
                    .where(schema.users.c.consumed_at.is_(None))
                    .values(consumed_at=record.issued_at)
                )
                if result.rowcount != 1:
                    raise OnceSecretConsumed(consume_once_user)
            connection.execute(insert(schema.certificates).values(**_certificate_row(record)))
            _audit(connection, audit)

        def conflict(exc: IntegrityError) -> Exception:
            # Ask the database rather than parse its message: a trigger or constraint whose
            # text happens to mention "serial" is a refusal, not a collision to retry.
            if self.certificate(record.serial) is not None:
                return SerialCollision(record.serial)
            return StoreUnavailable(
                "the certificate store refused the write; nothing was issued, retry later",
                retry_after=self.retry_after,
            )

        self._write(work, conflict)

    def certificate(self, serial: str) -> CertificateRecord | None:
        def query(connection: Connection) -> CertificateRecord | None:
            row = connection.execute(
                select(schema.certificates).where(schema.certificates.c.serial == serial)
            ).first()
            return None if row is None else _certificate_record(row._mapping)

        return self._read(query)

    def certificates(self) -> list[CertificateRecord]:
        def query(connection: Connection) -> list[CertificateRecord]:
            rows = connection.execute(
                select(schema.certificates).order_by(schema.certificates.c.id)
            )
            return [_certificate_record(row._mapping) for row in rows]

        return self._read(query)

    # Users --------------------------------------------------------------------------------

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
            _audit(connection, audit)

        self._write(work, lambda _exc: UserExists(user.name))

    def user(self, name: str) -> UserRecord | None:
        def query(connection: Connection) -> UserRecord | None:
            row = connection.execute(
                select(schema.users).where(schema.users.c.name == name)
            ).first()
            return None if row is None else _user_record(row._mapping)

        return self._read(query)

    def users(self) -> list[UserRecord]:
        def query(connection: Connection) -> list[UserRecord]:
            rows = connection.execute(select(schema.users).order_by(schema.users.c.name))
            return [_user_record(row._mapping) for row in rows]

        return self._read(query)

    def remove_user(self, name: str, audit: AuditEvent | None = None) -> bool:
        def work(connection: Connection) -> bool:
            result = connection.execute(delete(schema.users).where(schema.users.c.name == name))
            if result.rowcount:
                _audit(connection, audit)
            return bool(result.rowcount)

        return self._write(work)

    # Audit --------------------------------------------------------------------------------

    def audit_events(self) -> list[AuditEvent]:
        def query(connection: Connection) -> list[AuditEvent]:
            rows = connection.execute(
                select(schema.audit_events).order_by(schema.audit_events.c.id)
            )
            return [
                AuditEvent(
                    actor=r.actor,
                    action=r.action,
                    subject=r.subject,
                    at=r.at,
                    source=r.source,
                    detail=json.loads(r.detail),
                )
                for r in rows
            ]

        return self._read(query)


def _audit(connection: Connection, event: AuditEvent | None) -> None:
    """Record the audit event of a write in the write's own transaction."""
    if event is not None:
        connection.execute(insert(schema.audit_events).values(**_audit_row(event)))


def _cause(exc: SQLAlchemyError) -> str:
    """The driver's error class name: enough to diagnose, no SQL or values leaked."""
    original = getattr(exc, "orig", None)
    return type(original or exc).__name__


def _certificate_row(record: CertificateRecord) -> dict[str, Any]:
    return {
        "serial": record.serial,
        "label": record.label,
        "subject": record.subject,
        "sans": json.dumps(list(record.sans)),
        "not_before": record.not_before,
        "not_after": record.not_after,
        "key_fingerprint": record.key_fingerprint,
        "requester": record.requester,
        "kind": record.kind,
        "replaces_serial": record.replaces_serial,
        "issuer_id": record.issuer_id,
        "issued_at": record.issued_at,
        "status": record.status,
        "revoked_at": record.revoked_at,
        "revocation_reason": record.revocation_reason,
        "der": record.der,
    }


def _certificate_record(row: Any) -> CertificateRecord:
    return CertificateRecord(
        serial=row["serial"],
        label=row["label"],
        subject=row["subject"],
        sans=tuple(json.loads(row["sans"])),
        not_before=row["not_before"],
        not_after=row["not_after"],
        key_fingerprint=row["key_fingerprint"],
        requester=row["requester"],
        kind=row["kind"],
        der=bytes(row["der"]),
        issuer_id=row["issuer_id"],
        issued_at=row["issued_at"],
        replaces_serial=row["replaces_serial"],
        status=row["status"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
    )


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


def _audit_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "source": event.source,
        "detail": json.dumps(event.detail, sort_keys=True),
    }
