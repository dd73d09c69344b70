"""Durable records: certificates, users and their secrets, audit events."""

from estkit.store.certificates import OnceSecretConsumed, SerialCollision
from estkit.store.database import StoreUnavailable
from estkit.store.records import AuditEvent, CertificateRecord, UserRecord
from estkit.store.store import Store
from estkit.store.users import UserExists

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
