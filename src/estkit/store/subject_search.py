"""Case-insensitive substring search on certificate subjects, through the index that revision
0002 made (migrations/versions/0002_large_store_indexes.py) where there is one.

The meaning is the same on both backends and with or without the index: ``text`` anywhere in
the RFC 4514 subject, any case (ASCII case folding on SQLite, as its ``lower()``), ``%`` and
``_`` taken literally.  The index only narrows the rows; the exact condition is always applied
to what it returns.

SQLite's FTS5 index is brought up to date in batches (``CATCH_UP_SQL``, revision 0004), not by
each enrollment's INSERT: rows above ``subject_search_progress`` are not in it yet, and a
search reads them directly.

Plain SQL for the DBAPI driver (no SQLAlchemy): ``estkit cert list`` runs it through
store/certificate_listing.py, whose start-up must stay small.
"""

from __future__ import annotations

from collections.abc import Collection

FTS_TABLE = "certificates_subject_fts"
"""SQLite: FTS5 trigram table over certificates.subject (and its shadow tables, same prefix)."""
TRIGRAM_INDEX = "ix_certificates_subject_trgm"
"""PostgreSQL: pg_trgm GIN index on certificates.subject."""
MIN_INDEXED = 3
"""Trigram indexes cannot look up shorter text: it is found by reading every subject."""
PROGRESS_TABLE = "subject_search_progress"
"""SQLite: one row, the highest certificate id the FTS5 table holds (revision 0004)."""
SEARCH_TABLES_SQL = (
    "SELECT name FROM sqlite_master WHERE type = 'table' "
    "AND name IN ('certificates_subject_fts', 'subject_search_progress')"
)
"""SQLite: which of the two exist.  No FTS5 table where SQLite lacks the trigram tokenizer;
an FTS5 table without progress at revisions 0002-0003, where a trigger indexed every row."""

_NOT_INDEXED_YET = (
    " UNION ALL SELECT id FROM certificates "
    "WHERE id > (SELECT indexed_through FROM subject_search_progress)"
)

CATCH_UP_ROWS = 20_000
"""At most this many ids (certificates, less any deleted) per catch-up transaction, so that
it holds the write lock briefly."""
PENDING_SQL = (
    "SELECT indexed_through, (SELECT max(id) FROM certificates) FROM subject_search_progress"
)
"""(highest id indexed, highest id there is): a read, to skip the write when nothing is new."""
CATCH_UP_SQL = (
    "INSERT INTO certificates_subject_fts(rowid, subject) "
    "SELECT id, subject FROM certificates WHERE id > ? AND id <= ? ORDER BY id",
    "UPDATE subject_search_progress SET indexed_through = ?",
)
"""Index the rows in (through, upto] and move the mark, in one write transaction whose
``through`` was read inside it.  SQLite has one writer at a time and a new row's id is above
every committed one, so no row at or below the mark can appear later."""


def is_search_index(name: str) -> bool:
    """Whether a database object is revision 0002's search index, which schema.py does not
    describe (FTS5 tables and GIN operator classes are outside SQLAlchemy's metadata)."""
    return name in (TRIGRAM_INDEX, PROGRESS_TABLE) or name.startswith(FTS_TABLE)


def _like_pattern(value: str) -> str:
    escaped = value.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def subject_condition(
    backend: str, value: str, search_tables: Collection[str]
) -> tuple[str, list[str]]:
    """The WHERE condition for subjects containing ``value`` (any case) and its parameters,
    written with ``?`` placeholders; ``backend`` is 'sqlite' or 'postgresql', and
    ``search_tables`` what SEARCH_TABLES_SQL found (SQLite)."""
    if backend == "postgresql":
        # ILIKE on the bare column is what a gin_trgm_ops index serves (lower(subject) LIKE
        # would need an expression index).
        return "subject ILIKE ? ESCAPE '/'", [_like_pattern(value)]
    exact = "lower(subject) LIKE lower(?) ESCAPE '/'"
    if len(value) < MIN_INDEXED or FTS_TABLE not in search_tables:
        return exact, [_like_pattern(value)]
    # An FTS5 phrase of a trigram table matches the substring case-insensitively, with no
    # metacharacters other than the quote.  Its case folding is Unicode-wide while SQLite's
    # lower() folds ASCII only, so it may return more rows than ``exact``, never fewer.
    phrase = '"' + value.replace('"', '""') + '"'
    candidates = "SELECT rowid FROM certificates_subject_fts WHERE subject MATCH ?"
    if PROGRESS_TABLE in search_tables:
        # ... and the rows not indexed yet, by their ids (a range of the table's key)
        candidates += _NOT_INDEXED_YET
    return f"id IN ({candidates}) AND {exact}", [phrase, _like_pattern(value)]
