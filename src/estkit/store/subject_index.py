"""Keeping SQLite's subject search index current in batches (revision 0004).

An enrollment's INSERT no longer updates the FTS5 table: each transaction that did wrote a new
index segment, about a third of the pages the commit had to write and fsync.  The server
calls ``index_new_subjects`` every second instead (server/subject_indexing.py), and one
catch-up indexes everything recorded since the last, as one segment.  A search meanwhile
reads the rows not indexed yet directly (store/subject_search.py), so it misses none.
"""

from __future__ import annotations

from sqlalchemy import Connection

from estkit.store.database import Database, driver_execute
from estkit.store.subject_search import (
    CATCH_UP_ROWS,
    CATCH_UP_SQL,
    PENDING_SQL,
    PROGRESS_TABLE,
    SEARCH_TABLES_SQL,
)


class SubjectIndexTable(Database):
    _has_progress: bool | None = None
    """Whether this store has the progress table (SQLite with FTS5 trigram, at revision
    0004 or later), looked up once."""

    def index_new_subjects(self, limit: int = CATCH_UP_ROWS) -> int:
        """Index the certificates recorded since the last catch-up, oldest first, up to
        ``limit`` ids on; returns how many.  Nothing to do on PostgreSQL, whose trigram
        index follows each INSERT, nor on SQLite without FTS5 trigram, where a search reads
        every row."""
        if not self.batches_subject_index():
            return 0
        through, newest = self._read(lambda c: driver_execute(c, PENDING_SQL).fetchone())
        if newest is None or newest <= through:
            return 0  # nothing new: no write transaction, no lock taken

        def work(connection: Connection) -> int:
            # Read again under the write lock: another worker may have caught up meanwhile.
            through, newest = driver_execute(connection, PENDING_SQL).fetchone()
            upto = min(newest or 0, through + limit)
            if upto <= through:
                return 0
            insert, mark = CATCH_UP_SQL
            cursor = driver_execute(connection, insert, (through, upto))
            indexed = int(cursor.rowcount)
            cursor.close()
            driver_execute(connection, mark, (upto,)).close()
            return indexed

        return self._write(work, alone=True)

    def batches_subject_index(self) -> bool:
        """Whether this store's subject index is kept by ``index_new_subjects``."""
        if self._has_progress is None:
            if not self.local_reads:
                self._has_progress = False
            else:
                # The same look-up as the listing's (store/certificate_listing.py).
                tables = self._read(lambda c: driver_execute(c, SEARCH_TABLES_SQL).fetchall())
                self._has_progress = (PROGRESS_TABLE,) in tables
        return self._has_progress
