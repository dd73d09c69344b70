"""Indexes for large stores (a million certificates, a hundred thousand revoked).

ix_certificates_revocations covers what a CRL reads (store/crls.py): the revoked entries of
an issuer in CRL order, and their count, which every server worker polls each second, come
from the index alone, without sorting and without reading the certificates' rows.

Subject search: ``estkit cert list --subject`` finds a substring without reading every row.
SQLite: an FTS5 table with the trigram tokenizer (SQLite 3.34+) over ``certificates.subject``
(external content: it stores only the index), kept current by triggers.  PostgreSQL: a
pg_trgm GIN index on ``certificates.subject``, which serves ILIKE '%text%'.  Where neither
can be made (SQLite without FTS5 trigram, PostgreSQL without pg_trgm or the right to create
it) the revision still applies and the search reads every row, as before.

A frozen copy, never to be edited: later changes are later revisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FTS = "certificates_subject_fts"
TRIGRAM_INDEX = "ix_certificates_subject_trgm"

log = logging.getLogger("estkit.store")

_SQLITE_INDEX = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS certificates_subject_fts USING fts5("
    "subject, content='certificates', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS certificates_subject_fts_insert "
    "AFTER INSERT ON certificates BEGIN "
    "INSERT INTO certificates_subject_fts(rowid, subject) VALUES (new.id, new.subject); END",
    "CREATE TRIGGER IF NOT EXISTS certificates_subject_fts_delete "
    "AFTER DELETE ON certificates BEGIN "
    "INSERT INTO certificates_subject_fts(certificates_subject_fts, rowid, subject) "
    "VALUES ('delete', old.id, old.subject); END",
    "CREATE TRIGGER IF NOT EXISTS certificates_subject_fts_update "
    "AFTER UPDATE OF subject ON certificates "
    "BEGIN INSERT INTO certificates_subject_fts(certificates_subject_fts, rowid, subject) "
    "VALUES ('delete', old.id, old.subject); "
    "INSERT INTO certificates_subject_fts(rowid, subject) VALUES (new.id, new.subject); END",
    # rows already in the table
    "INSERT INTO certificates_subject_fts(certificates_subject_fts) VALUES ('rebuild')",
)


def upgrade() -> None:
    op.create_index(
        "ix_certificates_revocations",
        "certificates",
        ["status", "issuer_id", "revoked_at", "serial", "revocation_reason", "not_after"],
        if_not_exists=True,  # a database made by create_all from a newer schema.py has it
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        try:
            with bind.begin_nested():
                for statement in _SQLITE_INDEX:
                    bind.exec_driver_sql(statement)
        except DBAPIError as exc:
            log.warning("no subject search index (SQLite FTS5 trigram unavailable: %s)", exc.orig)
    elif bind.dialect.name == "postgresql":
        try:
            with bind.begin_nested():
                # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may
                # create it without being superuser.
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                bind.exec_driver_sql(
                    f"CREATE INDEX {TRIGRAM_INDEX} ON certificates USING gin (subject gin_trgm_ops)"
                )
        except DBAPIError as exc:
            log.warning("no subject search index (pg_trgm unavailable: %s)", exc.orig)


def downgrade() -> None:
    op.drop_index("ix_certificates_revocations", "certificates", if_exists=True)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {FTS}_{trigger}")
        bind.exec_driver_sql(f"DROP TABLE IF EXISTS {FTS}")
    elif bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")
