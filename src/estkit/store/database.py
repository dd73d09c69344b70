"""The database under the store: engines, transactions, and what a failure looks like.

Durability: a write returns only after its transaction is committed, and on SQLite the
connection runs in WAL mode with ``synchronous=FULL``, so the commit has been fsync'd.  Write
transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy
timeout instead of failing on a stale snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from estkit.errors import ServiceUnavailable
from estkit.store import schema

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


def _engines(url: str, busy_timeout: float) -> tuple[Engine, Engine]:
    """(writer, reader) engines; on SQLite the writer takes the write lock up front."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True)
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

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()

    def create_schema(self) -> None:
        with self._guard():
            schema.metadata.create_all(self._writer)
            # create_all makes a new table's indexes only with the table: an index added
            # later to an existing table is created here.
            for table in schema.metadata.sorted_tables:
                for index in table.indexes:
                    index.create(self._writer, checkfirst=True)

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
    ) -> T:
        """Run work in one write transaction; a constraint violation goes to on_conflict."""
        try:
            with self._writer.begin() as connection:
                return work(connection)
        except IntegrityError as exc:
            raise (on_conflict(exc) if on_conflict else self._unavailable(exc)) from exc
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from exc


def _cause(exc: SQLAlchemyError) -> str:
    """The driver's error class name: enough to diagnose, no SQL or values leaked."""
    original = getattr(exc, "orig", None)
    return type(original or exc).__name__
