"""Resident memory of one worker: started, with 1,000 idle TLS connections open, and at every
tenth of a long run of enrollments (with those connections still open), to show the size and
that it does not grow.

The idle connections each complete the TLS handshake and one keep-alive GET /cacerts, then
wait. The instance's ``header_timeout`` (the keep-alive idle time, 15 s by default, after
which the server rightly closes an idle connection) is raised for this run so that they stay
open while the enrollments run; the bench checks the worker really holds them.
"""

from __future__ import annotations

import http.client
import resource
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.estserver import EstServer, start_server

from bench.instance import fresh_instance
from bench.matrix import Target
from bench.procstat import open_sockets, rss_mb

IDLE_TIMEOUT = 3600
CHECKPOINTS = 10


@dataclass(frozen=True)
class MemoryResult:
    store: str
    idle_connections: int
    started_mb: float
    warm_mb: float  # after a first few hundred enrollments: imports and caches in place
    idle_open_mb: float
    sockets_held: int
    checkpoints: list[tuple[int, float]]  # (enrollments so far, RSS MB)
    closed_mb: float  # after the idle connections are closed

    @property
    def peak_mb(self) -> float:
        return max(
            self.started_mb,
            self.warm_mb,
            self.idle_open_mb,
            self.closed_mb,
            *(mb for _, mb in self.checkpoints),
        )


def _raise_open_files(needed: int) -> None:
    """The bench holds the client ends and the server (a child, inheriting the limit) the
    server ends: each needs a descriptor per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"bench: RLIMIT_NOFILE hard limit {hard} < {needed}; raise it")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def open_idle(server: EstServer, count: int) -> list[http.client.HTTPSConnection]:
    host, port = server.url.split("://")[1].rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(server.ca_file))
    connections = []
    for _ in range(count):
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
        connection.request("GET", "/.well-known/est/cacerts")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"cacerts answered {response.status}")
        connections.append(connection)
    return connections


def _long_keepalive(data_dir: Path) -> None:
    config = data_dir / "estkit.toml"
    text = config.read_text()
    assert "header_timeout = 15" in text, "estkit init's config names header_timeout"
    config.write_text(text.replace("header_timeout = 15", f"header_timeout = {IDLE_TIMEOUT}"))


def measure_memory(
    store: str,
    idle_connections: int,
    enrollments: int,
    clients: int,
    directory: Path,
    progress: Callable[[str], None],
) -> MemoryResult:
    _raise_open_files(2 * idle_connections + 256)
    with fresh_instance(directory / f"memory-{store}", store) as data_dir:
        _long_keepalive(data_dir)
        server = start_server(data_dir, workers=1)  # one process: the worker itself
        pid = server.process.pid
        try:
            started = rss_mb(pid)
            target = Target.prepare(server, store, 1, data_dir, clients)
            target.run("keepalive", clients, IDLE_TIMEOUT, count=500)
            warm = rss_mb(pid)
            idle = open_idle(server, idle_connections)
            sockets = open_sockets(pid)
            idle_open = rss_mb(pid)
            progress(f"memory: {idle_open:.0f} MB with {len(idle)} idle connections open")
            checkpoints = []
            done = 0
            for step in range(1, CHECKPOINTS + 1):
                chunk = enrollments * step // CHECKPOINTS - done
                done += target.run("keepalive", clients, IDLE_TIMEOUT, count=chunk).enrollments
                checkpoints.append((done, rss_mb(pid)))
                progress(f"memory: {checkpoints[-1][1]:.0f} MB after {done} enrollments")
            for connection in idle:
                connection.close()
            closed = rss_mb(pid)
        finally:
            server.stop()
    return MemoryResult(
        store, idle_connections, started, warm, idle_open, sockets, checkpoints, closed
    )


def memory_table(result: MemoryResult) -> str:
    lines = [
        f"Worker RSS (VmRSS), store {result.store}, one worker; "
        f"{result.idle_connections} idle TLS connections held "
        f"(the worker held {result.sockets_held} sockets).",
        "",
        "| moment | enrollments | RSS MB |",
        "|---|---|---|",
        f"| started | 0 | {result.started_mb:.1f} |",
        f"| warmed up | 500 | {result.warm_mb:.1f} |",
        f"| {result.idle_connections} idle connections open | 500 | {result.idle_open_mb:.1f} |",
    ]
    for done, mb in result.checkpoints:
        lines.append(f"| enrolling, idle connections open | {done + 500} | {mb:.1f} |")
    lines.append(f"| idle connections closed | | {result.closed_mb:.1f} |")
    return "\n".join(lines)
