"""Rows written with a certificate for server-side key generation (same transaction)."""

from __future__ import annotations

from sqlalchemy import Connection, insert

from estkit.store import schema
from estkit.store.database import insert_row
from estkit.store.records import ArchivedKey, CertificateRecord

_INSERT_KEY_ID = insert_row(schema.certificate_key_ids)  # compiled once: see store/certificates.py


def write_key_id(connection: Connection, record: CertificateRecord) -> None:
    """Index a new certificate by its subject key identifier (same transaction as the cert)."""
    if record.subject_key_id is not None:
        _INSERT_KEY_ID.execute(
            connection, {"serial": record.serial, "key_id": record.subject_key_id}
        )


def write_archived_key(connection: Connection, archived: ArchivedKey | None) -> None:
    """Keep an encrypted server-generated key with the certificate issued for it."""
    if archived is not None:
        connection.execute(
            insert(schema.archived_keys).values(
                serial=archived.serial,
                label=archived.label,
                recipient=archived.recipient,
                archived_at=archived.archived_at,
                der=archived.der,
            )
        )
