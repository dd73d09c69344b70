"""Enrollment requests held for an operator's decision (manual-approval labels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, insert, select, update

from estkit.store import schema
from estkit.store.audit import write_audit
from estkit.store.database import Database
from estkit.store.locks import serialize
from estkit.store.records import AuditEvent, CertificateRecord, RequestRecord

REQUEST_STATUSES = ("pending", "approved", "rejected", "issued")


class UnknownRequest(Exception):
    """No request with that id is in the store."""


class OpenRequestExists(Exception):
    """The same request from the same requester is already pending or approved."""


class TooManyOpenRequests(Exception):
    """The requester already has the allowed number of pending requests on the label."""


class RequestAlreadyDecided(Exception):
    """The request is no longer pending; carries its record (status, who, when)."""

    def __init__(self, record: RequestRecord) -> None:
        super().__init__(str(record.id))
        self.record = record


class RequestNotApproved(Exception):
    """The request is not (or no longer) approved: a concurrent pickup issued it first."""


class RequestTable(Database):
    def add_request(
        self,
        label: str,
        requester: str,
        csr_der: bytes,
        fingerprint: str,
        created_at: datetime,
        *,
        source: str = "",
        max_pending: int | None = None,
        audit: AuditEvent | None = None,
    ) -> RequestRecord:
        """Queue a new pending request; the audit event's subject becomes its id."""

        def work(connection: Connection) -> RequestRecord:
            if max_pending is not None:
                # Count and insert as one step, or concurrent submissions all see room.
                serialize(connection, "requests", label, requester)
                pending = connection.execute(
                    select(func.count())
                    .select_from(schema.requests)
                    .where(schema.requests.c.label == label)
                    .where(schema.requests.c.requester == requester)
                    .where(schema.requests.c.status == "pending")
                ).scalar_one()
                if pending >= max_pending:
                    raise TooManyOpenRequests(requester)
            result = connection.execute(
                insert(schema.requests).values(
                    label=label,
                    requester=requester,
                    csr_der=csr_der,
                    fingerprint=fingerprint,
                    status="pending",
                    source=source,
                    created_at=created_at,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            request_id = int(key[0])
            if audit is not None:
                write_audit(connection, replace(audit, subject=str(request_id)))
            return RequestRecord(
                id=request_id,
                label=label,
                requester=requester,
                csr_der=csr_der,
                fingerprint=fingerprint,
                status="pending",
                created_at=created_at,
                source=source,
            )

        return self._write(work, lambda _exc: OpenRequestExists(requester))

    def request(self, request_id: int) -> RequestRecord | None:
        def query(connection: Connection) -> RequestRecord | None:
            return _select_one(connection, request_id)

        return self._read(query)

    def requests(self, status: str | None = None) -> list[RequestRecord]:
        """Requests oldest first, optionally only those in one status."""
        statement = select(schema.requests).order_by(schema.requests.c.id)
        if status is not None:
            statement = statement.where(schema.requests.c.status == status)

        def query(connection: Connection) -> list[RequestRecord]:
            return [_request_record(row._mapping) for row in connection.execute(statement)]

        return self._read(query)

    def latest_request(self, label: str, requester: str, fingerprint: str) -> RequestRecord | None:
        """The newest request with exactly this label, requester and fingerprint."""

        def query(connection: Connection) -> RequestRecord | None:
            row = connection.execute(
                select(schema.requests)
                .where(schema.requests.c.label == label)
                .where(schema.requests.c.requester == requester)
                .where(schema.requests.c.fingerprint == fingerprint)
                .order_by(schema.requests.c.id.desc())
                .limit(1)
            ).first()
            return None if row is None else _request_record(row._mapping)

        return self._read(query)

    def decide_request(
        self,
        request_id: int,
        status: str,
        decided_by: str,
        decided_at: datetime,
        reason: str | None = None,
        audit: AuditEvent | None = None,
    ) -> RequestRecord:
        """Approve or reject a pending request (with its audit event); returns the new record."""
        if status not in ("approved", "rejected"):
            raise ValueError(f"a decision is 'approved' or 'rejected', not {status!r}")

        def work(connection: Connection) -> RequestRecord:
            result = connection.execute(
                update(schema.requests)
                .where(schema.requests.c.id == request_id)
                .where(schema.requests.c.status == "pending")
                .values(status=status, reason=reason, decided_at=decided_at, decided_by=decided_by)
            )
            record = _select_one(connection, request_id)
            if record is None:
                raise UnknownRequest(str(request_id))
            if result.rowcount != 1:
                raise RequestAlreadyDecided(record)
            write_audit(connection, audit)
            return record

        return self._write(work)

    def issue_request(
        self,
        request_id: int,
        certificate: CertificateRecord,
        *,
        consume_once_user: str | None = None,
        audit: AuditEvent | None = None,
    ) -> None:
        """Hand out an approved request's certificate: the request becomes 'issued' in the
        transaction that records the certificate (and consumes a one-time secret), through
        the one write path for certificates (CertificateTable.record_certificate)."""

        def mark_issued(connection: Connection) -> None:
            result = connection.execute(
                update(schema.requests)
                .where(schema.requests.c.id == request_id)
                .where(schema.requests.c.status == "approved")
                .values(status="issued", serial=certificate.serial)
            )
            if result.rowcount != 1:
                raise RequestNotApproved(str(request_id))

        self.record_certificate(
            certificate, consume_once_user=consume_once_user, audit=audit, also=mark_issued
        )

    # Provided by CertificateTable in the Store; declared for the type checker.
    if TYPE_CHECKING:

        def record_certificate(
            self,
            record: CertificateRecord,
            *,
            consume_once_user: str | None = None,
            audit: AuditEvent | None = None,
            also: Callable[[Connection], None] | None = None,
        ) -> None: ...


def _select_one(connection: Connection, request_id: int) -> RequestRecord | None:
    row = connection.execute(
        select(schema.requests).where(schema.requests.c.id == request_id)
    ).first()
    return None if row is None else _request_record(row._mapping)


def _request_record(row: Any) -> RequestRecord:
    return RequestRecord(
        id=int(row["id"]),
        label=row["label"],
        requester=row["requester"],
        csr_der=bytes(row["csr_der"]),
        fingerprint=row["fingerprint"],
        status=row["status"],
        created_at=row["created_at"],
        source=row["source"],
        reason=row["reason"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        serial=row["serial"],
    )
