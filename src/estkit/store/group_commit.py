"""Group commit: write transactions from many threads and coroutines share one commit, and
so one fsync.

Every certificate must be durable before its response leaves, so a naive store commits (and
fsyncs) once per enrollment and its throughput is capped by the disk's flush rate.  Here the
callers that want to write queue their work; one thread, the leader, runs everything queued
in one transaction and commits once.  A job that fails (a serial collision, a consumed
bootstrap secret) gets its own exception and the rest of its batch runs again without it; a
commit that fails fails every job in the batch, so nothing is ever reported written that
was not.

Two kinds of callers:
- a thread (``run``) waits for its job; when no batch is being committed it leads one at
  once, otherwise the first thread queued behind a batch leads the next, so no thread waits
  for work that is not its own for longer than one commit;
- a coroutine (``submit``) must not block its event loop, so its jobs are led by the
  group's writer thread, and every job of a batch that came from one event loop is resolved
  by a single wake-up of that loop.  A hand-off between threads costs far more CPU than the
  SQL of an enrollment, so this is what lets a busy server pay it per batch, not per job.

Under load the writer thread lets a batch gather before it commits (``COMMIT_DELAY``), as
PostgreSQL's ``commit_delay`` and MySQL's ``binlog_group_commit_sync_delay`` do.  A commit,
its flush and the hand-offs around it cost about as much CPU as all the rest of an
enrollment's store work, and a server's own event loop hands over its enrollments one at a
time, so without the wait nearly every batch held one job even at full load.  An idle
server's lone enrollment is committed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

T = TypeVar("T")

MAX_BATCH = 64
"""Jobs per transaction: enough to absorb a burst, small enough to bound a batch's latency."""

COMMIT_DELAY = 0.001
"""Seconds the writer thread waits for more jobs before it commits, when the previous commit
ended less than two of these ago (the server is busy); a full batch is committed at once.
Keep-alive enrollments on the development machine, four clients: three to four jobs per
commit instead of one, about a quarter less server CPU per enrollment and more enrollments
per second (bench/RESULTS.md, session 7); 2 ms cost throughput with that few clients."""


@dataclass(eq=False)
class _Job:
    work: Callable[[Connection], Any]
    ready: threading.Event | None = None
    """What a thread's job waits on; only a job that queued behind a leader waits (a lone
    writer, the common case, leads its own batch at once and never needs one)."""
    future: asyncio.Future[Any] | None = None
    """A coroutine's job: resolved on its event loop once the batch is committed."""
    leads: bool = False
    finished: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Runs ``work(connection)`` calls from any thread or coroutine in shared write
    transactions."""

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Connection]],
        max_batch: int = MAX_BATCH,
        commit_delay: float = COMMIT_DELAY,
    ) -> None:
        self._begin = begin
        self._max_batch = max_batch
        self._commit_delay = commit_delay
        self._last_commit_end = -float("inf")
        self._gathering = False
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._leader_active = False
        self._inside = threading.local()
        self._writer_turn = threading.Condition(self._lock)
        self._writer_leads = False
        self._writer: threading.Thread | None = None
        self._closed = False

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

    async def submit(self, work: Callable[[Connection], T]) -> T:
        """``run`` for a coroutine: the event loop goes on while the writer thread commits."""
        job = _Job(work, future=asyncio.get_running_loop().create_future())
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.append(job)
            if not self._leader_active:
                self._leader_active = True
                self._wake_writer()
            elif self._gathering and len(self._queue) >= self._max_batch:
                self._writer_turn.notify()  # the batch is full: no need to wait longer
        assert job.future is not None
        return cast(T, await job.future)

    def close(self) -> None:
        """Stop the writer thread once it has committed what is queued."""
        with self._lock:
            self._closed = True
            self._writer_turn.notify()
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()

    def _wake_writer(self) -> None:
        """Give the lead to the writer thread (started on first use); the lock is held."""
        self._writer_leads = True
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._writer_loop, name="estkit-group-commit", daemon=True
            )
            self._writer.start()
        self._writer_turn.notify()

    def _writer_loop(self) -> None:
        while True:
            with self._lock:
                while not self._writer_leads and not self._closed:
                    self._writer_turn.wait()
                if not self._writer_leads:
                    return  # closed, nothing to lead
                self._writer_leads = False
                self._gather()
            self._lead()

    def _gather(self) -> None:
        """When busy, wait up to the commit delay for the batch to fill (COMMIT_DELAY says
        why); the lock is held, and given up while waiting."""
        now = time.monotonic()
        if now - self._last_commit_end >= 2 * self._commit_delay:
            return
        deadline = now + self._commit_delay
        self._gathering = True
        try:
            while len(self._queue) < self._max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._writer_turn.wait(remaining)
        finally:
            self._gathering = False

    def _lead(self) -> None:
        """Commit one batch, then pass the lead on: to the next job's thread if a thread
        waits for it, to the writer thread for a coroutine's job, or give it up."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                self._last_commit_end = time.monotonic()
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leader_active = False
                elif successor.future is not None:
                    self._wake_writer()
                else:
                    successor.leads = True
            _settle(batch)
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


def _settle(batch: list[_Job]) -> None:
    """Mark a committed batch finished, waking threads' jobs one by one and coroutines'
    jobs with one call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in batch:
        job.finished = True
        if job.future is not None:
            by_loop.setdefault(job.future.get_loop(), []).append(job)
        elif job.ready is not None:
            job.ready.set()
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, jobs)


def _resolve(jobs: list[_Job]) -> None:
    """On the jobs' event loop: hand each coroutine its result or its exception."""
    for job in jobs:
        future = job.future
        if future is None or future.done():  # done: the coroutine was cancelled
            continue
        if job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)
