"""Audit events: who did what, when, from where."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from estkit.store import schema
from estkit.store.database import Database, insert_row
from estkit.store.records import AuditEvent

_INSERT_EVENT = insert_row(schema.audit_events)  # compiled once: see store/certificates.py
_DETAIL_JSON = json.JSONEncoder(sort_keys=True)
"""``json.dumps(detail, sort_keys=True)`` without making an encoder per event."""


class AuditTable(Database):
    def record_audit(self, event: AuditEvent) -> None:
        """An audit event on its own (most are written with the change they describe)."""
        self._write(lambda connection: write_audit(connection, event))

    def audit_events(self, since: datetime | None = None) -> list[AuditEvent]:
        """Events in the order they were written; ``since`` keeps those at or after it
        (a WHERE on the indexed ``at`` column)."""
        statement = select(schema.audit_events).order_by(schema.audit_events.c.id)
        if since is not None:
            statement = statement.where(schema.audit_events.c.at >= since)

        def query(connection: Connection) -> list[AuditEvent]:
            rows = connection.execute(statement)
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


def write_audit(connection: Connection, event: AuditEvent | None) -> None:
    """Record the audit event of a write in the write's own transaction."""
    if event is not None:
        _INSERT_EVENT.execute(connection, _audit_row(event))


def _audit_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "source": event.source,
        "detail": _DETAIL_JSON.encode(event.detail),
    }
