"""Case-insensitive substring search on certificate subjects, through the index that revision
0002 made (migrations/versions/0002_large_store_indexes.py) where there is one.

The meaning is the same on both backends and with or without the index: ``text`` anywhere in
the RFC 4514 subject, any case (ASCII case folding on SQLite, as its ``lower()``), ``%`` and
``_`` taken literally.  The index only narrows the rows; the exact condition is always applied
to what it returns.

Plain SQL for the DBAPI driver (no SQLAlchemy): ``estkit cert list`` runs it through
store/certificate_listing.py, whose start-up must stay small.
"""

from __future__ import annotations

FTS_TABLE = "certificates_subject_fts"
"""SQLite: FTS5 trigram table over certificates.subject (and its shadow tables, same prefix)."""
TRIGRAM_INDEX = "ix_certificates_subject_trgm"
"""PostgreSQL: pg_trgm GIN index on certificates.subject."""
MIN_INDEXED = 3
"""Trigram indexes cannot look up shorter text: it is found by reading every subject."""
HAS_FTS_SQL = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'certificates_subject_fts'"
)
"""SQLite: whether revision 0002 could make the FTS5 table (SQLite without trigram cannot)."""


def is_search_index(name: str) -> bool:
    """Whether a database object is revision 0002's search index, which schema.py does not
    describe (FTS5 tables and GIN operator classes are outside SQLAlchemy's metadata)."""
    return name == TRIGRAM_INDEX or name.startswith(FTS_TABLE)


def _like_pattern(value: str) -> str:
    escaped = value.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def subject_condition(backend: str, value: str, has_fts: bool) -> tuple[str, list[str]]:
    """The WHERE condition for subjects containing ``value`` (any case) and its parameters,
    written with ``?`` placeholders; ``backend`` is 'sqlite' or 'postgresql'."""
    if backend == "postgresql":
        # ILIKE on the bare column is what a gin_trgm_ops index serves (lower(subject) LIKE
        # would need an expression index).
        return "subject ILIKE ? ESCAPE '/'", [_like_pattern(value)]
    exact = "lower(subject) LIKE lower(?) ESCAPE '/'"
    if len(value) < MIN_INDEXED or not has_fts:
        return exact, [_like_pattern(value)]
    # An FTS5 phrase of a trigram table matches the substring case-insensitively, with no
    # metacharacters other than the quote.  Its case folding is Unicode-wide while SQLite's
    # lower() folds ASCII only, so it may return more rows than ``exact``, never fewer.
    phrase = '"' + value.replace('"', '""') + '"'
    indexed = "id IN (SELECT rowid FROM certificates_subject_fts WHERE subject MATCH ?)"
    return f"{indexed} AND {exact}", [phrase, _like_pattern(value)]
