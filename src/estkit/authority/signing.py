"""Signing certificates and CRLs with a CA key, whether cryptography holds it or a token does.

pyca/cryptography signs a builder only with a key it owns.  For a key in a PKCS#11 token the
builder is signed with a stand-in key of the same kind (same curve, or RSA with the same hash
and padding), so the to-be-signed bytes carry exactly the signatureAlgorithm the CA key will
use; those bytes are then signed by the token and the DER is put back together:
``SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }`` (RFC 5280 §4.1, §5.1).
"""

from __future__ import annotations

from functools import cache
from typing import overload

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from estkit.authority.token import TokenEcKey, TokenRsaKey
from estkit.wire.keytypes import generate_key, key_type_of, signature_hash


@cache
def _stand_in(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    """A throwaway key per kind, made once: it only fixes the signatureAlgorithm field."""
    return generate_key(key_type)


def _stand_in_for(key: TokenEcKey | TokenRsaKey) -> CertificateIssuerPrivateKeyTypes:
    # PKCS#1 v1.5 with SHA-256 names the same algorithm whatever the modulus size.
    return _stand_in("rsa-2048" if isinstance(key, rsa.RSAPrivateKey) else key_type_of(key))


def sign_data(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> bytes:
    """A signature over data as the certificate signatureAlgorithm of key names it."""
    digest = signature_hash(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    assert digest is not None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(digest))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), digest)
    raise TypeError(f"cannot sign with a {type(key).__name__}")


def _header(der: bytes, offset: int) -> tuple[int, int]:
    """(offset of the content, offset after it) of the DER element at offset."""
    length = der[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(der[start : start + size], "big")
        start += size
    return start, start + length


def der_elements(der: bytes) -> list[bytes]:
    """The encoded elements inside the outer SEQUENCE of der, each tag to end."""
    offset, end = _header(der, 0)
    elements = []
    while offset < end:
        _, after = _header(der, offset)
        elements.append(der[offset:after])
        offset = after
    return elements


def _tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def assemble_signed(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    """``SEQUENCE { tbs, algorithm, BIT STRING signature }``: a certificate or a CRL."""
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


@overload
def sign_builder(
    builder: x509.CertificateBuilder, key: CertificateIssuerPrivateKeyTypes
) -> x509.Certificate: ...


@overload
def sign_builder(
    builder: x509.CertificateRevocationListBuilder, key: CertificateIssuerPrivateKeyTypes
) -> x509.CertificateRevocationList: ...


def sign_builder(
    builder: x509.CertificateBuilder | x509.CertificateRevocationListBuilder,
    key: CertificateIssuerPrivateKeyTypes,
) -> x509.Certificate | x509.CertificateRevocationList:
    """Sign a certificate or CRL builder with key, a cryptography key or one in a token."""
    if not isinstance(key, TokenEcKey | TokenRsaKey):
        return builder.sign(key, signature_hash(key))
    draft = builder.sign(_stand_in_for(key), signature_hash(key))
    der = draft.public_bytes(serialization.Encoding.DER)
    tbs, algorithm, _ = der_elements(der)
    signed = assemble_signed(tbs, algorithm, sign_data(key, tbs))
    if isinstance(draft, x509.Certificate):
        return x509.load_der_x509_certificate(signed)
    return x509.load_der_x509_crl(signed)


__all__ = ["assemble_signed", "der_elements", "sign_builder", "sign_data"]
