"""A small EST server for client tests: aiohttp over TLS on loopback, in a thread.

It records every request (method, path, headers, body, whether a client certificate was
presented) and forwards it to a real estkit server, except where a test scripts an answer
(e.g. 202 + Retry-After for the first N simpleenroll requests).
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept")
RETURNED_HEADERS = ("Content-Type", "Content-Transfer-Encoding", "Retry-After", "WWW-Authenticate")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_certificate: bool


Script = Callable[[Recorded], web.Response | None]


@dataclass
class EstProxy:
    upstream_host: str
    upstream_port: int
    upstream_ca: Path
    cert_file: Path
    key_file: Path
    script: Script | None = None
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> EstProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        context.load_verify_locations(self.upstream_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        record = Recorded(
            request.method,
            request.path,
            dict(request.headers),
            await request.read(),
            bool(ssl_object and ssl_object.getpeercert()),
        )
        self.requests.append(record)
        if self.script is not None:
            answer = self.script(record)
            if answer is not None:
                return answer
        return await asyncio.to_thread(self._forward, record)

    def _forward(self, record: Recorded) -> web.Response:
        context = ssl.create_default_context(cafile=str(self.upstream_ca))
        connection = http.client.HTTPSConnection(
            self.upstream_host, self.upstream_port, context=context, timeout=30
        )
        try:
            headers = {k: v for k, v in record.headers.items() if k in FORWARDED_HEADERS}
            connection.request(
                record.method, record.path, body=record.body or None, headers=headers
            )
            answer = connection.getresponse()
            body = answer.read()
            returned = {k: answer.headers[k] for k in RETURNED_HEADERS if answer.headers[k]}
        finally:
            connection.close()
        return web.Response(status=answer.status, body=body, headers=returned)

    def paths(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def issue_tls_certificate(data_dir: Path, directory: Path, names: list[str]) -> tuple[Path, Path]:
    """A TLS server certificate for ``names`` (DNS) from an instance's issuing CA."""
    issuing = x509.load_pem_x509_certificate((data_dir / "ca" / "issuing.pem").read_bytes())
    issuing_key = serialization.load_pem_private_key(
        (data_dir / "ca" / "issuing.key").read_bytes(), None
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(issuing_key, hashes.SHA256())
    )
    cert_path = directory / "wrong-name.pem"
    key_path = directory / "wrong-name.key"
    cert_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + issuing.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
