"""Durable records: certificates, users and their secrets, audit events."""

from estkit.store.certificate_queries import STATUSES, certificate_status
from estkit.store.certificates import (
    AlreadyRevoked,
    OnceSecretConsumed,
    SerialCollision,
    UnknownCertificate,
)
from estkit.store.database import StoreUnavailable
from estkit.store.records import (
    ArchivedKey,
    AuditEvent,
    CertificateRecord,
    CrlInfo,
    CrlRecord,
    CrlState,
    RequestRecord,
    RevokedEntry,
    UserRecord,
)
from estkit.store.requests import (
    REQUEST_STATUSES,
    OpenRequestExists,
    RequestAlreadyDecided,
    RequestNotApproved,
    TooManyOpenRequests,
    UnknownRequest,
)
from estkit.store.store import Store
from estkit.store.users import UserExists

__all__ = [
    "REQUEST_STATUSES",
    "STATUSES",
    "AlreadyRevoked",
    "ArchivedKey",
    "AuditEvent",
    "CertificateRecord",
    "CrlInfo",
    "CrlRecord",
    "CrlState",
    "OnceSecretConsumed",
    "OpenRequestExists",
    "RequestAlreadyDecided",
    "RequestNotApproved",
    "RequestRecord",
    "RevokedEntry",
    "SerialCollision",
    "Store",
    "StoreUnavailable",
    "TooManyOpenRequests",
    "UnknownCertificate",
    "UnknownRequest",
    "UserExists",
    "UserRecord",
    "certificate_status",
]
