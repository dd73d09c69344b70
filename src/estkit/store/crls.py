"""Published CRLs: every one kept, the newest per issuer served.

The CRL is derived from the store, not from any process's memory: whoever signs the next one
(the server's refresh task, or ``estkit cert revoke``) reads the revocations and the previous
CRL number inside the same write transaction that records the new CRL, so two signers can
never publish the same number or miss a revocation committed before the lock was taken.  The
lock is SQLite's write lock, or on PostgreSQL an advisory lock per issuer (store/locks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from estkit.store import schema
from estkit.store.audit import write_audit
from estkit.store.database import Database
from estkit.store.locks import serialize
from estkit.store.records import AuditEvent, CrlInfo, CrlRecord, CrlState, RevokedEntry

CrlSigner = Callable[[CrlState, list[RevokedEntry]], tuple[CrlRecord, AuditEvent | None]]
"""Signs the next CRL from the current state and the entries to list; returns it and its
audit event.  Runs inside the write transaction."""

_INFO_COLUMNS = (
    schema.crls.c.issuer_id,
    schema.crls.c.number,
    schema.crls.c.this_update,
    schema.crls.c.next_update,
    schema.crls.c.revoked_count,
    schema.crls.c.entries,
)


class CrlTable(Database):
    def latest_crl(self, issuer_id: str) -> CrlRecord | None:
        """The newest CRL of an issuer, with its DER."""

        def query(connection: Connection) -> CrlRecord | None:
            row = connection.execute(
                select(*_INFO_COLUMNS, schema.crls.c.der)
                .where(schema.crls.c.issuer_id == issuer_id)
                .order_by(schema.crls.c.number.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            return CrlRecord(**_info_fields(row._mapping), der=bytes(row.der))

        return self._read(query)

    def crl_state(self, issuer_id: str) -> CrlState:
        """Cheap enough to ask every second: the newest CRL's metadata (no DER) and the
        number of revoked certificates of the issuer now."""
        return self._read(lambda connection: _state(connection, issuer_id))

    def publish_crl(
        self,
        issuer_id: str,
        due: Callable[[CrlState], bool],
        sign: CrlSigner,
    ) -> CrlRecord | None:
        """Sign and record the next CRL if ``due`` still says so under the write lock.

        Entries are the issuer's revoked certificates, except those that expired before the
        previous CRL's thisUpdate: RFC 5280 §3.3 lets an entry go once it "appears on one
        regularly scheduled CRL issued beyond the revoked certificate's validity period",
        and the previous CRL was exactly that.
        """

        def work(connection: Connection) -> CrlRecord | None:
            serialize(connection, "crl", issuer_id)
            state = _state(connection, issuer_id)
            if not due(state):
                return None
            cutoff = state.latest.this_update if state.latest else None
            record, event = sign(state, _revoked_entries(connection, issuer_id, cutoff))
            connection.execute(
                insert(schema.crls).values(
                    issuer_id=record.issuer_id,
                    number=record.number,
                    this_update=record.this_update,
                    next_update=record.next_update,
                    revoked_count=record.revoked_count,
                    entries=record.entries,
                    der=record.der,
                )
            )
            write_audit(connection, event)
            return record

        return self._write(work, alone=True)  # signing a long CRL must not delay enrollments


def _info_fields(row: Any) -> dict[str, Any]:
    return {
        "issuer_id": row["issuer_id"],
        "number": int(row["number"]),
        "this_update": row["this_update"],
        "next_update": row["next_update"],
        "revoked_count": int(row["revoked_count"]),
        "entries": int(row["entries"]),
    }


def _state(connection: Connection, issuer_id: str) -> CrlState:
    row = connection.execute(
        select(*_INFO_COLUMNS)
        .where(schema.crls.c.issuer_id == issuer_id)
        .order_by(schema.crls.c.number.desc())
        .limit(1)
    ).first()
    counts = schema.revocation_counts.c
    count = connection.execute(
        select(counts.revoked).where(counts.issuer_id == issuer_id)
    ).scalar_one_or_none()
    latest = None if row is None else CrlInfo(**_info_fields(row._mapping))
    return CrlState(latest=latest, revoked_count=int(count or 0))


def _revoked_entries(
    connection: Connection, issuer_id: str, expired_before: datetime | None
) -> list[RevokedEntry]:
    c = schema.certificates.c
    query = (
        select(c.serial, c.revoked_at, c.revocation_reason)
        .where(schema.REVOKED)  # the literal the partial index names (schema.py)
        .where(c.issuer_id == issuer_id)
        .order_by(c.revoked_at, c.serial)
    )
    if expired_before is not None:
        query = query.where(c.not_after >= expired_before)
    return [
        RevokedEntry(serial=row.serial, revoked_at=row.revoked_at, reason=row.revocation_reason)
        for row in connection.execute(query)
    ]
