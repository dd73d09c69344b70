"""Tables, as SQLAlchemy Core metadata shared by SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

certificates = Table(
    "certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("serial", String(64), nullable=False, unique=True),
    Column("label", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("sans", Text, nullable=False),
    Column("not_before", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("requester", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("replaces_serial", String(64), nullable=True),
    Column("issuer_id", String(128), nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False, default="valid"),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    Column("der", LargeBinary, nullable=False),
    Column("subject_key_id", String(128), nullable=True),
    Index("ix_certificates_label", "label"),
    Index("ix_certificates_not_after", "not_after"),
    Index("ix_certificates_subject_key_id", "subject_key_id"),
)
"""Every certificate estkit issued or recorded.  ``subject_key_id`` (hex subjectKeyIdentifier,
revision 0004): serverkeygen finds the certificate an encrypted key is delivered to by the
identifier the CSR names (RFC 7030 §4.4.1.2)."""

users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("secret_hash", Text, nullable=False),
    Column("labels", Text, nullable=True),
    Column("once", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("consumed_at", UtcDateTime, nullable=True),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("detail", Text, nullable=False, default="{}"),
    Index("ix_audit_events_at", "at"),
)

# Revocation and CRLs ----------------------------------------------------------------------------

REVOKED = text("status = 'revoked'")
"""The revocation index's condition.  A query reaches that index only if it names 'revoked'
as a literal (store/crls.py): SQLite cannot see that a bound parameter implies it."""
_RENEWAL = text("replaces_serial IS NOT NULL")

Index(
    "ix_certificates_replaces_serial",
    certificates.c.replaces_serial,
    sqlite_where=_RENEWAL,
    postgresql_where=_RENEWAL,
)
"""Renewals only (revision 0004): a first enrollment's INSERT does not touch it."""
Index(
    "ix_certificates_revocations",
    certificates.c.status,
    certificates.c.issuer_id,
    certificates.c.revoked_at,
    certificates.c.serial,
    certificates.c.revocation_reason,
    certificates.c.not_after,
    sqlite_where=REVOKED,
    postgresql_where=REVOKED,
)
"""Covers the CRL's read (store/crls.py): an issuer's revoked entries in CRL order, from the
index alone (revision 0002).  Revoked rows only (revision 0004), so an enrollment's INSERT
does not touch it.  Their count, which every worker polls each second, is kept in
revocation_counts (revision 0003)."""
# Subject search (cert list --subject) has an index too, outside this metadata: an FTS5
# trigram table (brought up to date in batches, with its progress table) on SQLite, a pg_trgm
# GIN index on PostgreSQL (store/subject_search.py).

crls = Table(
    "crls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("issuer_id", String(128), nullable=False),
    Column("number", BigInteger, nullable=False),
    Column("this_update", UtcDateTime, nullable=False),
    Column("next_update", UtcDateTime, nullable=False),
    Column("revoked_count", Integer, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("der", LargeBinary, nullable=False),
    UniqueConstraint("issuer_id", "number", name="uq_crls_issuer_number"),
)
"""Every CRL signed, newest = highest number per issuer (RFC 5280 §5.2.3: monotonic)."""

revocation_counts = Table(
    "revocation_counts",
    metadata,
    Column("issuer_id", String(128), primary_key=True),
    Column("revoked", Integer, nullable=False),
)
"""How many of an issuer's certificates are revoked, kept by triggers on ``certificates``
(revision 0003, outside this metadata like the subject search): the CRL's once-a-second
"is one due?" check reads one row instead of counting."""

# Enrollment requests awaiting (or past) an operator's decision -------------------------------

requests = Table(
    "requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("label", String(64), nullable=False),
    Column("requester", Text, nullable=False),
    Column("csr_der", LargeBinary, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("source", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("decided_at", UtcDateTime, nullable=True),
    Column("decided_by", Text, nullable=True),
    Column("serial", String(64), nullable=True),
    Index("ix_requests_match", "label", "requester", "fingerprint"),
    Index("ix_requests_status", "status"),
)
"""Manual-approval requests: pending -> approved -> issued, or pending -> rejected."""

_OPEN_REQUEST = requests.c.status.in_(["pending", "approved"])
Index(
    "uq_requests_open",
    requests.c.label,
    requests.c.requester,
    requests.c.fingerprint,
    unique=True,
    sqlite_where=_OPEN_REQUEST,
    postgresql_where=_OPEN_REQUEST,
)
"""At most one open request per requester, label and request: concurrent identical first
submissions cannot queue the same request twice."""

# Server-side key generation ------------------------------------------------------------------

archived_keys = Table(
    "archived_keys",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("label", String(64), nullable=False),
    Column("recipient", String(64), nullable=False),
    Column("archived_at", UtcDateTime, nullable=False),
    Column("der", LargeBinary, nullable=False),
)
"""Server-generated private keys of labels with serverkeygen_archive, each only as a CMS
EnvelopedData to the archive recipient certificate (SHA-256 fingerprint in ``recipient``)."""
