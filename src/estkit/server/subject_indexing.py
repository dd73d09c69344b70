"""The server's subject-index task: SQLite's subject search index, brought up to date every
second with the certificates recorded since (store/subject_index.py).

Every worker runs it; they share the progress mark, so whichever comes first does the work
and the others find nothing new.  It runs on a worker thread and takes the write lock only
when there is something to index.
"""

from __future__ import annotations

import asyncio
import logging

from estkit.server.periodic import run_periodically
from estkit.store import Store

log = logging.getLogger("estkit.store")

POLL_SECONDS = 1.0


def start_subject_indexing(store: Store, interval: float = POLL_SECONDS) -> asyncio.Task[None]:
    """Keep the subject index current in the background; cancel to stop."""
    job = run_periodically(
        store.index_new_subjects, lambda: interval, "index new certificate subjects", log
    )
    return asyncio.create_task(job, name="subject-indexing")
