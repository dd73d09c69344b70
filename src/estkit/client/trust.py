"""Trust anchors: bootstrap (RFC 7030 §4.1.1), fingerprints, and certificate chains."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.client.client import EstClient
from estkit.client.results import CaCertificates

_FINGERPRINT_PREFIX = re.compile(r"^\s*sha-?256\s*[:=]?\s*", re.IGNORECASE)


def fingerprint(cert: x509.Certificate) -> str:
    """``SHA256:AB:CD:...``: the SHA-256 of the certificate's DER, as people compare it."""
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def parse_fingerprint(text: str) -> bytes:
    """The 32 bytes of ``SHA256:HEX`` (prefix optional; colons, spaces and case ignored)."""
    hex_digits = re.sub(r"[\s:]", "", _FINGERPRINT_PREFIX.sub("", text))
    try:
        digest = bytes.fromhex(hex_digits)
    except ValueError:
        digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError(
            f"{text!r} is not a SHA-256 fingerprint: expected SHA256: followed by 64 hex digits"
        )
    return digest


def matching_certificate(
    certificates: Sequence[x509.Certificate], digest: bytes
) -> x509.Certificate | None:
    """The certificate whose DER has this SHA-256, if any."""
    for cert in certificates:
        if hashlib.sha256(cert.public_bytes(Encoding.DER)).digest() == digest:
            return cert
    return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return _signed_by(cert, cert)


def issuer_in(cert: x509.Certificate, pool: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The certificate in ``pool`` that really signed ``cert`` (names and signature)."""
    if is_self_signed(cert):
        return None
    return next((c for c in pool if c != cert and _signed_by(cert, c)), None)


def chain_for(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate], include_root: bool = False
) -> list[x509.Certificate]:
    """The CA certificates above ``leaf`` found in ``pool``, nearest first (leaf excluded)."""
    chain: list[x509.Certificate] = []
    current = leaf
    while (issuer := issuer_in(current, pool)) is not None and issuer not in chain:
        if is_self_signed(issuer) and not include_root:
            break
        chain.append(issuer)
        current = issuer
    return chain


def anchors_from_pin(
    certificates: Sequence[x509.Certificate], pinned: x509.Certificate
) -> list[x509.Certificate]:
    """What a confirmed fingerprint vouches for, root first.

    The pinned certificate, the certificates above it (each one's signature checked, up to a
    root), and those below it whose signatures chain to it. Anything else in an unverified
    answer could have been put there by whoever answered, and is left out.
    """
    trusted = [*reversed(chain_for(pinned, certificates, include_root=True)), pinned]
    changed = True
    while changed:
        changed = False
        for cert in certificates:
            if cert not in trusted and any(_signed_by(cert, t) for t in trusted):
                trusted.append(cert)
                changed = True
    return trusted


def bootstrap_cacerts(url: str, label: str | None = None, timeout: float = 30.0) -> CaCertificates:
    """RFC 7030 §4.1.1: /cacerts over TLS without verifying the server, sending nothing.

    The answer is untrusted until a person (or a fingerprint known in advance) confirms it.
    """
    return EstClient(url, None, label=label, timeout=timeout).cacerts()
