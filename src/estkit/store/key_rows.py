"""The row written with a certificate for server-side key generation (same transaction)."""

from __future__ import annotations

from sqlalchemy import Connection, insert

from estkit.store import schema
from estkit.store.records import ArchivedKey


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
