"""Building CSRs on the client, including the tls-unique link of RFC 7030 §3.5."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import AttributeOID

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")


def generate_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    """A new private key: ec-p256, ec-p384, rsa-BITS (2048 or more) or ed25519."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa-") and key_type[4:].isdigit() and int(key_type[4:]) >= 2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def key_type_of(key: PrivateKeyTypes) -> str:
    """The key type name of an existing key (what :func:`generate_key` would make)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        names = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}
        if key.curve.name in names:
            return names[key.curve.name]
        raise ValueError(f"unsupported elliptic curve {key.curve.name}; use P-256 or P-384")
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ValueError(f"unsupported key type {type(key).__name__}; use EC, RSA or Ed25519")


def signing_key(key: PrivateKeyTypes) -> CertificateIssuerPrivateKeyTypes:
    """``key`` if it can sign a CSR here (EC P-256/P-384, RSA, Ed25519), else ValueError."""
    key_type_of(key)
    assert isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    )
    return key


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


@dataclass(frozen=True)
class CsrTemplate:
    """What to ask for; the CSR is signed on the connection that carries it.

    With ``link_pop`` the challengePassword is base64 of that connection's tls-unique, which
    is why the CSR cannot be made before the connection exists.
    """

    key: CertificateIssuerPrivateKeyTypes
    subject: x509.Name
    sans: Sequence[x509.GeneralName] = ()
    link_pop: bool = False

    def build(self, tls_unique: bytes | None) -> x509.CertificateSigningRequest:
        builder = x509.CertificateSigningRequestBuilder().subject_name(self.subject)
        if self.sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(self.sans)), critical=False
            )
        if self.link_pop:
            if tls_unique is None:
                raise ValueError("proof-of-possession linking needs a TLS 1.2 connection")
            builder = builder.add_attribute(
                AttributeOID.CHALLENGE_PASSWORD, base64.b64encode(tls_unique)
            )
        return builder.sign(self.key, _hash_for(self.key))
