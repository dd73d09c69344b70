"""Server-side key generation's records: certificates by key identifier, and the key archive."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from estkit.store import schema
from estkit.store.audit import write_audit
from estkit.store.certificates import _certificate_record
from estkit.store.database import Database
from estkit.store.records import ArchivedKey, AuditEvent, CertificateRecord


class KeyArchiveTable(Database):
    def certificates_by_key_id(self, key_id: str) -> list[CertificateRecord]:
        """Certificates whose subjectKeyIdentifier is ``key_id`` (hex), newest first."""

        def query(connection: Connection) -> list[CertificateRecord]:
            c = schema.certificates.c
            rows = connection.execute(
                select(schema.certificates).where(c.subject_key_id == key_id).order_by(c.id.desc())
            )
            return [_certificate_record(row._mapping) for row in rows]

        return self._read(query)

    def archived_key(self, serial: str) -> ArchivedKey | None:
        def query(connection: Connection) -> ArchivedKey | None:
            row = connection.execute(
                select(schema.archived_keys).where(schema.archived_keys.c.serial == serial)
            ).first()
            return None if row is None else _archived_key(row._mapping)

        return self._read(query)

    def export_archived_key(self, serial: str, audit: AuditEvent) -> ArchivedKey | None:
        """An archived key, with the audit event of taking it out (same transaction)."""

        def work(connection: Connection) -> ArchivedKey | None:
            row = connection.execute(
                select(schema.archived_keys).where(schema.archived_keys.c.serial == serial)
            ).first()
            if row is None:
                return None
            write_audit(connection, audit)
            return _archived_key(row._mapping)

        return self._write(work)

    def archived_keys(self) -> list[ArchivedKey]:
        def query(connection: Connection) -> list[ArchivedKey]:
            rows = connection.execute(
                select(schema.archived_keys).order_by(schema.archived_keys.c.archived_at)
            )
            return [_archived_key(row._mapping) for row in rows]

        return self._read(query)


def _archived_key(row: Any) -> ArchivedKey:
    return ArchivedKey(
        serial=row["serial"],
        label=row["label"],
        recipient=row["recipient"],
        archived_at=row["archived_at"],
        der=bytes(row["der"]),
    )
