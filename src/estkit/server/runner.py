"""Running an instance: load configuration and keys, open the store, serve both listeners."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace

from aiohttp import web

from estkit.authority.accounts import Accounts
from estkit.authority.anchor_crl import load_anchor_crls
from estkit.authority.ca import CertificateAuthority, load_pem_certificates
from estkit.authority.crl import CrlPublisher
from estkit.authority.issue import PublicUrls
from estkit.authority.keys import load_private_key
from estkit.authority.serverkeygen import KeyArchive
from estkit.authority.service import Authority
from estkit.config import Config
from estkit.server.app import make_est_app
from estkit.server.context import ServerContext
from estkit.server.crl_refresh import start_crl_refresh
from estkit.server.middleware import protocol_logger
from estkit.server.ocsp_renewal import start_ocsp
from estkit.server.public import make_public_app
from estkit.server.subject_indexing import start_subject_indexing
from estkit.server.tls import server_context
from estkit.store import Store

log = logging.getLogger("estkit.server")


@dataclass(frozen=True)
class Listening:
    """Where the instance ended up listening (ports may have been 0 = any free port)."""

    https_url: str
    http_url: str


def _listening_socket(host: str, port: int, setting: str, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server(
            (host, port), family=family, backlog=1024, reuse_port=reuse_port
        )
    except OSError as exc:
        raise OSError(
            f"cannot listen on {host}:{port} ({exc.strerror}); free the port or change "
            f"[server] {setting}"
        ) from None
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _runner(app: web.Application, keepalive_timeout: float) -> web.AppRunner:
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=keepalive_timeout, logger=protocol_logger()
    )
    await runner.setup()
    return runner


def _protocol_factory(runner: web.AppRunner) -> web.Server:
    assert runner.server is not None, "runner.setup() creates the server"
    return runner.server


async def serve(
    config: Config,
    on_ready: Callable[[Listening], None],
    *,
    reuse_port: bool = False,
    lifeline: int | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, or until the ``lifeline`` descriptor (a pipe whose
    other end the supervisor holds) reaches end of file: a worker of ``serve --workers`` stops
    when its supervisor is gone, even killed. ``reuse_port`` binds with SO_REUSEPORT, so the
    workers each have their own sockets on the same ports (server/supervisor.py)."""
    settings = config.server
    load_private_key(config.tls_key)  # refuse a TLS key that others may read, like CA keys
    store = Store(
        config.store_url,
        busy_timeout=config.store_busy_timeout,
        retry_after=settings.retry_after,
    )
    store.create_schema(f"estkit db upgrade --dir {config.path.parent}")
    ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
    anchors = {name: load_pem_certificates(path) for name, path in config.anchors.items()}
    anchor_crls = load_anchor_crls(config.anchor_crls, anchors)
    trust = [*ca.chain, *(cert for certs in anchors.values() for cert in certs)]
    tls = server_context(config.tls_cert, config.tls_key, trust, settings.tls_max_version)
    loop = asyncio.get_running_loop()

    # Bind first: the plain-HTTP port goes into the URLs of every certificate issued.
    http_socket = _listening_socket(settings.host, settings.http_port, "http_port", reuse_port)
    https_socket = _listening_socket(settings.host, settings.port, "port", reuse_port)
    http_port = http_socket.getsockname()[1]
    public_base = settings.public_http_url.rstrip("/") or (
        f"http://{_url_host(settings.public_host)}:{http_port}"
    )
    authority = Authority(
        ca, config.profiles, store, PublicUrls(public_base), anchors, anchor_crls=anchor_crls
    )
    crls = {g.issuing_id: CrlPublisher(g, store, config.crl) for g in ca.generations}
    ocsp, ocsp_renewal = start_ocsp(config, authority)
    key_archive = (
        KeyArchive.load(config.key_archive_recipient) if config.key_archive_recipient else None
    )
    context = ServerContext(
        authority=authority,
        accounts=Accounts(store),
        settings=settings,
        crls=crls,
        ocsp=ocsp,
        key_archive=key_archive,
    )
    crl_refresh = start_crl_refresh(list(crls.values()))
    subject_indexing = start_subject_indexing(store) if store.batches_subject_index() else None

    public_runner = await _runner(make_public_app(context), settings.header_timeout)
    est_runner = await _runner(make_est_app(context), settings.header_timeout)
    http_server = await loop.create_server(_protocol_factory(public_runner), sock=http_socket)
    https_server = await loop.create_server(
        _protocol_factory(est_runner),
        sock=https_socket,
        ssl=tls,
        ssl_handshake_timeout=settings.tls_handshake_timeout,
    )
    host = _url_host(settings.host)
    https_port = https_socket.getsockname()[1]
    frozen = _freeze_startup_objects()
    log.info(
        "event loop: %s; %d startup objects exempt from garbage collection",
        type(loop).__module__.split(".")[0],
        frozen,
    )
    on_ready(Listening(f"https://{host}:{https_port}", f"http://{host}:{http_port}"))

    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if lifeline is not None:
        loop.add_reader(lifeline, stop.set)  # readable only at EOF: the supervisor is gone
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        if lifeline is not None:
            loop.remove_reader(lifeline)
        crl_refresh.cancel()
        ocsp_renewal.cancel()
        if subject_indexing is not None:
            subject_indexing.cancel()
        for server in (https_server, http_server):
            server.close()
        await est_runner.cleanup()
        await public_runner.cleanup()
        store.close()


def _freeze_startup_objects() -> int:
    """Move everything made so far (modules, the CA, the store's metadata: about 100,000
    objects, all living as long as the process) out of the collector's reach.  A full
    collection walks every tracked object with the event loop stopped: over these it took
    about 80 ms, a stall every connection felt in the latency tail.  Returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def with_overrides(config: Config, host: str | None, port: int | None) -> Config:
    """The configuration with command-line host/port taking precedence."""
    server = config.server
    if host is not None:
        server = replace(server, host=host)
    if port is not None:
        server = replace(server, port=port)
    return replace(config, server=server)
