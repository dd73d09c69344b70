"""Issued certificates."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from estkit.store import schema
from estkit.store.audit import write_audit
from estkit.store.database import Database, DriverStatement, insert_row
from estkit.store.key_rows import write_archived_key
from estkit.store.records import ArchivedKey, AuditEvent, CertificateRecord, UserRecord
from estkit.store.unavailable import StoreUnavailable
from estkit.store.users import confirm_user

# Compiled once and run on the driver: every enrollment runs these (store/database.py).
_INSERT_CERTIFICATE = insert_row(schema.certificates)
_CERTIFICATE_BY_SERIAL = DriverStatement(
    select(schema.certificates).where(schema.certificates.c.serial == bindparam("serial"))
)


class SerialCollision(Exception):
    """A serial number already exists; the caller draws a new one."""


class OnceSecretConsumed(Exception):
    """A one-time bootstrap secret was already used by an earlier enrollment."""


class UnknownCertificate(Exception):
    """No certificate with that serial number is in the store."""


class AlreadyRevoked(Exception):
    """The certificate was revoked before; carries its record (time and reason)."""

    def __init__(self, record: CertificateRecord) -> None:
        super().__init__(record.serial)
        self.record = record


class CertificateTable(Database):
    def record_certificate(
        self,
        record: CertificateRecord,
        *,
        consume_once_user: str | None = None,
        audit: AuditEvent | None = None,
        archived_key: ArchivedKey | None = None,
        also: Callable[[Connection], None] | None = None,
        account: UserRecord | None = None,
    ) -> None:
        """Commit a certificate (and its audit event, and a consumed bootstrap secret) at once.

        ``archived_key``: serverkeygen's encrypted copy of the key, kept with its certificate.
        ``also``: further writes that stand or fall with the certificate, run first in the
        same transaction (manual approval marks its request issued); an exception it raises
        rolls everything back and reaches the caller.
        ``account``: the Basic account the request was authenticated as from memory
        (Accounts); UserChanged, and nothing written, unless it is still stored as it was.
        """
        work, conflict = self._certificate_write(
            record, consume_once_user, audit, archived_key, also, account
        )
        self._write(work, conflict)

    async def record_certificate_async(
        self,
        record: CertificateRecord,
        *,
        consume_once_user: str | None = None,
        audit: AuditEvent | None = None,
        account: UserRecord | None = None,
    ) -> None:
        """``record_certificate`` for a coroutine (the enrollment path on the event loop):
        committed with whatever else is being written at the time, and as durable."""
        work, conflict = self._certificate_write(
            record, consume_once_user, audit, None, None, account
        )
        await self._write_async(work, conflict)

    def _certificate_write(
        self,
        record: CertificateRecord,
        consume_once_user: str | None,
        audit: AuditEvent | None,
        archived_key: ArchivedKey | None,
        also: Callable[[Connection], None] | None,
        account: UserRecord | None,
    ) -> tuple[Callable[[Connection], None], Callable[[IntegrityError], Exception]]:
        """The transaction's work and what a constraint violation means."""

        def work(connection: Connection) -> None:
            if also is not None:
                also(connection)
            if account is not None:
                confirm_user(connection, account)
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
            _INSERT_CERTIFICATE.execute(connection, _certificate_row(record))
            write_archived_key(connection, archived_key)
            write_audit(connection, audit)

        def conflict(exc: IntegrityError) -> Exception:
            # Ask the database rather than parse its message: a trigger or constraint whose
            # text happens to mention "serial" is a refusal, not a collision to retry.
            if self.certificate(record.serial) is not None:
                return SerialCollision(record.serial)
            return StoreUnavailable(
                "the certificate store refused the write; nothing was issued, retry later",
                retry_after=self.retry_after,
            )

        return work, conflict

    def certificate(self, serial: str) -> CertificateRecord | None:
        row = self._read_row(_CERTIFICATE_BY_SERIAL, {"serial": serial})
        return None if row is None else _certificate_record(row)

    def certificates(self) -> list[CertificateRecord]:
        def query(connection: Connection) -> list[CertificateRecord]:
            rows = connection.execute(
                select(schema.certificates).order_by(schema.certificates.c.id)
            )
            return [_certificate_record(row._mapping) for row in rows]

        return self._read(query)

    def revoke_certificate(
        self, serial: str, reason: str, revoked_at: datetime, audit: AuditEvent | None = None
    ) -> CertificateRecord:
        """Mark a valid certificate revoked (with its audit event); returns the new record."""

        def work(connection: Connection) -> CertificateRecord:
            result = connection.execute(
                update(schema.certificates)
                .where(schema.certificates.c.serial == serial)
                .where(schema.certificates.c.status == "valid")
                .values(status="revoked", revoked_at=revoked_at, revocation_reason=reason)
            )
            row = connection.execute(
                select(schema.certificates).where(schema.certificates.c.serial == serial)
            ).first()
            if row is None:
                raise UnknownCertificate(serial)
            record = _certificate_record(row._mapping)
            if result.rowcount != 1:
                raise AlreadyRevoked(record)
            write_audit(connection, audit)
            return record

        return self._write(work)


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
        "subject_key_id": record.subject_key_id,
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
        subject_key_id=row["subject_key_id"],
    )
