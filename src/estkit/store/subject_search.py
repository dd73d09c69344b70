"""Case-insensitive substring search on certificate subjects, through the index that revision
0002 made (migrations/versions/0002_large_store_indexes.py) where there is one.

The meaning is the same on both backends and with or without the index: ``text`` anywhere in
the RFC 4514 subject, any case, ``%`` and ``_`` taken literally.  The index only narrows the
rows; the exact condition is always applied to what it returns.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, column, select, table, text
from sqlalchemy.sql.elements import ColumnElement

from estkit.store import schema

FTS_TABLE = "certificates_subject_fts"
"""SQLite: FTS5 trigram table over certificates.subject (and its shadow tables, same prefix)."""
TRIGRAM_INDEX = "ix_certificates_subject_trgm"
"""PostgreSQL: pg_trgm GIN index on certificates.subject."""
MIN_INDEXED = 3
"""Trigram indexes cannot look up shorter text: it is found by reading every subject."""


def is_search_index(name: str) -> bool:
    """Whether a database object is revision 0002's search index, which schema.py does not
    describe (FTS5 tables and GIN operator classes are outside SQLAlchemy's metadata)."""
    return name == TRIGRAM_INDEX or name.startswith(FTS_TABLE)


def _escape_like(value: str) -> str:
    return value.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _has_fts(connection: Connection) -> bool:
    found = connection.execute(
        text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": FTS_TABLE},
    ).first()
    return found is not None


def subject_contains(connection: Connection, value: str) -> ColumnElement[bool]:
    """The WHERE condition for subjects containing ``value`` (any case)."""
    subject = schema.certificates.c.subject
    if connection.dialect.name == "postgresql":
        # ILIKE on the bare column is what a gin_trgm_ops index serves (lower(subject) LIKE
        # would need an expression index).
        return subject.ilike(f"%{_escape_like(value)}%", escape="/")
    exact = subject.icontains(value, autoescape=True)
    if connection.dialect.name != "sqlite" or len(value) < MIN_INDEXED or not _has_fts(connection):
        return exact
    # An FTS5 phrase of a trigram table matches the substring case-insensitively, with no
    # metacharacters other than the quote.  Its case folding is Unicode-wide while SQLite's
    # lower() folds ASCII only, so it may return more rows than ``exact``, never fewer.
    fts = table(FTS_TABLE, column("rowid"), column("subject"))
    phrase = '"' + value.replace('"', '""') + '"'
    indexed = select(fts.c.rowid).where(fts.c.subject.match(phrase))
    return and_(schema.certificates.c.id.in_(indexed), exact)
