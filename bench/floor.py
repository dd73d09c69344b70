"""The floors under estkit's numbers, measured in the same run as estkit on the same
instance, per mode.

- The floor: the same TLS context, event loop (uvloop) and web stack (aiohttp) answering
  each POST with a fixed body the size of an enrollment's answer, and nothing else: what
  any Python server on this stack pays for the connection and the HTTP exchange.  "Server
  CPU per enrollment minus the floor" is what estkit's own work costs.
- The work floor: the same stack doing only the work no enrollment can skip, in the
  cheapest way Python offers it: decode the body, parse the CSR and check its signature,
  sign a certificate for its subject and key, commit it durably to SQLite (WAL,
  ``synchronous=FULL``: one fsync per enrollment) and answer with it.  No authentication,
  no policy, no extensions, no audit event, no access log, and the commit runs on the event
  loop, blocking it (no hand-off to another thread, and so no group commit: no production
  server could run this way).  "estkit minus the work floor" is what everything else
  estkit does costs.

    python -m bench.floor serve DATA_DIR [--work]    # started by the benchmark
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tests.estserver import start_server

from bench.instance import fresh_instance
from bench.matrix import Result, Target
from bench.report import markdown_table

FLOOR_MODES = ("tls12-new", "tls13-new", "keepalive", "reenroll-mtls")
ANSWER_BYTES = 700
"""About the size of a base64 certs-only answer carrying one EC P-256 certificate."""

if TYPE_CHECKING:
    from aiohttp import web

    from estkit.config import Config

Handler = Callable[["web.Request"], Awaitable["web.Response"]]


def serve(data_dir: Path, work: bool = False) -> None:
    """Answer POSTs to simpleenroll and simplereenroll over the instance's TLS context (which
    asks for client certificates): with a fixed body, or (``work``) with a certificate
    issued as the work floor issues it.  Print the port, then serve until killed."""
    import uvloop
    from aiohttp import web

    from estkit.authority.ca import load_pem_certificates
    from estkit.config import load_config
    from estkit.server.tls import server_context

    config = load_config(data_dir)
    answer = _work_floor_answer(config, data_dir) if work else _fixed_answer()

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


def _fixed_answer() -> Handler:
    from aiohttp import web

    body = b"A" * ANSWER_BYTES

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/pkcs7-mime")

    return answer


def _work_floor_answer(config: Config, data_dir: Path) -> Handler:
    """The work floor's handler (see the module's docstring), with the instance's issuing
    CA (its key is in a file: the benchmark's instances keep no keys in a token)."""
    from aiohttp import web
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    from estkit.authority.ca import load_pem_certificates
    from estkit.authority.keys import load_private_key
    from estkit.server.routes import CERTS_ONLY_TYPE, base64_response
    from estkit.wire.base64body import decode_body
    from estkit.wire.pkcs7 import certs_only

    assert isinstance(config.issuing_key, Path)
    issuer = load_pem_certificates(config.issuing_cert)[0].subject
    key = load_private_key(config.issuing_key)
    store = sqlite3.connect(data_dir / "work-floor.db", isolation_level=None)
    store.execute("PRAGMA journal_mode=WAL")
    store.execute("PRAGMA synchronous=FULL")
    store.execute("CREATE TABLE IF NOT EXISTS issued (serial TEXT PRIMARY KEY, der BLOB NOT NULL)")

    async def answer(request: web.Request) -> web.Response:
        csr = x509.load_der_x509_csr(decode_body(await request.read()))
        if not csr.is_signature_valid:
            raise web.HTTPBadRequest(text="the CSR's signature does not verify")
        now = datetime.now(UTC)
        cert = x509.CertificateBuilder(
            issuer_name=issuer,
            subject_name=csr.subject,
            public_key=csr.public_key(),
            serial_number=x509.random_serial_number(),
            not_valid_before=now,
            not_valid_after=now + timedelta(days=30),
        ).sign(key, hashes.SHA256())
        record = (f"{cert.serial_number:x}", cert.public_bytes(Encoding.DER))
        store.execute("BEGIN IMMEDIATE")
        store.execute("INSERT INTO issued VALUES (?, ?)", record)
        store.execute("COMMIT")
        return base64_response(certs_only([cert]), CERTS_ONLY_TYPE)

    return answer


@dataclass(frozen=True)
class FloorRow:
    mode: str
    floor: Result
    work_floor: Result
    estkit: Result


@dataclass(frozen=True)
class FloorTargets:
    """One instance as load targets with the same account, CSRs and client certificates."""

    estkit: Target
    floor: Target
    work_floor: Target | None
    """Only when asked for (the instructions part does not count it)."""


@contextlib.contextmanager
def floor_beside_estkit(
    directory: Path,
    clients: int,
    wrapper: Sequence[str] = (),
    timeout: float = 30.0,
    work_floor: bool = False,
) -> Iterator[FloorTargets]:
    """A fresh SQLite instance served by estkit (one worker), by the floor server and, if
    asked, by the work floor server, all run under ``wrapper`` (valgrind for the
    instructions part)."""
    with fresh_instance(directory, "sqlite") as data_dir, contextlib.ExitStack() as stack:
        floors = [stack.enter_context(_floor_process(data_dir, wrapper, work=False))]
        if work_floor:
            floors.append(stack.enter_context(_floor_process(data_dir, wrapper, work=True)))
        server = start_server(data_dir, timeout=timeout, wrapper=wrapper)
        try:
            target = Target.prepare(server, "sqlite", 1, data_dir, clients)
            # The same load against a floor server: its URL, and its process for CPU.
            bare = []
            for process in floors:
                assert process.stdout is not None
                port = int(process.stdout.readline())
                served = replace(server, url=f"https://127.0.0.1:{port}", process=process)
                bare.append(replace(target, server=served, store="-"))
            yield FloorTargets(target, bare[0], bare[1] if work_floor else None)
        finally:
            server.stop()


@contextlib.contextmanager
def _floor_process(
    data_dir: Path, wrapper: Sequence[str], work: bool
) -> Iterator[subprocess.Popen[str]]:
    """A floor server (it prints its port when it listens), killed on exit."""
    command = [*wrapper, sys.executable, "-m", "bench.floor", "serve", str(data_dir)]
    process = subprocess.Popen(
        [*command, *(["--work"] if work else [])], stdout=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def measure_floor(
    directory: Path,
    modes: Sequence[str],
    clients: int,
    duration: float,
    progress: Callable[[str], None],
) -> list[FloorRow]:
    """Per mode, the floor server, the work floor server and estkit (SQLite, one worker) on
    one instance, one after the other."""
    rows = []
    with floor_beside_estkit(directory / "floor", clients, work_floor=True) as targets:
        assert targets.work_floor is not None
        for mode in modes:
            bare = _served(targets.floor, "floor", mode, clients, duration)
            work = _served(targets.work_floor, "work floor", mode, clients, duration)
            full = targets.estkit.run(mode, clients, duration)
            progress(
                f"floor {mode}: {bare.cpu_ms_per_enrollment:.2f} ms, work floor "
                f"{work.cpu_ms_per_enrollment:.2f} ms, estkit {full.cpu_ms_per_enrollment:.2f} ms"
            )
            rows.append(FloorRow(mode, bare, work, full))
    return rows


def _served(target: Target, name: str, mode: str, clients: int, duration: float) -> Result:
    result = target.run(mode, clients, duration)
    if result.failures or not result.enrollments:
        raise RuntimeError(f"{name} {mode}: {result.failures} requests failed")
    return result


def floor_table(rows: list[FloorRow]) -> str:
    def ms(result: Result) -> str:
        return f"{result.cpu_ms_per_enrollment:.2f}"

    return markdown_table(
        (
            "mode",
            "floor: requests/s",
            "floor: server CPU ms/request",
            "work floor: enrollments/s",
            "work floor: server CPU ms/enrollment",
            "estkit: enrollments/s",
            "estkit: server CPU ms/enrollment",
            "estkit's own work, ms",
            "estkit above the work floor, ms",
        ),
        (
            (
                row.mode,
                f"{row.floor.rate:.0f}",
                ms(row.floor),
                f"{row.work_floor.rate:.0f}",
                ms(row.work_floor),
                f"{row.estkit.rate:.0f}",
                ms(row.estkit),
                f"{row.estkit.cpu_ms_per_enrollment - row.floor.cpu_ms_per_enrollment:.2f}",
                f"{row.estkit.cpu_ms_per_enrollment - row.work_floor.cpu_ms_per_enrollment:.2f}",
            )
            for row in rows
        ),
    )


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) < 3 or sys.argv[3:] not in ([], ["--work"]):
        sys.exit("usage: python -m bench.floor serve DATA_DIR [--work]")
    serve(Path(sys.argv[2]), work=sys.argv[3:] == ["--work"])
