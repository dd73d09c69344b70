"""The database under the store: engines, transactions, and what a failure looks like.

Durability: a write returns only after its transaction is committed, and on SQLite the
connection runs in WAL mode with ``synchronous=FULL``, so the commit has been fsync'd.
Concurrent writes share transactions and so fsyncs (group commit, store/group_commit.py).
Write transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy
timeout instead of failing on a stale snapshot.

On PostgreSQL (psycopg 3) ``synchronous_commit`` keeps its durable default, transactions are
READ COMMITTED, and the few read-then-write sequences that SQLite serialises with its write
lock take an advisory lock instead (store/locks.py).  ``busy_timeout`` bounds the wait for a
pooled connection, for connecting, for the check of a pooled connection before use
(store/pg_ping.py), and for row and advisory locks (``lock_timeout``), so a stuck database is
a 503 with Retry-After rather than a hung request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from estkit.errors import ServiceUnavailable
from estkit.store import migrate
from estkit.store.group_commit import GroupCommit

T = TypeVar("T")


class StoreUnavailable(ServiceUnavailable):
    """The database could not be read or written; the operation did not happen."""


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin listener issues BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    return on_connect


def driver_url(url: str) -> URL:
    """The URL SQLAlchemy is given: plain ``postgresql://`` means psycopg 3, not psycopg2."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def _postgresql_engine(url: URL, busy_timeout: float) -> Engine:
    connect_args: dict[str, Any] = {"connect_timeout": max(1, round(busy_timeout))}
    if "options" not in url.query:
        connect_args["options"] = f"-c lock_timeout={round(busy_timeout * 1000)}"
    if "application_name" not in url.query:
        connect_args["application_name"] = "estkit"
    from estkit.store.pg_ping import check_on_checkout  # psycopg loads only for PostgreSQL

    engine = create_engine(
        url,
        pool_size=5,
        max_overflow=10,  # the server's worker threads plus the CRL and OCSP tasks
        pool_timeout=busy_timeout,
        pool_recycle=3600,
        connect_args=connect_args,
    )
    # A restarted database or a dropped connection is not an error, and one that stopped
    # answering is noticed within busy_timeout (SQLAlchemy's pool_pre_ping would wait forever).
    check_on_checkout(engine, busy_timeout)
    return engine


def _engines(url: str, busy_timeout: float) -> tuple[Engine, Engine]:
    """(writer, reader) engines; on SQLite the writer takes the write lock up front."""
    parsed = driver_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = _postgresql_engine(parsed, busy_timeout)
        return engine, engine
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed, pool_pre_ping=True)
        return engine, engine
    connect_args = {"check_same_thread": False, "timeout": busy_timeout}
    writer = create_engine(url, connect_args=connect_args)
    reader = create_engine(url, connect_args=connect_args)
    for engine in (writer, reader):
        event.listen(engine, "connect", _sqlite_pragmas(int(busy_timeout * 1000)))

    @event.listens_for(writer, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(reader, "begin")
    def _begin_deferred(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return writer, reader


class Database:
    """Connections and transactions; the record modules add their tables' operations."""

    def __init__(self, url: str, *, busy_timeout: float = 5.0, retry_after: int = 5) -> None:
        self.url = url
        self.retry_after = retry_after
        """Seconds a client is told to wait (Retry-After) when the store cannot answer."""
        self._writer, self._reader = _engines(url, busy_timeout)
        self._group = GroupCommit(self._writer.begin)

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()

    def create_schema(self, remedy: str = "estkit db upgrade") -> None:
        """Make the schema in an empty database (every migration, as ``estkit db upgrade``
        would), and otherwise only check it: a database at another revision is refused with
        SchemaNotCurrent naming ``remedy``.  Several servers may share one database, so
        none of them changes an existing schema on its own."""
        with self._guard(), self._writer.begin() as connection:
            migrate.create_or_check(connection, remedy)

    def upgrade_schema(self) -> tuple[str | None, str]:
        """Run the migrations the database lacks; the revisions before and after."""
        with self._guard(), self._writer.begin() as connection:
            before = migrate.current_revision(connection)
            migrate.upgrade(connection)
            return before, migrate.head_revision()

    def schema_revision(self) -> str | None:
        with self._guard(), self._reader.connect() as connection:
            return migrate.current_revision(connection)

    def is_empty(self) -> bool:
        """No estkit table at all: a database ``estkit init`` may take."""
        with self._guard(), self._reader.connect() as connection:
            return not migrate.has_estkit_tables(connection)

    def _unavailable(self, exc: SQLAlchemyError) -> StoreUnavailable:
        return StoreUnavailable(
            f"the certificate store is unavailable ({_cause(exc)}); nothing was issued or "
            "recorded, retry later",
            retry_after=self.retry_after,
        )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc

    def _read(self, query: Callable[[Connection], T]) -> T:
        with self._guard(), self._reader.begin() as connection:
            return query(connection)

    def _write(
        self,
        work: Callable[[Connection], T],
        on_conflict: Callable[[IntegrityError], Exception] | None = None,
        *,
        alone: bool = False,
    ) -> T:
        """Run work in a committed write transaction, shared with concurrent writers (see
        store/group_commit.py) unless ``alone`` (long work that should not hold up others);
        a constraint violation goes to on_conflict."""
        try:
            if alone:
                with self._writer.begin() as connection:
                    return work(connection)
            return self._group.run(work)
        except IntegrityError as exc:
            raise (on_conflict(exc) if on_conflict else self._unavailable(exc)) from exc
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc


def _cause(exc: SQLAlchemyError) -> str:
    """The driver's error class name: enough to diagnose, no SQL or values leaked."""
    original = getattr(exc, "orig", None)
    return type(original or exc).__name__
