"""Baseline: the schema as estkit created it before it had migrations.

A frozen copy, never to be edited: later changes are later revisions.  Upgrading creates only
what is missing, so a database made by an earlier ``create_all`` (without a version table)
is brought to this revision without touching its rows.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Timestamp = DateTime(timezone=True)

metadata = MetaData()

certificates = Table(
    "certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("serial", String(64), nullable=False, unique=True),
    Column("label", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("sans", Text, nullable=False),
    Column("not_before", Timestamp, nullable=False),
    Column("not_after", Timestamp, nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("requester", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("replaces_serial", String(64), nullable=True),
    Column("issuer_id", String(128), nullable=False),
    Column("issued_at", Timestamp, nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", Timestamp, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    Column("der", LargeBinary, nullable=False),
    Index("ix_certificates_subject", "subject"),
    Index("ix_certificates_label", "label"),
    Index("ix_certificates_not_after", "not_after"),
    Index("ix_certificates_key_fingerprint", "key_fingerprint"),
    Index("ix_certificates_status", "status"),
    Index("ix_certificates_replaces_serial", "replaces_serial"),
)

Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("secret_hash", Text, nullable=False),
    Column("labels", Text, nullable=True),
    Column("once", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("consumed_at", Timestamp, nullable=True),
)

Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Timestamp, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_audit_events_at", "at"),
)

Table(
    "crls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("issuer_id", String(128), nullable=False),
    Column("number", BigInteger, nullable=False),
    Column("this_update", Timestamp, nullable=False),
    Column("next_update", Timestamp, nullable=False),
    Column("revoked_count", Integer, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("der", LargeBinary, nullable=False),
    UniqueConstraint("issuer_id", "number", name="uq_crls_issuer_number"),
)

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
    Column("source", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("decided_at", Timestamp, nullable=True),
    Column("decided_by", Text, nullable=True),
    Column("serial", String(64), nullable=True),
    Index("ix_requests_match", "label", "requester", "fingerprint"),
    Index("ix_requests_status", "status"),
)
_OPEN = requests.c.status.in_(["pending", "approved"])
Index(
    "uq_requests_open",
    requests.c.label,
    requests.c.requester,
    requests.c.fingerprint,
    unique=True,
    sqlite_where=_OPEN,
    postgresql_where=_OPEN,
)

Table(
    "certificate_key_ids",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("key_id", String(128), nullable=False),
    Index("ix_certificate_key_ids_key_id", "key_id"),
)

Table(
    "archived_keys",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("label", String(64), nullable=False),
    Column("recipient", String(64), nullable=False),
    Column("archived_at", Timestamp, nullable=False),
    Column("der", LargeBinary, nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, checkfirst=True)
    # create_all makes indexes only with a new table: one missing from an older table is
    # created here.
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(bind, checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
