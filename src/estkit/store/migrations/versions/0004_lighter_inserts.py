"""Lighter certificate inserts: fewer index pages written by each enrollment's commit.

Every b-tree an INSERT touches is at least one more page in the commit (a SQLite WAL frame
of 4 KiB written and fsync'd, a PostgreSQL WAL record), and SQLite's FTS5 table wrote a new
index segment in every transaction: about 20 pages per enrollment, a third of them the
subject search's.  This revision keeps every query served while inserts touch less:

- ``ix_certificates_subject`` and ``ix_certificates_key_fingerprint`` go: nothing reads
  them (subject search goes through the FTS5 or pg_trgm index of revision 0002; the key
  fingerprint is shown, never searched).
- ``ix_certificates_status`` goes: the revocation index below leads with status, and the
  one status a query narrows to through an index is 'revoked'.
- ``ix_certificates_revocations`` (the CRL's covering index) holds revoked rows only,
  ``ix_certificates_replaces_serial`` renewals only: an enrollment's valid row, with no
  predecessor, is in neither.
- The subject key identifier moves from its own table (``certificate_key_ids``: a row, a
  primary key and an index per certificate, and one more INSERT) to an indexed column,
  ``certificates.subject_key_id``.
- SQLite: the FTS5 subject index no longer follows each INSERT by trigger.  It is brought up
  to date in batches (store/subject_search.py ``CATCH_UP_SQL``, which the server runs every
  second), and ``subject_search_progress`` records the highest certificate id indexed; a
  search reads the rows above it directly, so it still finds every certificate.  The delete
  and update triggers act on indexed rows only (FTS5 must never be told to delete a row it
  does not hold).

A frozen copy, never to be edited: later changes are later revisions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FTS = "certificates_subject_fts"
REVOCATION_COLUMNS = [
    "status",
    "issuer_id",
    "revoked_at",
    "serial",
    "revocation_reason",
    "not_after",
]
REVOKED = "status = 'revoked'"
RENEWAL = "replaces_serial IS NOT NULL"

_FTS_DELETE = (
    "INSERT INTO certificates_subject_fts(certificates_subject_fts, rowid, subject) "
    "VALUES ('delete', old.id, old.subject);"
)
_FTS_INSERT = "INSERT INTO certificates_subject_fts(rowid, subject) VALUES (new.id, new.subject);"
_INDEXED = "WHEN old.id <= (SELECT indexed_through FROM subject_search_progress) "
_GUARDED_TRIGGERS = {
    "delete": "AFTER DELETE ON certificates " + _INDEXED + "BEGIN " + _FTS_DELETE + " END",
    "update": "AFTER UPDATE OF subject ON certificates "
    + _INDEXED
    + "BEGIN "
    + _FTS_DELETE
    + _FTS_INSERT
    + " END",
}
"""A row above the progress mark is not in the index yet: the next catch-up takes it as it is
then (deleted rows are gone, an edited subject is read afresh)."""
_0002_TRIGGERS = {
    "insert": "AFTER INSERT ON certificates BEGIN " + _FTS_INSERT + " END",
    "delete": "AFTER DELETE ON certificates BEGIN " + _FTS_DELETE + " END",
    "update": "AFTER UPDATE OF subject ON certificates BEGIN " + _FTS_DELETE + _FTS_INSERT + " END",
}


def _has_fts(bind: sa.Connection) -> bool:
    found = bind.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'certificates_subject_fts'"
    ).first()
    return found is not None


def _replace_triggers(bind: sa.Connection, triggers: dict[str, str]) -> None:
    for name in ("insert", "delete", "update"):
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {FTS}_{name}")
    for name, body in triggers.items():
        bind.exec_driver_sql(f"CREATE TRIGGER {FTS}_{name} {body}")


def _key_ids_to_column(bind: sa.Connection) -> None:
    # A database from before schema versions, made by a newer schema.py, has the column and
    # no table: every step is conditional.
    inspector = sa.inspect(bind)
    columns = {c["name"] for c in inspector.get_columns("certificates")}
    if "subject_key_id" not in columns:
        op.add_column("certificates", sa.Column("subject_key_id", sa.String(128), nullable=True))
    if inspector.has_table("certificate_key_ids"):
        bind.exec_driver_sql(
            "UPDATE certificates SET subject_key_id = (SELECT k.key_id "
            "FROM certificate_key_ids k WHERE k.serial = certificates.serial) "
            "WHERE serial IN (SELECT serial FROM certificate_key_ids)"
        )
        op.drop_table("certificate_key_ids")
    op.create_index(
        "ix_certificates_subject_key_id", "certificates", ["subject_key_id"], if_not_exists=True
    )


def _key_ids_to_table(bind: sa.Connection) -> None:
    op.create_table(
        "certificate_key_ids",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(128), nullable=False),
    )
    op.create_index("ix_certificate_key_ids_key_id", "certificate_key_ids", ["key_id"])
    bind.exec_driver_sql(
        "INSERT INTO certificate_key_ids (serial, key_id) "
        "SELECT serial, subject_key_id FROM certificates WHERE subject_key_id IS NOT NULL"
    )
    op.drop_index("ix_certificates_subject_key_id", "certificates")
    op.drop_column("certificates", "subject_key_id")


def upgrade() -> None:
    bind = op.get_bind()
    _key_ids_to_column(bind)
    op.drop_index("ix_certificates_key_fingerprint", "certificates", if_exists=True)
    op.drop_index("ix_certificates_subject", "certificates", if_exists=True)
    op.drop_index("ix_certificates_status", "certificates", if_exists=True)
    op.drop_index("ix_certificates_revocations", "certificates", if_exists=True)
    op.drop_index("ix_certificates_replaces_serial", "certificates", if_exists=True)
    op.create_index(
        "ix_certificates_revocations",
        "certificates",
        REVOCATION_COLUMNS,
        sqlite_where=sa.text(REVOKED),
        postgresql_where=sa.text(REVOKED),
    )
    op.create_index(
        "ix_certificates_replaces_serial",
        "certificates",
        ["replaces_serial"],
        sqlite_where=sa.text(RENEWAL),
        postgresql_where=sa.text(RENEWAL),
    )
    if bind.dialect.name == "sqlite" and _has_fts(bind):
        # Revision 0002's trigger and rebuild indexed every row there is.  Idempotent, like
        # 0002 and 0003: a database from before schema versions runs every revision over
        # what a newer schema made.
        bind.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS subject_search_progress (indexed_through INTEGER NOT NULL)"
        )
        bind.exec_driver_sql("DELETE FROM subject_search_progress")
        bind.exec_driver_sql(
            "INSERT INTO subject_search_progress SELECT coalesce(max(id), 0) FROM certificates"
        )
        _replace_triggers(bind, _GUARDED_TRIGGERS)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and _has_fts(bind):
        bind.exec_driver_sql(
            "INSERT INTO certificates_subject_fts(rowid, subject) "
            "SELECT id, subject FROM certificates "
            "WHERE id > (SELECT indexed_through FROM subject_search_progress) ORDER BY id"
        )
        _replace_triggers(bind, _0002_TRIGGERS)
        bind.exec_driver_sql("DROP TABLE subject_search_progress")
    op.drop_index("ix_certificates_replaces_serial", "certificates")
    op.drop_index("ix_certificates_revocations", "certificates")
    op.create_index("ix_certificates_replaces_serial", "certificates", ["replaces_serial"])
    op.create_index("ix_certificates_revocations", "certificates", REVOCATION_COLUMNS)
    op.create_index("ix_certificates_status", "certificates", ["status"])
    op.create_index("ix_certificates_subject", "certificates", ["subject"])
    op.create_index("ix_certificates_key_fingerprint", "certificates", ["key_fingerprint"])
    _key_ids_to_table(bind)
