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
    """'enroll', 'renew' (same key), 'rekey' (new key), 'serverkeygen' (key made by the server),
    'init' (made by estkit init) or 'ocsp-responder' (the server's delegated OCSP signer)."""
    der: bytes
    issuer_id: str
    issued_at: datetime
    replaces_serial: str | None = None
    status: str = "valid"
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    subject_key_id: str | None = None
    """Hex subjectKeyIdentifier, indexed (serverkeygen looks recipients up by it); None for a
    certificate without one, and in ``cert list``'s records, which do not read it."""


@dataclass(frozen=True)
class UserRecord:
    """An HTTP Basic account: only the argon2id hash of its secret is kept."""

    name: str
    secret_hash: str
    labels: tuple[str, ...] | None
    once: bool
    created_at: datetime
    consumed_at: datetime | None = None

    def same_account(self, other: UserRecord) -> bool:
        """The same account, whether or not its one-time secret has been used since."""
        return (self.name, self.secret_hash, self.labels, self.once, self.created_at) == (
            other.name,
            other.secret_hash,
            other.labels,
            other.once,
            other.created_at,
        )


@dataclass(frozen=True)
class AuditEvent:
    """Who did what, when, from where."""

    actor: str
    action: str
    subject: str
    at: datetime
    source: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RevokedEntry:
    """What a CRL lists about one revoked certificate (RFC 5280 §5.1.2.6)."""

    serial: str
    revoked_at: datetime | None
    """None only for a row marked revoked by hand without a time; it is listed all the same."""
    reason: str | None


@dataclass(frozen=True)
class CrlInfo:
    """A published CRL's metadata: enough to decide whether it is current."""

    issuer_id: str
    number: int
    this_update: datetime
    next_update: datetime
    revoked_count: int
    """Revoked certificates of this issuer in the store when it was signed; a larger count
    now means a revocation happened since (a count, not a time: immune to clock skew
    between the processes that revoke)."""
    entries: int


@dataclass(frozen=True)
class CrlRecord(CrlInfo):
    """A published CRL with its DER."""

    der: bytes = b""


@dataclass(frozen=True)
class CrlState:
    """The newest CRL of an issuer, and how many of its certificates are revoked now."""

    latest: CrlInfo | None
    revoked_count: int


@dataclass(frozen=True)
class RequestRecord:
    """An enrollment request on a manual-approval label and the operator's decision on it."""

    id: int
    label: str
    requester: str
    csr_der: bytes
    """The CSR as first submitted (what the operator reviews)."""
    fingerprint: str
    """SHA-256 hex of what makes resubmissions identical (see authority/approval.py)."""
    status: str
    """'pending', 'approved', 'rejected' or 'issued'."""
    created_at: datetime
    source: str = ""
    reason: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    serial: str | None = None
    """The certificate handed out for it, once issued."""


@dataclass(frozen=True)
class ArchivedKey:
    """A server-generated private key kept for recovery: encrypted, never in the clear."""

    serial: str
    """The serial of the certificate issued for the key."""
    label: str
    recipient: str
    """SHA-256 fingerprint (hex) of the archive certificate whose key opens ``der``."""
    archived_at: datetime
    der: bytes
    """CMS ContentInfo(EnvelopedData) of the DER PKCS#8 PrivateKeyInfo (RFC 5652)."""
