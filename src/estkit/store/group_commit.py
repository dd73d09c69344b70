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

On SQLite (``begin_on_loop``) a batch of coroutines' jobs runs on their own event loop,
and only its commit is the writer thread's.  The statements of a batch are tens of
microseconds of work on a local file, but each time the writer thread comes back from a
wait (for work, for a batch to gather, for the disk) it has to win the GIL from the busy
event loop, and those hand-overs cost more CPU than the statements: a keep-alive enrollment
cost 10 to 13% more server CPU with its batch on the writer thread (bench/RESULTS.md,
session 8).  The loop never waits for the database: its transaction begins only if the
write lock is free at once (another process or connection may hold it); otherwise the loop
tries again a few times (``BUSY_RETRIES``) and then the writer thread leads the batch and
waits for the lock, as it does on PostgreSQL, whose statements are round trips.

Under load the batch gathers before it runs (``COMMIT_DELAY``), on the writer thread or the
event loop, as PostgreSQL's ``commit_delay`` and MySQL's ``binlog_group_commit_sync_delay``
do.  A commit, its flush and the hand-offs around it cost about as much CPU as all the rest
of an enrollment's store work, and a server's own event loop hands over its enrollments one
at a time, so without the wait nearly every batch held one job even at full load.  An idle
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
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

T = TypeVar("T")

MAX_BATCH = 64
"""Jobs per transaction: enough to absorb a burst, small enough to bound a batch's latency."""

COMMIT_DELAY = 0.001
"""Seconds a batch waits for more jobs before it runs, when the previous commit ended less
than two of these ago (the server is busy); a full batch runs at once.
Keep-alive enrollments on the development machine, four clients, batches on the writer
thread: three to four jobs per commit instead of one, about a quarter less server CPU per
enrollment and more enrollments per second (bench/RESULTS.md, session 7).  With batches on
the event loop (session 8) about two jobs per commit; 2 ms gave 14% less CPU per enrollment
but 27% fewer enrollments per second with that few clients."""


BUSY_RETRIES = 3
BUSY_DELAY = 0.001
"""While another process holds the write lock (with several workers on one SQLite file, its
commit and fsync), an event loop tries again this many times this many seconds apart before
the writer thread takes the batch: about a third of the loops' attempts found the lock held
with two workers, and the writer thread's batches cost more CPU."""


class LoopTransaction(Protocol):
    """A write transaction begun on an event loop, committed on the writer thread."""

    @property
    def connection(self) -> Connection: ...

    def commit(self) -> None:
        """On the writer thread: may wait for the disk.  After a failure nothing is written
        and the transaction is gone."""

    def rollback(self) -> None:
        """On the event loop: never waits."""


BeginOnLoop = Callable[[], LoopTransaction | None]
"""Begins a write transaction at once, or answers None when the database's write lock is held
elsewhere: it never waits for the lock."""


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
        begin_on_loop: BeginOnLoop | None = None,
        busy_retries: int = BUSY_RETRIES,
        busy_delay: float = BUSY_DELAY,
    ) -> None:
        """``begin`` opens a batch's transaction on the thread that leads it;
        ``begin_on_loop``, where given, lets coroutines' batches run on their event loop
        (their jobs must then never block: SQL on a local file), trying ``busy_retries``
        times ``busy_delay`` apart while the write lock is held elsewhere."""
        self._begin = begin
        self._begin_on_loop = begin_on_loop
        self._busy_retries = busy_retries
        self._busy_delay = busy_delay
        self._busy_tries = 0
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
        self._to_commit: tuple[LoopTransaction, list[_Job]] | None = None
        """A batch run on an event loop, for the writer thread to commit."""
        self._loop_lead: asyncio.AbstractEventLoop | None = None
        """The event loop given the lead, until it runs its batch."""
        self._loop_timer: asyncio.TimerHandle | None = None
        """When that loop's gathering batch is to be run."""

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
                self._give_lead(job)
            elif self._gathering and len(self._queue) >= self._max_batch:
                self._end_gathering()  # the batch is full: no need to wait longer
        assert job.future is not None
        return cast(T, await job.future)

    def close(self) -> None:
        """Stop the writer thread once it has committed what is queued."""
        with self._lock:
            self._closed = True
            if self._loop_lead is not None:
                # A loop's batch that has not run yet (its loop may never run again): the
                # writer thread commits it, and the loop's own turn finds it gone.
                self._loop_lead = None
                self._gathering = False
                self._wake_writer()
            else:
                self._writer_turn.notify()  # a writer gathering its batch commits it now
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()

    def _give_lead(self, job: _Job) -> None:
        """Make the next batch, which starts with job, someone's to lead; the lock is held.
        A thread's job leads it on its own thread (the caller wakes that thread); a
        coroutine's, on its event loop or else on the writer thread."""
        if job.future is None:
            job.leads = True
            return
        if self._begin_on_loop is not None:
            loop = job.future.get_loop()
            try:
                loop.call_soon_threadsafe(self._loop_turn)
            except RuntimeError:  # a closed loop: the writer thread leads instead
                pass
            else:
                self._loop_lead = loop
                return
        self._wake_writer()

    def _wake_writer(self) -> None:
        """Give the lead to the writer thread; the lock is held."""
        self._writer_leads = True
        self._notify_writer()

    def _notify_writer(self) -> None:
        """The writer thread has a batch to lead or to commit (started on first use, and
        again after ``close`` for a batch an event loop ran meanwhile); the lock is held."""
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._writer_loop, name="estkit-group-commit", daemon=True
            )
            self._writer.start()
        self._writer_turn.notify()

    def _writer_loop(self) -> None:
        while True:
            with self._lock:
                while not self._writer_leads and self._to_commit is None and not self._closed:
                    self._writer_turn.wait()
                prepared, self._to_commit = self._to_commit, None
                if prepared is None:
                    if not self._writer_leads:
                        self._writer = None  # closed, nothing to lead
                        return
                    self._writer_leads = False
                    self._gather()
            if prepared is not None:
                self._commit_prepared(*prepared)
            else:
                self._lead()

    def _end_gathering(self) -> None:
        """Cut short the wait for a batch to fill, on the writer thread or on the event loop
        that leads; the lock is held (any thread)."""
        self._writer_turn.notify()
        if self._gathering and self._loop_lead is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop has no batch to run
                self._loop_lead.call_soon_threadsafe(self._lead_on_loop)

    # -- batches run on an event loop (begin_on_loop) --

    def _loop_turn(self) -> None:
        """On the event loop given the lead: run its batch now, or once it has had the
        commit delay to gather when the store is busy (as ``_gather`` does)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop_lead is not loop:
                return
            if (
                self._busy(time.monotonic())
                and len(self._queue) < self._max_batch
                and not self._closed
            ):
                self._gathering = True
                self._loop_timer = loop.call_later(self._commit_delay, self._lead_on_loop)
                return
        self._lead_on_loop()

    def _lead_on_loop(self) -> None:
        """Run the batch's jobs on this event loop and hand its commit to the writer thread;
        when the write lock is held elsewhere, the writer thread leads the batch instead."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop_lead is not loop:
                return  # a timer or a wake-up for a batch that has already run
            self._loop_lead = None
            self._gathering = False
            timer, self._loop_timer = self._loop_timer, None
            count = 0
            for job in self._queue[: self._max_batch]:
                if job.future is None or job.future.get_loop() is not loop:
                    break
                count += 1
            batch = self._queue[:count]
            del self._queue[:count]
            successor = None if batch else self._queue[0]
            if successor is not None:  # a thread's job, or another loop's, leads instead
                self._give_lead(successor)
        if timer is not None:
            timer.cancel()
        if successor is not None:
            if successor.ready is not None:
                successor.ready.set()
            return
        try:
            transaction, jobs = self._run_on_loop(batch)
        except BaseException as exc:  # not a job's refusal: the batch fails, the lead moves on
            _fail([job for job in batch if job.error is None], exc)
            self._finish(batch)
            raise
        if transaction is None and jobs:  # the write lock is busy
            with self._lock:
                self._queue[:0] = jobs
                if self._busy_tries < self._busy_retries and not self._closed:
                    # Another process is committing: try again in a moment, on the loop.
                    self._busy_tries += 1
                    self._loop_lead = loop
                    self._loop_timer = loop.call_later(self._busy_delay, self._lead_on_loop)
                else:  # held for longer: the writer thread waits for it
                    self._busy_tries = 0
                    self._wake_writer()
            _settle([job for job in batch if job not in jobs])
            return
        self._busy_tries = 0
        if transaction is None:  # every job refused or failed: nothing to commit
            self._finish(batch)
            return
        with self._lock:
            self._to_commit = (transaction, batch)
            self._notify_writer()

    def _run_on_loop(self, jobs: list[_Job]) -> tuple[LoopTransaction | None, list[_Job]]:
        """The jobs run in a transaction begun on the loop: (the transaction, the jobs in
        it).  (None, jobs) when the write lock is busy: those still need a batch; (None, [])
        when every job has its error.  A refused job is dropped and the others run again in
        a new transaction, as ``_commit`` does."""
        assert self._begin_on_loop is not None
        self._inside.batch = True
        try:
            while jobs:
                try:
                    transaction = self._begin_on_loop()
                except Exception as exc:
                    _fail(jobs, exc)
                    return None, []
                if transaction is None:
                    return None, jobs
                try:
                    refused = _run_jobs(jobs, transaction.connection)
                except BaseException:
                    with contextlib.suppress(Exception):
                        transaction.rollback()
                    raise
                if refused is None:
                    return transaction, jobs
                try:
                    transaction.rollback()
                except Exception as exc:
                    _fail(jobs, exc)
                    return None, []
                jobs = _after_refusal(jobs, refused)
            return None, []
        finally:
            self._inside.batch = False

    def _commit_prepared(self, transaction: LoopTransaction, batch: list[_Job]) -> None:
        """On the writer thread: commit a batch an event loop ran."""
        try:
            transaction.commit()
        except BaseException as exc:  # nothing was written
            _fail([job for job in batch if job.error is None], exc)
        finally:
            self._finish(batch)

    def _busy(self, now: float) -> bool:
        """The previous commit ended less than two commit delays ago: a batch may gather."""
        return now - self._last_commit_end < 2 * self._commit_delay

    def _gather(self) -> None:
        """When busy, wait up to the commit delay for the batch to fill (COMMIT_DELAY says
        why); the lock is held, and given up while waiting."""
        now = time.monotonic()
        if not self._busy(now):
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
        """Commit one batch, then pass the lead on (``_finish``)."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._commit(batch)
        finally:
            self._finish(batch)

    def _finish(self, batch: list[_Job]) -> None:
        """After a batch's commit (or its failure): pass the lead on, and tell its jobs."""
        with self._lock:
            self._last_commit_end = time.monotonic()
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._leader_active = False
            else:
                self._give_lead(successor)
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
                refused = _run_jobs(batch, connection)
                if refused is not None:
                    raise refused
        except _JobRefused as refused:
            others = _after_refusal(batch, refused)
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


def _run_jobs(jobs: list[_Job], connection: Connection) -> _JobRefused | None:
    """Run each job's work, keeping its result; the first job to raise stops the run."""
    for job in jobs:
        try:
            job.result = job.work(connection)
        except Exception as exc:
            return _JobRefused(job, exc)
    return None


def _after_refusal(jobs: list[_Job], refused: _JobRefused) -> list[_Job]:
    """The jobs to run again, without the one that refused (which gets its error); none when
    the database itself failed (every job gets that error: no point retrying here)."""
    if _is_store_failure(refused.error):
        _fail(jobs, refused.error)
        return []
    _fail([refused.job], refused.error)
    return [job for job in jobs if job is not refused.job]


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
