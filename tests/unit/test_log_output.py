"""The server's log output: lines logged on an event loop are written in batches, in order,
in whole-line writes of at most PIPE_BUF bytes, and none is lost on shutdown or fork."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path

import pytest

from estkit.server.log_output import WRITE_SIZE, BatchedStreamHandler


class CountingStream(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def logger_with(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"estkit.test.{name}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_logged_on_a_loop_are_written_together_after_the_interval() -> None:
    stream = CountingStream()
    log = logger_with(BatchedStreamHandler(stream, interval=0.05), "together")

    async def main() -> list[str]:
        for index in range(3):
            log.info("request %d", index)
        written_at_once = list(stream.writes)
        await asyncio.sleep(0.2)
        return written_at_once

    assert asyncio.run(main()) == []
    assert stream.writes == ["request 0\nrequest 1\nrequest 2\n"]


def test_a_line_logged_off_the_loop_is_written_at_once_after_the_kept_ones() -> None:
    stream = CountingStream()
    log = logger_with(BatchedStreamHandler(stream, interval=30), "order")

    async def main() -> None:
        log.info("first, on the loop")
        log.info("second, on the loop")
        await asyncio.to_thread(log.info, "third, on a thread")
        assert stream.getvalue().splitlines() == [
            "first, on the loop",
            "second, on the loop",
            "third, on a thread",
        ]

    asyncio.run(main())


def test_writes_hold_whole_lines_and_at_most_pipe_buf_bytes() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream, interval=30)
    log = logger_with(handler, "chunks")
    long_line = "x" * (WRITE_SIZE + 100)

    async def main() -> None:
        for index in range(200):
            log.info("line %03d %s", index, "y" * 50)
        log.info(long_line)
        log.info("after the long line")

    asyncio.run(main())
    assert stream.writes == []  # the loop ended before the interval: still kept
    handler.flush()  # as logging.shutdown does at exit
    assert stream.writes
    for chunk in stream.writes:
        assert chunk.endswith("\n")
        assert len(chunk.encode()) <= WRITE_SIZE or chunk == long_line + "\n"
    assert long_line + "\n" in stream.writes
    lines = stream.getvalue().splitlines()
    assert len(lines) == 202
    assert lines[0].startswith("line 000") and lines[-1] == "after the long line"


def test_many_kept_lines_are_written_without_waiting_for_the_interval() -> None:
    stream = CountingStream()
    log = logger_with(BatchedStreamHandler(stream, interval=30), "full")

    async def main() -> None:
        for index in range(2000):
            log.info("line %04d %s", index, "z" * 60)
        assert stream.writes  # 64 KiB kept: written before the 30 s were up

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_lines_kept_at_a_fork_are_written_once(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    with path.open("w") as stream:
        handler = BatchedStreamHandler(stream, interval=30)
        log = logger_with(handler, "fork")

        async def main() -> None:
            log.info("before the fork")
            pid = os.fork()
            if pid == 0:  # the child: a line of its own, written as a worker's exit does
                log.info("in the child")
                handler.flush()
                os._exit(0)
            os.waitpid(pid, 0)
            log.info("after the fork")

        asyncio.run(main())
        handler.flush()
    assert path.read_text().splitlines() == ["before the fork", "in the child", "after the fork"]
