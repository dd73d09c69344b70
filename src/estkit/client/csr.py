"""Building CSRs on the client, including the tls-unique link of RFC 7030 §3.5."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import AttributeOID

from estkit.wire.key_type_names import KEY_TYPES
from estkit.wire.keytypes import generate_key, key_type_of, signature_hash


def signing_key(key: PrivateKeyTypes) -> CertificateIssuerPrivateKeyTypes:
    """``key`` if it can sign a CSR here (EC P-256/P-384, RSA, Ed25519), else ValueError."""
    key_type_of(key)
    assert isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    )
    return key


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
        return builder.sign(self.key, signature_hash(self.key))


__all__ = ["KEY_TYPES", "CsrTemplate", "generate_key", "key_type_of", "signing_key"]
