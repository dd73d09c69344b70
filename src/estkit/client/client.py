"""The EST client (RFC 7030): synchronous, one connection per operation."""

from __future__ import annotations

import base64
import binascii
import email.utils
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, load_der_private_key

from estkit.client.csr import CsrTemplate
from estkit.client.errors import (
    AuthenticationRefused,
    AuthenticationRequired,
    BadResponse,
    GaveUpWaiting,
    OperationNotOffered,
    RequestRejected,
    RetryLater,
    ServerError,
)
from estkit.client.results import (
    CaCertificates,
    CsrAttributes,
    Enrollment,
    ServerGeneratedKey,
    is_ca,
)
from estkit.client.transport import (
    BasicAuth,
    ClientCertificate,
    Connection,
    Response,
    tls_context,
)
from estkit.errors import EstError
from estkit.wire.csrattrs import decode_csrattrs
from estkit.wire.multipart import parse_serverkeygen
from estkit.wire.pkcs7 import load_certs_only

WELL_KNOWN = "/.well-known/est"
Auth = BasicAuth | ClientCertificate
CsrInput = x509.CertificateSigningRequest | CsrTemplate
MIN_RETRY_DELAY = 1
T = TypeVar("T")


def parse_server_url(url: str, label: str | None = None) -> tuple[str, int, str]:
    """(host, port, EST base path) from https://host[:port][/.well-known/est[/label]]."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(f"{url!r}: EST needs an https:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    path = parts.path.rstrip("/")
    if path in ("", WELL_KNOWN):
        base = WELL_KNOWN
    elif path.startswith(WELL_KNOWN + "/") and path.count("/") == 3:
        base = path
    else:
        raise ValueError(f"{url!r}: the path must be empty or {WELL_KNOWN}[/label]")
    if label:
        base = f"{WELL_KNOWN}/{label}"
    return parts.hostname, parts.port or 443, base


def load_trust_anchors(source: Sequence[x509.Certificate] | str | Path) -> list[x509.Certificate]:
    if isinstance(source, str | Path):
        try:
            return x509.load_pem_x509_certificates(Path(source).read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read trust anchors from {source}: {exc}") from exc
    return list(source)


def retry_delay(value: str | None, default: int = 60) -> int:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0, int((when - datetime.now(UTC)).total_seconds()))


def decode_base64_body(response: Response) -> bytes:
    """The DER of a base64 body (RFC 8951); raw DER from older servers is tolerated."""
    try:
        return base64.b64decode(b"".join(response.body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        if response.body[:1] == b"\x30":
            return response.body
        raise BadResponse("the server's answer is neither base64 (RFC 8951) nor DER") from exc


class EstClient:
    """Talks to one EST server (and label) with one set of credentials.

    ``trust_anchors=None`` is the bootstrap of RFC 7030 §4.1.1: the server is not
    authenticated, so only :meth:`cacerts` is allowed and no credentials may be given (none
    are ever sent on an unverified connection). The caller must then have the answer
    confirmed out of band (a person, or a known fingerprint) before trusting it.
    """

    def __init__(
        self,
        url: str,
        trust_anchors: Sequence[x509.Certificate] | str | Path | None,
        auth: Auth | None = None,
        label: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port, self.base_path = parse_server_url(url, label)
        if trust_anchors is None and auth is not None:
            raise ValueError(
                "credentials are never sent on an unverified (bootstrap) connection: "
                "give trust anchors, or no auth"
            )
        self.trust_anchors = None if trust_anchors is None else load_trust_anchors(trust_anchors)
        self.auth = auth
        self.timeout = timeout

    @property
    def verified(self) -> bool:
        """Whether the server's certificate is checked (False only for bootstrap)."""
        return self.trust_anchors is not None

    # Operations -----------------------------------------------------------------------------

    def cacerts(self) -> CaCertificates:
        """RFC 7030 §4.1: the CA certificates, to be used as explicit trust anchors."""
        response = self._exchange("GET", "cacerts")
        self._expect(response, "application/pkcs7-mime")
        return CaCertificates(tuple(self._certificates(response)))

    def csrattrs(self) -> CsrAttributes:
        """RFC 7030 §4.5: what to put in the CSR; 204 and 404 both mean nothing."""
        response = self._exchange("GET", "csrattrs", accept_missing=True)
        if response.status in (204, 404):
            return CsrAttributes(())
        self._expect(response, "application/csrattrs")
        try:
            return CsrAttributes(decode_csrattrs(decode_base64_body(response)))
        except EstError as exc:
            raise BadResponse(f"the server's csrattrs answer is malformed: {exc}") from exc

    def enroll(self, csr: CsrInput) -> Enrollment:
        """RFC 7030 §4.2.1 simpleenroll."""
        return self._enroll("simpleenroll", csr)

    def serverkeygen(self, csr: CsrInput) -> ServerGeneratedKey:
        """RFC 7030 §4.4: the server makes the key; the CSR names the subject and extensions.

        The CSR's own key only signs the request (and hints at the key type). Raises
        :class:`OperationNotOffered` when the server answers 501.
        """
        response, _ = self._post_csr("serverkeygen", csr)
        self._expect(response, "multipart/mixed")
        return server_generated_key(response)

    def reenroll(self, csr: CsrInput) -> Enrollment:
        """RFC 7030 §4.2.2 simplereenroll: needs ``auth`` to be the current certificate."""
        if not isinstance(self.auth, ClientCertificate):
            raise ValueError(
                "reenroll authenticates with the current certificate: pass "
                "auth=ClientCertificate(cert_file, key_file)"
            )
        return self._enroll("simplereenroll", csr)

    # Plumbing -------------------------------------------------------------------------------

    def _connect(self, tls12_only: bool = False) -> Connection:
        certificate = self.auth if isinstance(self.auth, ClientCertificate) else None
        if self.trust_anchors is None:
            # Bootstrap: nothing that identifies the client goes on this connection.
            certificate = None
        context = tls_context(self.trust_anchors, certificate, tls12_only)
        return Connection(self.host, self.port, context, self.timeout, certificate is not None)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "*/*"}
        if isinstance(self.auth, BasicAuth) and self.trust_anchors is not None:
            token = f"{self.auth.user}:{self.auth.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        return headers

    def _exchange(self, method: str, operation: str, accept_missing: bool = False) -> Response:
        if self.trust_anchors is None and operation != "cacerts":
            raise ValueError(
                f"{operation} needs a verified server: only cacerts may be fetched without "
                "trust anchors (RFC 7030 §4.1.1)"
            )
        with self._connect() as connection:
            response = connection.request(
                method, f"{self.base_path}/{operation}", headers=self._headers()
            )
        return self._check(response, accept_missing, operation)

    def _post_csr(
        self, operation: str, csr: CsrInput
    ) -> tuple[Response, x509.CertificateSigningRequest]:
        if self.trust_anchors is None:
            raise ValueError(f"{operation} needs trust anchors: the server must be verified")
        link = isinstance(csr, CsrTemplate) and csr.link_pop
        with self._connect(tls12_only=link) as connection:
            signed = csr.build(connection.tls_unique) if isinstance(csr, CsrTemplate) else csr
            body = base64.encodebytes(signed.public_bytes(Encoding.DER))
            headers = self._headers() | {"Content-Type": "application/pkcs10"}
            response = connection.request("POST", f"{self.base_path}/{operation}", body, headers)
        return self._check(response, operation=operation), signed

    def _enroll(self, operation: str, csr: CsrInput) -> Enrollment:
        response, signed = self._post_csr(operation, csr)
        self._expect(response, "application/pkcs7-mime")
        certificates = self._certificates(response)
        issued = _issued_certificate(certificates, signed)
        return Enrollment(issued, tuple(c for c in certificates if c is not issued))

    def _check(
        self, response: Response, accept_missing: bool = False, operation: str = ""
    ) -> Response:
        status = response.status
        if status == 200 or (accept_missing and status in (204, 404)):
            return response
        reason = response.text[:500] or f"HTTP {status}"
        if status == 202 or (status == 503 and "Retry-After" in response.headers):
            raise RetryLater(status, retry_delay(response.headers.get("Retry-After")), reason)
        if status == 401:
            detail = f" ({response.text[:500]})" if response.text else ""
            if self.auth is None or isinstance(self.auth, ClientCertificate):
                raise AuthenticationRequired(
                    f"the server requires a user name and password (401){detail}"
                )
            raise AuthenticationRefused(
                f"the server refused the user name or password (401){detail}"
            )
        if 400 <= status < 500:
            raise RequestRejected(status, reason)
        if status == 501:
            raise OperationNotOffered(operation or "this operation", reason)
        if status >= 500:
            raise ServerError(status, reason)
        raise BadResponse(f"unexpected HTTP status {status}: {reason}")

    @staticmethod
    def _expect(response: Response, media_type: str) -> None:
        actual = response.content_type.split(";")[0].strip().lower()
        if actual != media_type:
            raise BadResponse(
                f"expected {media_type}, the server sent '{response.content_type or 'nothing'}'"
            )

    @staticmethod
    def _certificates(response: Response) -> list[x509.Certificate]:
        try:
            certificates = load_certs_only(decode_base64_body(response))
        except EstError as exc:
            raise BadResponse(f"the server's PKCS#7 answer is malformed: {exc}") from exc
        if not certificates:
            raise BadResponse("the server's PKCS#7 answer holds no certificate")
        return certificates


def server_generated_key(response: Response) -> ServerGeneratedKey:
    """The key and certificate of a 200 serverkeygen answer (RFC 7030 §4.4.2)."""
    try:
        parts = parse_serverkeygen(response.content_type, response.body)
    except EstError as exc:
        raise BadResponse(f"the server's serverkeygen answer is malformed: {exc}") from exc
    try:
        key = load_der_private_key(parts.private_key_der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadResponse(
            f"the server's serverkeygen key part is not a DER PrivateKeyInfo: {exc}"
        ) from exc
    try:
        certificates = load_certs_only(parts.certs_only_der)
    except EstError as exc:
        raise BadResponse(f"the server's serverkeygen certificate part: {exc}") from exc
    issued = next((c for c in certificates if c.public_key() == key.public_key()), None)
    if issued is None:
        raise BadResponse("the server's serverkeygen answer holds no certificate for its key")
    extra = tuple(c for c in certificates if c is not issued)
    return ServerGeneratedKey(key, issued, extra)


def _issued_certificate(
    certificates: list[x509.Certificate], csr: x509.CertificateSigningRequest
) -> x509.Certificate:
    """The certificate for the CSR's key, wherever the server put it in the PKCS#7."""
    for cert in certificates:
        if cert.public_key() == csr.public_key():
            return cert
    leaves = [c for c in certificates if not is_ca(c)]
    if len(leaves) == 1:
        return leaves[0]
    raise BadResponse("the server's answer holds no certificate for the CSR's key")


def wait(seconds: float) -> None:
    """Sleep (a seam for tests of the retry loop)."""
    time.sleep(seconds)


def with_retries(
    operation: Callable[[], T],
    max_wait: float,
    *,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_wait: Callable[[RetryLater, float], None] | None = None,
) -> T:
    """Run ``operation`` again after each RetryLater (202, or 503 with Retry-After).

    RFC 7030 §4.2.3: the client waits at least the Retry-After delay and then repeats the
    same request; ``operation`` is expected to send an identical request each time (pass a
    built CSR, not a template, unless proof-of-possession linking forces a new signature on
    every connection). ``on_wait(error, waited)`` is called before each wait. When the next
    wait would end beyond ``max_wait`` seconds from the start, raises :class:`GaveUpWaiting`.
    """
    started = clock()
    while True:
        try:
            return operation()
        except RetryLater as exc:
            delay = max(MIN_RETRY_DELAY, exc.delay)
            waited = clock() - started
            if waited + delay > max_wait:
                raise GaveUpWaiting(waited, max_wait, exc) from exc
            if on_wait is not None:
                on_wait(exc, waited)
            (sleep or wait)(delay)
