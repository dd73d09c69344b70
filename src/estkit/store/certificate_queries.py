"""Finding certificates by their links (``estkit cert show``).  The operator's listing
filters are store/certificate_listing.py."""

from __future__ import annotations

from sqlalchemy import Connection, select

from estkit.store import schema
from estkit.store.certificates import _certificate_record
from estkit.store.database import Database
from estkit.store.records import CertificateRecord


class CertificateQueryTable(Database):
    def renewals_of(self, serial: str) -> list[CertificateRecord]:
        """Certificates issued by renewing or rekeying this one (the forward renewal link)."""
        c = schema.certificates.c
        query = select(schema.certificates).where(c.replaces_serial == serial).order_by(c.id)

        def run(connection: Connection) -> list[CertificateRecord]:
            return [_certificate_record(row._mapping) for row in connection.execute(query)]

        return self._read(run)
