"""Group commit on a real SQLite file: shared commits, per-job failures, all-or-nothing commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from estkit.store.database import _engines
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
