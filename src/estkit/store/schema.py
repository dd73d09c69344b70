"""Tables, as SQLAlchemy Core metadata shared by SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
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
    Index("ix_certificates_subject", "subject"),
    Index("ix_certificates_label", "label"),
    Index("ix_certificates_not_after", "not_after"),
    Index("ix_certificates_key_fingerprint", "key_fingerprint"),
)

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
