"""The server's log output: lines logged on an event loop are written in batches.

Every request logs a line (the access log).  Writing each line as it is logged costs the
stream's own Python work and a system call, which gives up the GIL.  Kept for at most
``FLUSH_INTERVAL`` and written together, as nginx's ``access_log ... buffer= flush=`` and
Envoy's access log flush interval do, the lines cost 4% less server CPU per keep-alive
enrollment (bench/RESULTS.md, session 8).  Lines logged anywhere else (start-up, shutdown,
other threads, the supervisor) are written at once, after whatever is kept, so the order of
lines is the order they were logged in.  A process killed outright loses at most the last
``FLUSH_INTERVAL`` of lines; ``logging.shutdown`` (an orderly exit) and a fork write them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import TextIO

FLUSH_INTERVAL = 0.05
"""Seconds a line logged on an event loop may wait before it is written."""

MAX_KEPT = 64 * 1024
"""Characters kept before they are written without waiting for the interval."""

WRITE_SIZE = 4096
"""Most bytes per write (PIPE_BUF on Linux): a write to a pipe (journald, a container's log
driver) of at most this much is never interleaved with another process's, so the lines of
several workers sharing stderr stay whole."""


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that keeps the lines logged on an event loop for a moment and writes
    them together (see the module docstring)."""

    def __init__(self, stream: TextIO, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__(stream)
        self._interval = interval
        self._kept: list[str] = []
        self._kept_size = 0
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        """The loop on which a write of the kept lines is due, if any."""
        handler = weakref.ref(self)
        os.register_at_fork(before=lambda: _before_fork(handler))

    def emit(self, record: logging.LogRecord) -> None:
        """Called with the handler's lock held (``Handler.handle``)."""
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._kept.append(line)
        self._kept_size += len(line)
        if loop is None or self._kept_size >= MAX_KEPT:
            self._write_kept()
        elif self._flush_loop is not loop:
            self._flush_loop = loop
            loop.call_later(self._interval, self._flush_on_loop)

    def flush(self) -> None:
        """Write the kept lines now (``logging.shutdown``, a fork, a test)."""
        self.acquire()
        try:
            self._write_kept()
        finally:
            self.release()

    def _flush_on_loop(self) -> None:
        self.acquire()
        try:
            self._flush_loop = None
            self._write_kept()
        finally:
            self.release()

    def _write_kept(self) -> None:
        """Write the kept lines in writes of at most WRITE_SIZE bytes, each of whole lines
        (a longer line alone); the lock is held."""
        kept, self._kept, self._kept_size = self._kept, [], 0
        stream = self.stream
        if stream is None:
            return
        try:
            for chunk in _chunks(kept):
                stream.write(chunk)
            stream.flush()
        except (OSError, ValueError):
            # The stream is gone (a closed pipe, a full disk): nowhere left to say so.
            pass


def _chunks(lines: list[str]) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode("utf-8", "replace"))
        if current and size + length > WRITE_SIZE:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        chunks.append("".join(current))
    return chunks


def _before_fork(handler: weakref.ref[BatchedStreamHandler]) -> None:
    """The kept lines are written before a fork: the child would write its copy of them too.
    (The child's own event loop is a new one, so its lines get a timer of their own.)"""
    alive = handler()
    if alive is not None:
        alive.flush()
