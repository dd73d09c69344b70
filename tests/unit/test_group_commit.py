"""Group commit on a real SQLite file: shared commits, per-job failures, all-or-nothing commits,
for threads and for coroutines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from estkit.store import group_commit
from estkit.store.database import LoopWriter, _engines
from estkit.store.group_commit import GroupCommit


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Engine]:
    engine, reader = _engines(f"sqlite:///{tmp_path / 'group.db'}", 5.0)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql(
            "CREATE TABLE item (name TEXT PRIMARY KEY, parent INTEGER REFERENCES parent(id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
    yield engine
    engine.dispose()
    reader.dispose()


def names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(text("SELECT name FROM item"))}


def insert(name: str, parent: int | None = None):  # type: ignore[no-untyped-def]
    def work(connection: Connection) -> str:
        connection.execute(
            text("INSERT INTO item (name, parent) VALUES (:n, :p)"), {"n": name, "p": parent}
        )
        return name

    return work


def commits_of(engine: Engine) -> list[int]:
    counted: list[int] = []
    event.listen(engine, "commit", lambda _connection: counted.append(1))
    return counted


def run_behind_a_held_batch(group: GroupCommit, jobs: list, waiting: int) -> list:  # type: ignore[type-arg]
    """Hold the first batch open until ``waiting`` more jobs have queued, so they form one
    batch together; returns each job's result or exception."""
    release = threading.Event()

    def held(connection: Connection) -> str:
        release.wait(5)
        return "held"

    def attempt(work):  # type: ignore[no-untyped-def]
        try:
            return group.run(work)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(jobs) + 1) as pool:
        first = pool.submit(attempt, held)
        while not group._leader_active:
            time.sleep(0.001)
        futures = [pool.submit(attempt, job) for job in jobs]
        while len(group._queue) < waiting:
            time.sleep(0.001)
        release.set()
        assert first.result() == "held"
        return [future.result() for future in futures]


def test_concurrent_writes_share_one_commit(writer: Engine) -> None:
    group = GroupCommit(writer.begin)
    commits = commits_of(writer)
    jobs = [insert(f"n{i}") for i in range(20)]
    results = run_behind_a_held_batch(group, jobs, waiting=20)
    assert results == [f"n{i}" for i in range(20)]
    assert names(writer) == {f"n{i}" for i in range(20)}
    assert len(commits) == 2  # the held batch, then all twenty together


def test_a_failing_job_is_refused_alone_and_the_others_retried(writer: Engine) -> None:
    group = GroupCommit(writer.begin)
    group.run(insert("taken"))
    commits = commits_of(writer)
    jobs = [insert("a"), insert("taken"), insert("b")]
    results = run_behind_a_held_batch(group, jobs, waiting=3)
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], IntegrityError)
    assert names(writer) == {"taken", "a", "b"}
    assert len(commits) == 2  # the held batch; the retry of "a" and "b" (the first rolled back)


def test_a_database_failure_fails_the_batch_without_retries(writer: Engine) -> None:
    group = GroupCommit(writer.begin)
    commits = commits_of(writer)

    def broken(connection: Connection) -> None:
        connection.execute(text("INSERT INTO missing_table VALUES (1)"))

    results = run_behind_a_held_batch(group, [insert("a"), broken, insert("b")], waiting=3)
    assert all(isinstance(result, OperationalError) for result in results)
    assert names(writer) == set()
    assert len(commits) == 1  # only the held batch


def test_a_failed_commit_fails_every_job_and_writes_nothing(writer: Engine) -> None:
    group = GroupCommit(writer.begin)
    # The deferred foreign key is checked at COMMIT: the whole batch's commit fails.
    jobs = [insert("a"), insert("orphan", parent=99), insert("b")]
    results = run_behind_a_held_batch(group, jobs, waiting=3)
    assert all(isinstance(result, IntegrityError) for result in results)
    assert names(writer) == set()


def test_a_lone_job_keeps_its_own_exception(writer: Engine) -> None:
    group = GroupCommit(writer.begin)

    def refuse(connection: Connection) -> None:
        insert("gone")(connection)
        raise LookupError("refused by the job")

    with pytest.raises(LookupError, match="refused by the job"):
        group.run(refuse)
    assert names(writer) == set()
    assert group.run(insert("next")) == "next"  # the lead was given up


def test_a_job_may_not_write_through_the_group_again(writer: Engine) -> None:
    group = GroupCommit(writer.begin)

    def nested(connection: Connection) -> None:
        group.run(insert("inner"))

    with pytest.raises(RuntimeError, match="must use the connection it was given"):
        group.run(nested)
    assert names(writer) == set()


def test_many_threads_all_get_their_rows_durably(writer: Engine) -> None:
    group = GroupCommit(writer.begin)
    commits = commits_of(writer)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: group.run(insert(f"t{i}")), range(200)))
    assert results == [f"t{i}" for i in range(200)]
    assert names(writer) == {f"t{i}" for i in range(200)}
    assert 1 <= len(commits) <= 200


# Coroutines: jobs led by the writer thread, or run on their event loop and committed on the
# writer thread (SQLite's begin_on_loop), resolved with one wake-up of the loop per batch.

WRITER = "estkit-group-commit"


class Groups:
    """GroupCommits whose coroutines' batches the writer thread leads, or their event loop."""

    def __init__(self, writer: Engine, leads: str) -> None:
        self.writer = writer
        self.loop_writer = None
        if leads == "event-loop":
            self.loop_writer = LoopWriter(writer.url.render_as_string(False), 5.0)

    def make(self, **options) -> GroupCommit:  # type: ignore[no-untyped-def]
        begin_on_loop = None if self.loop_writer is None else self.loop_writer.begin
        return GroupCommit(self.writer.begin, begin_on_loop=begin_on_loop, **options)

    def commits(self) -> list[int]:
        """Commits from now on, by either connection."""
        counted = commits_of(self.writer)
        if self.loop_writer is not None:
            event.listen(self.loop_writer._engine, "commit", lambda _c: counted.append(1))
        return counted


@pytest.fixture(params=["writer-thread", "event-loop"])
def groups(request: pytest.FixtureRequest, writer: Engine) -> Iterator[Groups]:
    made = Groups(writer, request.param)
    yield made
    if made.loop_writer is not None:
        made.loop_writer.close()


def submit_behind_a_held_batch(group: GroupCommit, jobs: list, waiting: int) -> list:  # type: ignore[type-arg]
    """run_behind_a_held_batch for coroutines on one event loop: the batch held open by a
    thread's job until ``waiting`` coroutines' jobs have queued."""
    release = threading.Event()

    def held(connection: Connection) -> str:
        release.wait(5)
        return "held"

    async def main() -> list:  # type: ignore[type-arg]
        holder = asyncio.create_task(asyncio.to_thread(group.run, held))
        while not group._leader_active:
            await asyncio.sleep(0.001)
        tasks = [asyncio.create_task(group.submit(job)) for job in jobs]
        while len(group._queue) < waiting:
            await asyncio.sleep(0.001)
        release.set()
        assert await holder == "held"
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def test_coroutines_share_one_commit_and_one_wake_up(
    groups: Groups, writer: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = groups.make()
    commits = groups.commits()
    wake_ups: list[int] = []
    resolve = group_commit._resolve
    monkeypatch.setattr(
        group_commit, "_resolve", lambda jobs: (wake_ups.append(len(jobs)), resolve(jobs))
    )
    results = submit_behind_a_held_batch(group, [insert(f"c{i}") for i in range(20)], 20)
    assert results == [f"c{i}" for i in range(20)]
    assert names(writer) == {f"c{i}" for i in range(20)}
    assert len(commits) == 2  # the held batch, then all twenty together
    assert wake_ups == [20]  # one call on the loop for the whole batch
    group.close()


def test_a_coroutine_job_that_fails_gets_its_own_exception(groups: Groups, writer: Engine) -> None:
    group = groups.make()
    group.run(insert("taken"))
    results = submit_behind_a_held_batch(
        group, [insert("a"), insert("taken"), insert("b")], waiting=3
    )
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], IntegrityError)
    assert names(writer) == {"taken", "a", "b"}
    group.close()


def test_threads_and_coroutines_together_all_get_their_rows(groups: Groups, writer: Engine) -> None:
    group = groups.make()
    commits = groups.commits()

    async def coroutines() -> list[str]:
        return list(await asyncio.gather(*(group.submit(insert(f"c{i}")) for i in range(200))))

    with ThreadPoolExecutor(max_workers=5) as pool:
        threads = pool.map(lambda i: group.run(insert(f"t{i}")), range(200))
        loop_results = asyncio.run(coroutines())
        thread_results = list(threads)
    assert loop_results == [f"c{i}" for i in range(200)]
    assert thread_results == [f"t{i}" for i in range(200)]
    assert names(writer) == {f"c{i}" for i in range(200)} | {f"t{i}" for i in range(200)}
    assert len(commits) < 400  # some commits were shared
    group.close()


def test_a_cancelled_coroutine_still_has_its_job_committed(writer: Engine) -> None:
    group = GroupCommit(writer.begin)
    started = threading.Event()
    release = threading.Event()

    def slow(connection: Connection) -> str:
        started.set()
        release.wait(5)
        return insert("slow")(connection)

    async def main() -> None:
        task = asyncio.create_task(group.submit(slow))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await group.submit(insert("after")) == "after"  # the writer went on

    asyncio.run(main())
    assert names(writer) == {"slow", "after"}
    group.close()


def test_close_stops_the_writer_thread_and_refuses_more_work(
    groups: Groups, writer: Engine
) -> None:
    group = groups.make()
    assert asyncio.run(group.submit(insert("one"))) == "one"
    thread = group._writer
    assert thread is not None and thread.is_alive()
    group.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="the store is closed"):
        asyncio.run(group.submit(insert("two")))
    assert names(writer) == {"one"}


# Under load the writer thread, or the event loop, lets a batch gather for up to the delay.


async def gathering(group: GroupCommit) -> None:
    """Until the writer thread waits for its batch to fill."""
    while not group._gathering:
        await asyncio.sleep(0.001)


def test_a_busy_writer_lets_the_next_batch_gather(groups: Groups, writer: Engine) -> None:
    group = groups.make(commit_delay=0.5)
    commits = groups.commits()

    async def main() -> list[str]:
        assert await group.submit(insert("first")) == "first"  # idle: committed alone
        # Within two delays of that commit the writer is busy: what comes within the delay
        # joins the same batch.
        second = asyncio.create_task(group.submit(insert("second")))
        await asyncio.sleep(0.05)
        third = asyncio.create_task(group.submit(insert("third")))
        return list(await asyncio.gather(second, third))

    assert asyncio.run(main()) == ["second", "third"]
    assert names(writer) == {"first", "second", "third"}
    assert len(commits) == 2  # "first", then "second" and "third" together
    group.close()


def test_an_idle_writer_commits_at_once(groups: Groups) -> None:
    group = groups.make(commit_delay=30)

    async def main() -> str:
        return await asyncio.wait_for(group.submit(insert("lone")), timeout=5)

    assert asyncio.run(main()) == "lone"  # a 30 s delay would have raised TimeoutError
    group.close()


def test_a_full_batch_does_not_wait_out_the_delay(groups: Groups) -> None:
    group = groups.make(max_batch=3, commit_delay=30)
    commits = groups.commits()

    async def main() -> list[str]:
        await group.submit(insert("first"))
        first_of_batch = asyncio.create_task(group.submit(insert("a")))
        await asyncio.wait_for(gathering(group), timeout=5)
        rest = [asyncio.create_task(group.submit(insert(name))) for name in ("b", "c")]
        return list(await asyncio.wait_for(asyncio.gather(first_of_batch, *rest), timeout=5))

    assert asyncio.run(main()) == ["a", "b", "c"]
    assert len(commits) == 2
    group.close()


def test_close_commits_a_gathering_batch_at_once(groups: Groups, writer: Engine) -> None:
    group = groups.make(commit_delay=30)

    async def main() -> str:
        await group.submit(insert("first"))
        waiting = asyncio.create_task(group.submit(insert("queued")))
        await asyncio.wait_for(gathering(group), timeout=5)
        await asyncio.wait_for(asyncio.to_thread(group.close), timeout=5)
        return await waiting

    assert asyncio.run(main()) == "queued"
    assert names(writer) == {"first", "queued"}


def test_close_commits_a_batch_whose_event_loop_has_stopped(groups: Groups, writer: Engine) -> None:
    group = groups.make(commit_delay=30)

    async def main() -> None:
        await group.submit(insert("first"))
        asyncio.create_task(group.submit(insert("orphaned")))  # noqa: RUF006
        await asyncio.wait_for(gathering(group), timeout=5)
        # asyncio.run now cancels the waiting task and closes the loop

    asyncio.run(main())
    group.close()
    assert names(writer) == {"first", "orphaned"}


def test_a_thread_leading_its_own_batch_does_not_wait(writer: Engine) -> None:
    group = GroupCommit(writer.begin, commit_delay=30)
    group.run(insert("first"))
    second = threading.Thread(target=group.run, args=(insert("second"),))
    second.start()
    second.join(timeout=5)
    assert not second.is_alive()  # led at once by its own thread: no commit delay
    assert names(writer) == {"first", "second"}


# SQLite: a coroutine's batch runs on its event loop, never waiting for the database there.


def recorded(name: str, threads: list[threading.Thread], parent: int | None = None):  # type: ignore[no-untyped-def]
    """insert(name), noting the thread it ran on."""

    def work(connection: Connection) -> str:
        threads.append(threading.current_thread())
        return insert(name, parent)(connection)

    return work


def test_a_batch_runs_on_its_event_loop_and_commits_on_the_writer_thread(
    writer: Engine,
) -> None:
    groups = Groups(writer, "event-loop")
    group = groups.make()
    assert groups.loop_writer is not None
    ran_on: list[threading.Thread] = []
    committed_on: list[str] = []
    event.listen(
        groups.loop_writer._engine,
        "commit",
        lambda _c: committed_on.append(threading.current_thread().name),
    )

    async def main() -> tuple[list[str], threading.Thread]:
        jobs = (group.submit(recorded(f"c{i}", ran_on)) for i in range(5))
        return list(await asyncio.gather(*jobs)), threading.current_thread()

    results, loop_thread = asyncio.run(main())
    assert results == [f"c{i}" for i in range(5)]
    assert names(writer) == {f"c{i}" for i in range(5)}
    assert set(ran_on) == {loop_thread}
    assert committed_on and set(committed_on) == {WRITER}
    group.close()
    groups.loop_writer.close()


def test_the_event_loop_never_waits_for_a_write_lock_held_elsewhere(writer: Engine) -> None:
    groups = Groups(writer, "event-loop")
    group = groups.make()
    ran_on: list[threading.Thread] = []
    holder = writer.connect()
    held = holder.begin()  # BEGIN IMMEDIATE: the write lock, as another process might hold it

    async def main() -> tuple[str, float]:
        job = asyncio.create_task(group.submit(recorded("waited", ran_on)))
        started = time.monotonic()
        for _ in range(20):  # the loop goes on while the job waits for the lock
            await asyncio.sleep(0.005)
        ticking = time.monotonic() - started
        assert not job.done()
        await asyncio.to_thread(held.rollback)
        return await asyncio.wait_for(job, timeout=5), ticking

    result, ticking = asyncio.run(main())
    assert result == "waited"
    assert ticking < 2  # not the five seconds of the busy timeout
    assert [thread.name for thread in ran_on] == [WRITER]  # the writer thread waited instead
    assert names(writer) == {"waited"}
    holder.close()
    group.close()
    assert groups.loop_writer is not None
    groups.loop_writer.close()


def test_the_event_loop_tries_again_while_the_write_lock_is_briefly_held(
    writer: Engine,
) -> None:
    groups = Groups(writer, "event-loop")
    group = groups.make(busy_retries=40, busy_delay=0.05)
    ran_on: list[threading.Thread] = []
    holder = writer.connect()
    held = holder.begin()

    async def main() -> tuple[str, threading.Thread]:
        job = asyncio.create_task(group.submit(recorded("retried", ran_on)))
        await asyncio.sleep(0.12)  # a few of the loop's tries find the lock held
        assert not job.done()
        held.rollback()
        return await asyncio.wait_for(job, timeout=5), threading.current_thread()

    result, loop_thread = asyncio.run(main())
    assert result == "retried"
    assert ran_on == [loop_thread]  # run on the loop once the lock was free, not handed over
    holder.close()
    group.close()
    assert groups.loop_writer is not None
    groups.loop_writer.close()


def test_a_failed_commit_of_a_loops_batch_fails_every_job_and_the_next_batch_commits(
    groups: Groups, writer: Engine
) -> None:
    group = groups.make()
    # The deferred foreign key is checked at COMMIT, on the writer thread.
    jobs = [insert("a"), insert("orphan", parent=99), insert("b")]
    failed = submit_behind_a_held_batch(group, jobs, waiting=3)
    assert all(isinstance(result, IntegrityError) for result in failed)
    assert asyncio.run(group.submit(insert("after"))) == "after"
    assert names(writer) == {"after"}
    group.close()


class Abort(BaseException):
    """Not an Exception: what a job's ``except Exception`` would not catch."""


def test_a_job_that_raises_a_base_exception_fails_and_the_group_goes_on(
    groups: Groups, writer: Engine
) -> None:
    group = groups.make()

    def aborting(connection: Connection) -> None:
        insert("gone")(connection)
        raise Abort

    async def main() -> str:
        with pytest.raises(Abort):
            await asyncio.wait_for(group.submit(aborting), timeout=5)
        return await asyncio.wait_for(group.submit(insert("after")), timeout=5)

    loop_errors: list[object] = []

    def run_main() -> str:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    assert run_main() == "after"
    assert names(writer) == {"after"}
    group.close()


def test_a_loops_job_may_not_write_through_the_group_again(groups: Groups, writer: Engine) -> None:
    group = groups.make()

    def nested(connection: Connection) -> None:
        group.run(insert("inner"))

    async def main() -> str:
        with pytest.raises(RuntimeError, match="must use the connection it was given"):
            await group.submit(nested)
        return await group.submit(insert("outer"))

    assert asyncio.run(main()) == "outer"
    assert names(writer) == {"outer"}
    group.close()
