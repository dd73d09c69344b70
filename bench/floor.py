"""The floor under estkit's numbers: the same TLS context, event loop (uvloop) and web stack
(aiohttp) answering each POST with a fixed body the size of an enrollment's answer, and
nothing else.  Measured in the same run as estkit on the same instance, per mode, so that
"server CPU per enrollment minus the floor" is what estkit's own work costs (authentication,
CSR checks, signing, the durable record, the access log) and the floor is what any Python
server on this stack pays for the connection and the HTTP exchange.

    python -m bench.floor serve DATA_DIR    # the floor server (started by the benchmark)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tests.estserver import start_server

from bench.instance import fresh_instance
from bench.matrix import Result, Target
from bench.report import markdown_table

FLOOR_MODES = ("tls12-new", "tls13-new", "keepalive", "reenroll-mtls")
ANSWER_BYTES = 700
"""About the size of a base64 certs-only answer carrying one EC P-256 certificate."""


def serve(data_dir: Path) -> None:
    """Answer POSTs to simpleenroll and simplereenroll with a fixed body over the instance's
    TLS context (which asks for client certificates); print the port, then serve until
    killed."""
    import uvloop
    from aiohttp import web

    from estkit.authority.ca import load_pem_certificates
    from estkit.config import load_config
    from estkit.server.tls import server_context

    config = load_config(data_dir)
    body = b"A" * ANSWER_BYTES

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/pkcs7-mime")

    async def main() -> None:
        app = web.Application()
        for operation in ("simpleenroll", "simplereenroll"):  # the latter over mutual TLS
            app.router.add_post(f"/.well-known/est/{operation}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # What estkit trusts for client certificates (its issuing CA signs them).
        trust = load_pem_certificates(config.root_cert) + load_pem_certificates(config.issuing_cert)
        tls = server_context(config.tls_cert, config.tls_key, trust)
        listener = socket.create_server(("127.0.0.1", 0))
        await web.SockSite(runner, listener, ssl_context=tls).start()
        print(listener.getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


@dataclass(frozen=True)
class FloorRow:
    mode: str
    floor: Result
    estkit: Result


@contextlib.contextmanager
def floor_beside_estkit(
    directory: Path, clients: int, wrapper: Sequence[str] = (), timeout: float = 30.0
) -> Iterator[tuple[Target, Target]]:
    """A fresh SQLite instance served by estkit (one worker) and by the floor server, both
    run under ``wrapper`` (valgrind for the instructions part): (estkit, the floor) as load
    targets with the same account, CSRs and client certificates."""
    with fresh_instance(directory, "sqlite") as data_dir:
        floor = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "bench.floor", "serve", str(data_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            server = start_server(data_dir, timeout=timeout, wrapper=wrapper)
            try:
                assert floor.stdout is not None
                port = int(floor.stdout.readline())
                target = Target.prepare(server, "sqlite", 1, data_dir, clients)
                # The same load against the floor server: its URL, and its process for CPU.
                bare_server = replace(server, url=f"https://127.0.0.1:{port}", process=floor)
                yield target, replace(target, server=bare_server, store="-")
            finally:
                server.stop()
        finally:
            floor.kill()
            floor.wait()


def measure_floor(
    directory: Path,
    modes: Sequence[str],
    clients: int,
    duration: float,
    progress: Callable[[str], None],
) -> list[FloorRow]:
    """Per mode, the floor server and estkit (SQLite, one worker) on one instance, one after
    the other."""
    rows = []
    with floor_beside_estkit(directory / "floor", clients) as (target, bare_target):
        for mode in modes:
            bare = bare_target.run(mode, clients, duration)
            if bare.failures or not bare.enrollments:
                raise RuntimeError(f"floor {mode}: {bare.failures} requests failed")
            full = target.run(mode, clients, duration)
            progress(
                f"floor {mode}: {bare.cpu_ms_per_enrollment:.2f} ms, estkit "
                f"{full.cpu_ms_per_enrollment:.2f} ms"
            )
            rows.append(FloorRow(mode, bare, full))
    return rows


def floor_table(rows: list[FloorRow]) -> str:
    return markdown_table(
        (
            "mode",
            "floor: requests/s",
            "floor: server CPU ms/request",
            "estkit: enrollments/s",
            "estkit: server CPU ms/enrollment",
            "estkit's own work, ms",
        ),
        (
            (
                row.mode,
                f"{row.floor.rate:.0f}",
                f"{row.floor.cpu_ms_per_enrollment:.2f}",
                f"{row.estkit.rate:.0f}",
                f"{row.estkit.cpu_ms_per_enrollment:.2f}",
                f"{row.estkit.cpu_ms_per_enrollment - row.floor.cpu_ms_per_enrollment:.2f}",
            )
            for row in rows
        ),
    )


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.floor serve DATA_DIR")
    serve(Path(sys.argv[2]))
