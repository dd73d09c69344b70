"""Durable records: certificates, users and their secrets, audit events.

The names below load their modules on first use (PEP 562): ``estkit cert list`` imports
``estkit.store.certificate_listing`` and the records without loading SQLAlchemy, which the
rest of the store is built on.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
from estkit.store.unavailable import StoreUnavailable

if TYPE_CHECKING:
    from estkit.store.certificate_listing import STATUSES, certificate_status
    from estkit.store.certificates import (
        AlreadyRevoked,
        OnceSecretConsumed,
        SerialCollision,
        UnknownCertificate,
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
    from estkit.store.users import UserChanged, UserExists

_LAZY = {
    "STATUSES": "certificate_listing",
    "certificate_status": "certificate_listing",
    "AlreadyRevoked": "certificates",
    "OnceSecretConsumed": "certificates",
    "SerialCollision": "certificates",
    "UnknownCertificate": "certificates",
    "REQUEST_STATUSES": "requests",
    "OpenRequestExists": "requests",
    "RequestAlreadyDecided": "requests",
    "RequestNotApproved": "requests",
    "TooManyOpenRequests": "requests",
    "UnknownRequest": "requests",
    "Store": "store",
    "UserChanged": "users",
    "UserExists": "users",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


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
    "UserChanged",
    "UserExists",
    "UserRecord",
    "certificate_status",
]
