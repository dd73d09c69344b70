"""One HTTPS connection to an EST server: TLS set-up, requests, channel binding.

Built on the standard library (``http.client``, ``ssl``) so that the client installs without
the server's dependencies, and so a request and its tls-unique value share one connection.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.client.errors import BadResponse, ServerUnreachable, TlsVerificationFailed

MAX_RESPONSE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic credentials (RFC 7617), sent only over verified TLS."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"BasicAuth(user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True)
class ClientCertificate:
    """A TLS client certificate (PEM, optionally with its chain) and its private key (PEM)."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes
    tls_version: str

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").strip()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()


def tls_context(
    trust_anchors: Sequence[x509.Certificate] | None,
    certificate: ClientCertificate | None = None,
    tls12_only: bool = False,
) -> ssl.SSLContext:
    """TLS 1.2+ client context; ``trust_anchors=None`` means no verification (bootstrap only)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if trust_anchors is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in trust_anchors)
        context.load_verify_locations(cadata=pem)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if certificate is not None:
        try:
            context.load_cert_chain(certificate.cert_file, certificate.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsVerificationFailed(
                f"cannot use client certificate {certificate.cert_file} with key "
                f"{certificate.key_file}: {exc}; check that both files exist, are PEM, and "
                "that the key belongs to the certificate"
            ) from exc
    return context


class Connection:
    """An open TLS connection to host:port, carrying one or more requests."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        timeout: float,
        presents_certificate: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.presents_certificate = presents_certificate
        self._http = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
        try:
            self._http.connect()
        except ssl.SSLCertVerificationError as exc:
            self._http.close()
            raise TlsVerificationFailed(
                f"TLS verification of {host}:{port} failed: "
                f"{str(exc.verify_message or exc.reason).rstrip('.')}; "
                "check the trust anchor (--ca-file) and the server name"
            ) from exc
        except ssl.SSLError as exc:
            self._http.close()
            raise TlsVerificationFailed(
                f"TLS handshake with {host}:{port} failed: {exc}{self._certificate_hint()}"
            ) from exc
        except OSError as exc:
            self._http.close()
            raise ServerUnreachable(
                f"cannot connect to {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
            ) from exc

    def _certificate_hint(self) -> str:
        if not self.presents_certificate:
            return ""
        return (
            "; the server may have refused the TLS client certificate: check that it is "
            "valid, not revoked, issued by a CA the server trusts, and allowed for client "
            "authentication (extended key usage clientAuth)"
        )

    @property
    def _sock(self) -> ssl.SSLSocket:
        sock = self._http.sock
        assert isinstance(sock, ssl.SSLSocket)
        return sock

    @property
    def tls_version(self) -> str:
        return self._sock.version() or "unknown"

    @property
    def tls_unique(self) -> bytes | None:
        """RFC 5929 tls-unique, or None on TLS 1.3 where it is undefined (RFC 9266)."""
        if self.tls_version != "TLSv1.2":
            return None
        return self._sock.get_channel_binding("tls-unique")

    def peer_certificates(self) -> list[x509.Certificate]:
        """The server's certificate (the chain is not exposed by ``ssl`` before 3.13)."""
        der = self._sock.getpeercert(binary_form=True)
        return [] if der is None else [x509.load_der_x509_certificate(der)]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        try:
            self._http.request(method, path, body=body, headers=headers or {})
            answer = self._http.getresponse()
            data = answer.read(MAX_RESPONSE_BYTES + 1)
        except (ssl.SSLError, http.client.RemoteDisconnected, ConnectionResetError) as exc:
            if not self.presents_certificate:
                raise ServerUnreachable(
                    f"the connection to {self.host}:{self.port} failed during the request: {exc}"
                ) from exc
            # TLS 1.3 clients learn that their certificate was refused only when they read.
            raise TlsVerificationFailed(
                f"{self.host}:{self.port} closed the connection without answering ({exc})"
                f"{self._certificate_hint()}"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(
                f"the connection to {self.host}:{self.port} failed during the request: {exc}"
            ) from exc
        if len(data) > MAX_RESPONSE_BYTES:
            raise BadResponse(f"the server's answer is over {MAX_RESPONSE_BYTES} bytes")
        return Response(answer.status, answer.headers, data, self.tls_version)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
