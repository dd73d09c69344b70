"""Finding certificates: the operator's filters, as SQL on indexed columns."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from estkit.store import schema
from estkit.store.certificates import _certificate_record
from estkit.store.database import Database
from estkit.store.records import CertificateRecord
from estkit.store.subject_search import subject_contains

STATUSES = ("valid", "revoked", "expired")
"""What an operator filters by.  The store keeps 'valid' or 'revoked'; 'expired' is a valid
(never revoked) certificate past its notAfter, and a revoked one stays 'revoked'."""


class CertificateQueryTable(Database):
    def find_certificates(
        self,
        *,
        now: datetime,
        label: str | None = None,
        subject: str | None = None,
        status: str | None = None,
    ) -> list[CertificateRecord]:
        """Certificates in issuance order; ``subject`` matches a case-insensitive substring
        of the RFC 4514 subject (LIKE metacharacters in it are taken literally), through the
        subject search index (store/subject_search.py)."""
        c = schema.certificates.c
        query = select(schema.certificates).order_by(c.id)
        if label is not None:
            query = query.where(c.label == label)
        if status == "revoked":
            query = query.where(c.status == "revoked")
        elif status == "valid":
            query = query.where(c.status == "valid").where(c.not_after >= now)
        elif status == "expired":
            query = query.where(c.status == "valid").where(c.not_after < now)
        elif status is not None:
            raise ValueError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")

        def run(connection: Connection) -> list[CertificateRecord]:
            found = query.where(subject_contains(connection, subject)) if subject else query
            return [_certificate_record(row._mapping) for row in connection.execute(found)]

        return self._read(run)

    def renewals_of(self, serial: str) -> list[CertificateRecord]:
        """Certificates issued by renewing or rekeying this one (the forward renewal link)."""
        c = schema.certificates.c
        query = select(schema.certificates).where(c.replaces_serial == serial).order_by(c.id)

        def run(connection: Connection) -> list[CertificateRecord]:
            return [_certificate_record(row._mapping) for row in connection.execute(query)]

        return self._read(run)


def certificate_status(record: CertificateRecord, now: datetime) -> str:
    """'revoked', 'expired' or 'valid', with the same meaning as the filters above."""
    if record.status == "revoked":
        return "revoked"
    return "expired" if record.not_after < now else "valid"
