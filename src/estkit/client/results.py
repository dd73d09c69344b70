"""Typed answers of an EST server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from estkit.wire.csrattrs import CsrAttribute, CsrAttrItem, oid_from_value

OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"  # noqa: S105 - an OID, not a secret
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_ED25519 = "1.3.101.112"
CURVES = {"1.2.840.10045.3.1.7": "ec-p256", "1.3.132.0.34": "ec-p384", "1.3.132.0.35": "ec-p521"}


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def order_chain(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Certificates ordered leaf-first by issuer links, whatever order the server sent."""
    remaining = list(certificates)
    subjects = {c.issuer for c in remaining if c.issuer != c.subject}
    leaves = [c for c in remaining if c.subject not in subjects] or remaining[:1]
    ordered = [leaves[0]] if leaves else []
    remaining = [c for c in remaining if c not in ordered]
    while remaining and ordered:
        issuer = next((c for c in remaining if c.subject == ordered[-1].issuer), None)
        if issuer is None or ordered[-1].issuer == ordered[-1].subject:
            break
        ordered.append(issuer)
        remaining.remove(issuer)
    return ordered + remaining


@dataclass(frozen=True)
class CaCertificates:
    """The answer of /cacerts: the certificates needed to validate what the server issues."""

    certificates: tuple[x509.Certificate, ...]

    @property
    def roots(self) -> list[x509.Certificate]:
        return [c for c in self.certificates if c.issuer == c.subject]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [c for c in self.certificates if c.issuer != c.subject]


@dataclass(frozen=True)
class CsrAttributes:
    """The answer of /csrattrs, with the parts a client acts on picked out."""

    items: tuple[CsrAttrItem, ...]

    @property
    def oids(self) -> list[str]:
        return [i if isinstance(i, str) else i.oid for i in self.items]

    @property
    def wants_pop_linking(self) -> bool:
        """RFC 7030 §3.5: challengePassword listed means tls-unique linking is required."""
        return OID_CHALLENGE_PASSWORD in self.oids

    @property
    def key_type(self) -> str | None:
        """The key type asked for ('ec-p256', 'ec-p384', 'rsa', 'ed25519'), if any."""
        for item in self.items:
            if isinstance(item, CsrAttribute) and item.oid == OID_EC_PUBLIC_KEY:
                for value in item.values:
                    curve = oid_from_value(value)
                    if curve in CURVES:
                        return CURVES[curve]
        oids = self.oids
        if OID_RSA_ENCRYPTION in oids:
            return "rsa"
        if OID_ED25519 in oids:
            return "ed25519"
        if OID_EC_PUBLIC_KEY in oids:
            return "ec-p256"
        return None

    @property
    def requested_extensions(self) -> list[str]:
        """OIDs of extensions the server asks for in an extensionRequest attribute."""
        found: list[str] = []
        for item in self.items:
            if isinstance(item, CsrAttribute) and item.oid == OID_EXTENSION_REQUEST:
                found.extend(oid for oid in map(oid_from_value, item.values) if oid)
        return found


@dataclass(frozen=True)
class Enrollment:
    """An issued certificate and whatever else the server put in the answer."""

    certificate: x509.Certificate
    extra_certificates: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class ServerGeneratedKey:
    """The answer of /serverkeygen: a key made by the server and its certificate."""

    private_key: PrivateKeyTypes
    certificate: x509.Certificate
    extra_certificates: tuple[x509.Certificate, ...] = ()
