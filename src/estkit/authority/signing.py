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
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from estkit.authority.token import TokenEcKey, TokenRsaKey
from estkit.wire.der import assemble_signed, der_elements
from estkit.wire.keytypes import generate_key, key_type_of, sign_data, signature_hash


@cache
def _stand_in(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    """A throwaway key per kind, made once: it only fixes the signatureAlgorithm field."""
    return generate_key(key_type)


def _stand_in_for(key: TokenEcKey | TokenRsaKey) -> CertificateIssuerPrivateKeyTypes:
    # PKCS#1 v1.5 with SHA-256 names the same algorithm whatever the modulus size.
    return _stand_in("rsa-2048" if isinstance(key, rsa.RSAPrivateKey) else key_type_of(key))


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


__all__ = ["sign_builder"]
