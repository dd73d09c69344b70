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

The few statements every enrollment runs (its inserts, the Basic user's row, the TLS client
certificate's record) are compiled once and sent straight to the driver (DriverStatement):
SQLAlchemy's per-call execution machinery costs several times what SQLite spends on them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    RootTransaction,
    Select,
    Table,
    create_engine,
    event,
    insert,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ClauseElement

from estkit.store import migrate
from estkit.store.group_commit import GroupCommit, LoopTransaction
from estkit.store.unavailable import StoreUnavailable

T = TypeVar("T")


SQLITE_CACHE_KIB = 512
"""Page cache per SQLite connection (SQLite's default is 2 MiB).  In WAL mode a connection
drops its cached pages whenever another connection has committed since its last
transaction, which on a serving instance is all the time (the enrollments' writer, the
subject index's catch-up every second), so a large cache buys little: a page it misses is
read from the operating system's page cache.  But each cache fills up to its size and stays
so, and the six connections of a busy worker kept about 6 MiB more resident with the
default (bench/RESULTS.md, session 7); with a million records, enrollment, ``cert list``
and CRL generation measured the same with either size."""


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin listener issues BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = {-SQLITE_CACHE_KIB}")
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


def _sqlite_engine(url: str, busy_timeout: float) -> Engine:
    """An engine whose connections may be used by any thread (one at a time) and run in WAL
    mode with the durability pragmas."""
    connect_args = {"check_same_thread": False, "timeout": busy_timeout}
    engine = create_engine(url, connect_args=connect_args)
    event.listen(engine, "connect", _sqlite_pragmas(int(busy_timeout * 1000)))
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
    writer, reader = _sqlite_engine(url, busy_timeout), _sqlite_engine(url, busy_timeout)

    @event.listens_for(writer, "begin")
    def _begin_immediate(connection: Connection) -> None:
        driver_execute(connection, "BEGIN IMMEDIATE").close()

    @event.listens_for(reader, "begin")
    def _begin_deferred(connection: Connection) -> None:
        driver_execute(connection, "BEGIN").close()

    return writer, reader


class LoopWriter:
    """SQLite: the write connection whose transactions event loops begin (GroupCommit's
    ``begin_on_loop``).  It issues BEGIN IMMEDIATE with a busy timeout of zero, so that a
    write lock held by another connection or process is an answer (None), never a wait; the
    engine has no BEGIN listener, so SQLAlchemy's own begin adds no statement."""

    def __init__(self, url: str, busy_timeout: float) -> None:
        self._engine = _sqlite_engine(url, busy_timeout)
        event.listen(self._engine, "connect", _never_wait)
        self._connection: Connection | None = None

    def begin(self) -> LoopTransaction | None:
        """A write transaction begun at once, or None while the write lock is held."""
        connection = self._connection
        if connection is None:
            connection = self._connection = self._engine.connect()
        try:
            driver_execute(connection, "BEGIN IMMEDIATE").close()
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                return None
            self.discard()
            raise
        return _SqliteLoopTransaction(connection.begin(), self.discard)

    def discard(self) -> None:
        """Drop the connection after a failure: SQLite keeps a transaction open after some
        failed COMMITs (a deferred constraint), so it is closed rather than returned to the
        pool; a new one is made on next use."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.invalidate()
            connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        self._engine.dispose()


def _never_wait(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout = 0").close()


@dataclass
class _SqliteLoopTransaction:
    transaction: RootTransaction
    discard: Callable[[], None]
    """After a failed commit or rollback: the connection's state is unknown."""

    @property
    def connection(self) -> Connection:
        return self.transaction.connection

    def commit(self) -> None:
        self._end(self.transaction.commit)

    def rollback(self) -> None:
        self._end(self.transaction.rollback)

    def _end(self, end: Callable[[], None]) -> None:
        try:
            end()
        except BaseException:
            self.discard()
            raise


def driver_execute(connection: Connection, sql: str, parameters: Any = ()) -> Any:
    """Run SQL on the connection's DBAPI cursor and return the cursor.

    What ``exec_driver_sql`` does without its per-call execution context and result object,
    which cost several times the database's own work for the short statements of every
    enrollment.  A DBAPI error becomes SQLAlchemy's exception, and a lost connection is
    invalidated, as from ``execute`` (see :func:`raise_translated`)."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, parameters)
    except connection.dialect.loaded_dbapi.Error as exc:
        raise_translated(connection, exc, sql, parameters, cursor)
    return cursor


def raise_translated(
    connection: Connection, exc: Exception, sql: str, parameters: Any, cursor: Any
) -> NoReturn:
    """Raise what ``execute`` raises for this error, through SQLAlchemy's public API: its
    DBAPIError subclass for a driver error (IntegrityError, OperationalError, ...) or a
    StatementError for a value the type refused; a connection the error says is lost is
    invalidated first, so that the pool replaces it instead of handing it out again."""
    dialect = connection.dialect
    driver_error = dialect.loaded_dbapi.Error
    lost = isinstance(exc, driver_error) and dialect.is_disconnect(
        exc, connection.connection.dbapi_connection, cursor
    )
    if lost:
        connection.invalidate(exc)
    raise DBAPIError.instance(
        sql, parameters, exc, driver_error, connection_invalidated=lost, dialect=dialect
    ) from exc


@dataclass
class _Plan:
    """A statement as compiled for one dialect."""

    sql: str
    names: list[str]
    """Bind names in the order the SQL takes them."""
    processors: list[Callable[[Any], Any] | None]
    """Each bind's type's bind processor, in the same order."""
    positional: bool
    columns: list[tuple[str, Any]]
    """Result column names with their types."""
    results: list[Callable[[Any], Any] | None] | None = None
    """Result processors, made from the first result's column type codes."""


class DriverStatement:
    """A Core statement compiled once per dialect and run with :func:`driver_execute`.

    For the few statements every enrollment runs.  The SQL is SQLAlchemy's compilation of
    the statement for the connection's dialect, and values go through the same per-type bind
    and result processing as with ``execute``, so the database sees the same statement and
    the caller the same values.  Every bind's value must be given: no Python-side column
    defaults, no expanding IN (refused when compiled).
    """

    def __init__(self, statement: ClauseElement, column_keys: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._plans: weakref.WeakKeyDictionary[Dialect, _Plan] = weakref.WeakKeyDictionary()

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect)
        if plan is None:
            plan = self._plans[dialect] = self._compile(dialect)
        return plan

    def _compile(self, dialect: Dialect) -> _Plan:
        compiled: Any = self._statement.compile(dialect=dialect, column_keys=self._column_keys)
        if (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.escaped_bind_names
            or compiled.literal_execute_params
            or compiled.post_compile_params
        ):
            raise ValueError(f"not a statement DriverStatement can run: {compiled.string}")
        names = list(compiled.positiontup) if dialect.positional else list(compiled.binds)
        processors = [_bind_processor(compiled.binds[name].type, dialect) for name in names]
        selected = self._statement.selected_columns if isinstance(self._statement, Select) else ()
        columns = [(str(column.key), column.type) for column in selected]
        return _Plan(compiled.string, names, processors, dialect.positional, columns)

    def _run(
        self, connection: Connection, parameters: Mapping[str, Any], begin: bool = True
    ) -> tuple[_Plan, Any]:
        plan = self._plan(connection.dialect)
        try:
            values = [
                parameters[name] if process is None else process(parameters[name])
                for name, process in zip(plan.names, plan.processors, strict=True)
            ]
        except Exception as exc:  # a value the type refuses: StatementError, as from execute()
            raise_translated(connection, exc, plan.sql, parameters, None)
        if begin and connection.get_transaction() is None:
            connection.begin()  # as execute() would (autobegin)
        bound = tuple(values) if plan.positional else dict(zip(plan.names, values, strict=True))
        return plan, driver_execute(connection, plan.sql, bound)

    def execute(self, connection: Connection, parameters: Mapping[str, Any]) -> None:
        """Run the statement; nothing is read back."""
        _, cursor = self._run(connection, parameters)
        cursor.close()

    def first(
        self, connection: Connection, parameters: Mapping[str, Any], *, begin: bool = True
    ) -> dict[str, Any] | None:
        """The first row of a SELECT, by column name, or None.  ``begin=False``: no
        transaction is begun (a connection in autocommit runs the SELECT on its own)."""
        plan, cursor = self._run(connection, parameters, begin)
        try:
            row = cursor.fetchone()
            if row is None:
                return None
            if plan.results is None:
                plan.results = [
                    _result_processor(type_, connection.dialect, description[1])
                    for (_, type_), description in zip(
                        plan.columns, cursor.description, strict=True
                    )
                ]
        except connection.dialect.loaded_dbapi.Error as exc:
            raise_translated(connection, exc, plan.sql, None, cursor)
        finally:
            cursor.close()
        return {
            name: value if process is None else process(value)
            for (name, _), process, value in zip(plan.columns, plan.results, row, strict=True)
        }


def insert_row(table: Table) -> DriverStatement:
    """An INSERT of one row that gives every column but the autoincrement key: a column
    added to the table later must be added to the rows given too (a missing one fails)."""
    automatic = table.autoincrement_column
    return DriverStatement(insert(table), [c.key for c in table.columns if c is not automatic])


def _bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _result_processor(type_: Any, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).result_processor(
        dialect, coltype
    )
    return processor


class Database:
    """Connections and transactions; the record modules add their tables' operations."""

    def __init__(self, url: str, *, busy_timeout: float = 5.0, retry_after: int = 5) -> None:
        self.url = url
        self.retry_after = retry_after
        """Seconds a client is told to wait (Retry-After) when the store cannot answer."""
        self._writer, self._reader = _engines(url, busy_timeout)
        self.local_reads = self._reader.dialect.name == "sqlite"
        """Reads are of a local file and never wait for a writer (SQLite in WAL mode): a
        read costs less than handing it to a thread, so the server runs the reads of its
        busiest path on the event loop.  PostgreSQL's reads are network round trips."""
        # A local file's connection never goes stale, so on SQLite the hot reads and the
        # group's batches keep their connections instead of checking one out (and resetting
        # it) each time; PostgreSQL's are checked on checkout (store/pg_ping.py).
        self._held = threading.local()
        self._held_connections: list[Connection] = []
        self._held_lock = threading.Lock()
        self._batch_connection: Connection | None = None
        self._loop_writer: LoopWriter | None = None
        if self.local_reads:
            self._loop_writer = LoopWriter(url, busy_timeout)
            self._group = GroupCommit(self._batch, begin_on_loop=self._loop_writer.begin)
        else:
            self._group = GroupCommit(self._writer.begin)

    def close(self) -> None:
        self._group.close()
        if self._loop_writer is not None:
            self._loop_writer.close()
        with self._held_lock:
            held, self._held_connections = self._held_connections, []
        if self._batch_connection is not None:
            held.append(self._batch_connection)
        for connection in held:
            connection.close()
        self._writer.dispose()
        self._reader.dispose()

    @contextmanager
    def _batch(self) -> Iterator[Connection]:
        """A group-commit batch's transaction on SQLite, on the connection kept for batches
        (the group runs one batch at a time); after a failure it is replaced."""
        connection = self._batch_connection
        if connection is None:
            connection = self._batch_connection = self._writer.connect()
        try:
            with connection.begin():
                yield connection
        except BaseException:
            self._batch_connection = None
            connection.close()
            raise

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

    def _read_row(
        self, statement: DriverStatement, parameters: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """One row of a hot single-statement read (see DriverStatement).

        On SQLite a lone SELECT in autocommit is a read transaction of its own, so it runs
        on a connection the calling thread keeps, without the pool's checkout and a
        BEGIN/COMMIT around it, which cost more than the SELECT (the event loop runs these
        for every enrollment).  Elsewhere it is an ordinary read."""
        if not self.local_reads:
            return self._read(lambda connection: statement.first(connection, parameters))
        connection = self._held_connection()
        try:
            return statement.first(connection, parameters, begin=False)
        except SQLAlchemyError as exc:
            self._drop_held_connection(connection)
            raise self._unavailable(exc) from exc

    def _held_connection(self) -> Connection:
        connection: Connection | None = getattr(self._held, "connection", None)
        if connection is None or connection.closed:
            with self._guard():
                connection = self._reader.connect()
            with self._held_lock:
                self._held_connections.append(connection)
            self._held.connection = connection
        return connection

    def _drop_held_connection(self, connection: Connection) -> None:
        self._held.connection = None
        with self._held_lock:
            if connection in self._held_connections:
                self._held_connections.remove(connection)
        connection.close()

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

    async def _write_async(
        self,
        work: Callable[[Connection], T],
        on_conflict: Callable[[IntegrityError], Exception] | None = None,
    ) -> T:
        """``_write`` for a coroutine: the group's writer thread commits, the event loop
        goes on.  A conflict is looked into on a thread (on_conflict may read the store)."""
        try:
            return await self._group.submit(work)
        except IntegrityError as exc:
            if on_conflict is None:
                raise self._unavailable(exc) from exc
            raise (await asyncio.to_thread(on_conflict, exc)) from exc
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc


def _cause(exc: SQLAlchemyError) -> str:
    """The driver's error class name: enough to diagnose, no SQL or values leaked."""
    original = getattr(exc, "orig", None)
    return type(original or exc).__name__
