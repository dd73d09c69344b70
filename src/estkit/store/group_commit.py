"""Group commit: write transactions from many threads share one commit, and so one fsync.

Every certificate must be durable before its response leaves, so a naive store commits (and
fsyncs) once per enrollment and its throughput is capped by the disk's flush rate.  Here the
threads that want to write queue their work; one of them, the leader, runs everything queued
in one transaction and commits once.  A job that fails (a serial collision, a consumed
bootstrap secret) gets its own exception and the rest of its batch runs again without it; a
commit that fails fails every job in the batch, so nothing is ever reported written that
was not.  Jobs that arrive while a batch commits form the next batch, led by the first of
them, so no thread waits for work that is not its own for longer than one commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

T = TypeVar("T")

MAX_BATCH = 64
"""Jobs per transaction: enough to absorb a burst, small enough to bound a batch's latency."""


@dataclass(eq=False)
class _Job:
    work: Callable[[Connection], Any]
    ready: threading.Event | None = None
    """What the job waits on; only a job that queued behind a leader waits (a lone writer,
    the common case, leads its own batch at once and never needs one)."""
    leads: bool = False
    finished: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Runs ``work(connection)`` calls from any thread in shared write transactions."""

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Connection]],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._begin = begin
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._leader_active = False
        self._inside = threading.local()

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run work in a committed transaction; its result, or the exception it (or the
        commit) raised.  Returns only after the commit."""
        if getattr(self._inside, "batch", False):
            # A job that writes again would wait for the batch it is part of.
            raise RuntimeError("a group-commit job must use the connection it was given")
        job = _Job(work)
        with self._lock:
            self._queue.append(job)
            if not self._leader_active:
                self._leader_active = True
                job.leads = True
            else:
                job.ready = threading.Event()
        while not job.finished:
            if job.leads:
                job.leads = False
                self._lead()
            else:
                assert job.ready is not None  # a job that did not lead at once has one
                job.ready.wait()
                job.ready.clear()
        if job.error is not None:
            raise job.error
        return cast(T, job.result)

    def _lead(self) -> None:
        """Commit one batch, then pass the lead to the next waiting job (or give it up)."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leader_active = False
                else:
                    successor.leads = True
            for job in batch:
                job.finished = True
                if job.ready is not None:
                    job.ready.set()
            if successor is not None and successor.ready is not None:
                successor.ready.set()

    def _commit(self, batch: list[_Job]) -> None:
        """Run the batch in one transaction.  A job that refuses (a constraint it violates,
        an exception of its own) gets its error, and the others run again without it in a
        fresh transaction: failures are rare, and this spares every job a SAVEPOINT."""
        self._inside.batch = True
        try:
            with self._begin() as connection:
                for job in batch:
                    try:
                        job.result = job.work(connection)
                    except Exception as exc:
                        raise _JobRefused(job, exc) from exc
        except _JobRefused as refused:
            if _is_store_failure(refused.error):
                _fail(batch, refused.error)  # the database itself: no point retrying here
            else:
                _fail([refused.job], refused.error)
                others = [job for job in batch if job is not refused.job]
                if others:
                    self._commit(others)
        except BaseException as exc:  # begin or commit failed: nothing was written
            _fail(batch, exc)
        finally:
            self._inside.batch = False


class _JobRefused(Exception):
    def __init__(self, job: _Job, error: Exception) -> None:
        super().__init__(str(error))
        self.job = job
        self.error = error


def _is_store_failure(error: Exception) -> bool:
    """An error of the database or the connection, as opposed to the job's own refusal."""
    return isinstance(error, SQLAlchemyError) and not isinstance(error, IntegrityError)


def _fail(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        job.result, job.error = None, error
