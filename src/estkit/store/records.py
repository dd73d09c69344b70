"""Typed records the store reads and writes (plain data, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class CertificateRecord:
    """One issued certificate, as durable as the response that carried it."""

    serial: str
    """Lower-case hex of the serial number, no leading zeros."""
    label: str
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_fingerprint: str
    requester: str
    kind: str
    """'enroll', 'renew' (same key), 'rekey' (new key) or 'init' (made by estkit init)."""
    der: bytes
    issuer_id: str
    issued_at: datetime
    replaces_serial: str | None = None
    status: str = "valid"
    revoked_at: datetime | None = None
    revocation_reason: str | None = None


@dataclass(frozen=True)
class UserRecord:
    """An HTTP Basic account: only the argon2id hash of its secret is kept."""

    name: str
    secret_hash: str
    labels: tuple[str, ...] | None
    once: bool
    created_at: datetime
    consumed_at: datetime | None = None


@dataclass(frozen=True)
class AuditEvent:
    """Who did what, when, from where."""

    actor: str
    action: str
    subject: str
    at: datetime
    source: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
