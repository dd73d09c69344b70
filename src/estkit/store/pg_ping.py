"""The pool's check that a pooled PostgreSQL connection still works, with a time limit.

SQLAlchemy's ``pool_pre_ping`` waits for the answer as long as libpq does: without limit.  A
database that keeps its TCP connections open but has stopped answering (a frozen host or VM,
a stalled disk, a proxy that lost its upstream) would hold every request that takes a pooled
connection, and since the kernel still acknowledges the packets, TCP keepalives never notice.
Here the check sends an empty query and waits at most ``timeout`` for the answer; a
connection that fails it is discarded and replaced, the replacement is bounded by libpq's
``connect_timeout``, and the request gets its 503 with Retry-After in bounded time.
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError


def ping(connection: psycopg.Connection[Any], timeout: float) -> None:
    """Return once the server has answered an empty query; DisconnectionError if it does not
    within timeout seconds, or the connection is broken."""
    pgconn = connection.pgconn
    deadline = time.monotonic() + timeout
    try:
        pgconn.send_query(b"")
        while pgconn.flush():  # 1 while part of the query is still unsent
            _wait(pgconn.socket, select.POLLOUT, deadline, timeout)
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            _wait(pgconn.socket, select.POLLIN, deadline, timeout)
        while (result := pgconn.get_result()) is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise DisconnectionError("the database refused the connection check")
    except psycopg.Error as exc:
        raise DisconnectionError(f"the connection is broken ({type(exc).__name__})") from exc


def _wait(fd: int, events: int, deadline: float, timeout: float) -> None:
    poller = select.poll()
    poller.register(fd, events | select.POLLERR | select.POLLHUP)
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(remaining * 1000):
        raise DisconnectionError(f"the database did not answer within {timeout:g} seconds")


def check_on_checkout(engine: Engine, timeout: float) -> None:
    """Ping every connection the pool hands out (instead of ``pool_pre_ping``).  A failed
    ping makes the pool discard the connection and open a new one (SQLAlchemy's documented
    use of DisconnectionError in a checkout listener)."""

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        ping(dbapi_connection, timeout)
