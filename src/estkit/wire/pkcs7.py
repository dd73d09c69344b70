"""Certs-only CMS SignedData (RFC 5652 §5, RFC 7030 §4.1.3 and §4.2.3)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from estkit.errors import MalformedDer


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """DER of a degenerate SignedData holding exactly these certificates, no signers."""
    return pkcs7.serialize_certificates(list(certificates), Encoding.DER)


def load_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a DER certs-only SignedData, in the order they are encoded."""
    try:
        return pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        raise MalformedDer(f"not a DER certs-only PKCS#7 SignedData: {exc}") from exc
