"""Durable records: certificates, users and their secrets, audit events."""

from estkit.store.records import AuditEvent, CertificateRecord, UserRecord
from estkit.store.store import (
    OnceSecretConsumed,
    SerialCollision,
    Store,
    StoreUnavailable,
    UserExists,
)

__all__ = [
    "AuditEvent",
    "CertificateRecord",
    "OnceSecretConsumed",
    "SerialCollision",
    "Store",
    "StoreUnavailable",
    "UserExists",
    "UserRecord",
]
