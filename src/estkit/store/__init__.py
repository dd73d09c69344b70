"""Durable records: certificates, users and their secrets, audit events."""

from estkit.store.certificates import (
    AlreadyRevoked,
    OnceSecretConsumed,
    SerialCollision,
    UnknownCertificate,
)
from estkit.store.database import StoreUnavailable
from estkit.store.records import AuditEvent, CertificateRecord, UserRecord
from estkit.store.store import Store
from estkit.store.users import UserExists

__all__ = [
    "AlreadyRevoked",
    "AuditEvent",
    "CertificateRecord",
    "OnceSecretConsumed",
    "SerialCollision",
    "Store",
    "StoreUnavailable",
    "UnknownCertificate",
    "UserExists",
    "UserRecord",
]
