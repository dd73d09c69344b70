"""Building and signing an end-entity certificate from an accepted request."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AuthorityInformationAccessOID

from estkit.authority.ca import CertificateAuthority
from estkit.authority.checks import requested_sans
from estkit.authority.profile import Profile
from estkit.authority.signing import sign_builder
from estkit.errors import ServiceUnavailable
from estkit.wire.csr import csr_facts
from estkit.wire.der import subject_public_key

CLOCK_SKEW_ALLOWANCE = timedelta(minutes=5)
"""notBefore is backdated this much so devices with slightly slow clocks accept the cert."""


@dataclass(frozen=True)
class PublicUrls:
    """Where relying parties fetch CA certificates, CRLs and OCSP (the plain-HTTP listener)."""

    http_base: str

    def ca_certificate(self, ca_id: str) -> str:
        return f"{self.http_base}/ca/{ca_id}.crt"

    def crl(self, ca_id: str) -> str:
        return f"{self.http_base}/crl/{ca_id}.crl"

    def ocsp(self) -> str:
        """The OCSP responder (RFC 6960 A.1), for every certificate of the issuing CA."""
        return f"{self.http_base}/ocsp"


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate with the parts it was built from, so that its record need not
    parse them back out of it."""

    certificate: x509.Certificate
    spki: bytes
    """DER SubjectPublicKeyInfo of the certified key."""
    sans: tuple[x509.GeneralName, ...]
    """The subjectAltName entries, in extension order (none: no extension)."""
    subject_key_id: bytes | None
    subject_text: str
    """The subject as RFC 4514 text."""

    @classmethod
    def read_off(cls, cert: x509.Certificate) -> IssuedCertificate:
        """The parts of a certificate built elsewhere (init's TLS certificate, the OCSP
        responder's), read off the certificate itself."""
        extensions = cert.extensions
        try:
            sans = tuple(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = ()
        try:
            key_id: bytes | None = extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value.digest
        except x509.ExtensionNotFound:
            key_id = None
        spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return cls(cert, spki, sans, key_id, cert.subject.rfc4514_string())


def _key_usage(is_rsa: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def validity_window(
    ca: CertificateAuthority, profile: Profile, now: datetime
) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) from the profile, never outside the issuing CA's own validity;
    ServiceUnavailable once that has run out (an operator must renew the issuing CA)."""
    not_before = max(now - CLOCK_SKEW_ALLOWANCE, ca.issuing.not_valid_before_utc)
    not_after = min(now + profile.validity, ca.issuing.not_valid_after_utc)
    not_before, not_after = not_before.replace(microsecond=0), not_after.replace(microsecond=0)
    if not_after <= not_before:
        raise ServiceUnavailable(
            "the issuing CA certificate has expired, so nothing can be issued until an "
            "operator replaces it (estkit ca rollover)",
            retry_after=3600,
        )
    return not_before, not_after


def _issuer_extensions(issuing_id: str, urls: PublicUrls) -> tuple[x509.ExtensionType, ...]:
    """Authority key identifier, CRL distribution point and AIA (the AKI names the issuer's
    own subject key identifier, as RFC 5280 §4.2.1.1 asks)."""
    return (
        x509.AuthorityKeyIdentifier(bytes.fromhex(issuing_id), None, None),
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(urls.crl(issuing_id))],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(urls.ocsp()),
                ),
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(urls.ca_certificate(issuing_id)),
                ),
            ]
        ),
    )


def _extension(value: x509.ExtensionType, critical: bool = False) -> x509.Extension[Any]:
    return x509.Extension(value.oid, critical, value)


def _encoded(value: x509.ExtensionType, critical: bool = False) -> x509.Extension[Any]:
    """The extension with its value encoded once, by cryptography (``public_bytes``): the
    builder copies the bytes of an UnrecognizedExtension instead of reading the Python
    objects again for every certificate, and the certificate's DER is the same."""
    return x509.Extension(
        value.oid, critical, x509.UnrecognizedExtension(value.oid, value.public_bytes())
    )


@functools.cache
def _extended_key_usage(oids: tuple[x509.ObjectIdentifier, ...]) -> x509.Extension[Any]:
    return _encoded(x509.ExtendedKeyUsage(list(oids)))


@dataclass(frozen=True)
class _IssuerParts:
    """What every certificate of one issuing CA, key kind and set of URLs shares: built
    once, and given to the builder in one go (each of its setters copies the builder)."""

    issuing: x509.Certificate
    """The certificate they were read from (a renewed CA certificate may keep its key)."""
    name: x509.Name
    leading: tuple[x509.Extension[Any], ...]
    """Basic constraints and key usage, both critical."""
    trailing: tuple[x509.Extension[Any], ...]
    """After the subject key identifier: _issuer_extensions."""


_ISSUER_PARTS: dict[tuple[str, bool, PublicUrls], _IssuerParts] = {}


def _issuer_parts(ca: CertificateAuthority, urls: PublicUrls, is_rsa: bool) -> _IssuerParts:
    key = (ca.issuing_id, is_rsa, urls)
    parts = _ISSUER_PARTS.get(key)
    if parts is None or parts.issuing is not ca.issuing:
        parts = _ISSUER_PARTS[key] = _IssuerParts(
            issuing=ca.issuing,
            name=ca.issuing.subject,
            leading=(
                _encoded(x509.BasicConstraints(ca=False, path_length=None), critical=True),
                _encoded(_key_usage(is_rsa), critical=True),
            ),
            trailing=tuple(map(_encoded, _issuer_extensions(ca.issuing_id, urls))),
        )
    return parts


def key_identifier(spki: bytes) -> bytes:
    """RFC 5280 §4.2.1.2 method (1), the SHA-1 of the subjectPublicKey bits, taken from the
    SubjectPublicKeyInfo already encoded (what ``SubjectKeyIdentifier.from_public_key``
    computes after encoding the key again)."""
    return hashlib.sha1(subject_public_key(spki), usedforsecurity=False).digest()


def _naive_utc(moment: datetime) -> datetime:
    """A time as the builder's own setters keep it (naive, in UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def build_certificate(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    profile: Profile,
    serial: int,
    now: datetime,
    urls: PublicUrls,
    public_key: CertificatePublicKeyTypes | None = None,
) -> IssuedCertificate:
    """Sign the CSR's subject and key with the profile's extensions; nothing else is copied.

    ``public_key`` replaces the CSR's key: for serverkeygen the server made the key, and
    RFC 7030 §4.4.1 has the server ignore the CSR's own key.
    """
    facts = csr_facts(csr)
    not_before, not_after = validity_window(ca, profile, now)
    if public_key is None:
        public_key, spki = facts.public_key, facts.spki
    else:
        spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    subject = facts.subject
    key_id = key_identifier(spki)
    parts = _issuer_parts(ca, urls, isinstance(public_key, rsa.RSAPublicKey))
    extensions = [*parts.leading, _encoded(x509.SubjectKeyIdentifier(key_id)), *parts.trailing]
    eku_oids = profile.eku_oids
    if eku_oids:
        extensions.append(_extended_key_usage(eku_oids))
    sans = requested_sans(csr)
    if sans:
        # RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical.
        extensions.append(_extension(x509.SubjectAlternativeName(sans), len(subject) == 0))
    builder = x509.CertificateBuilder(
        issuer_name=parts.name,
        subject_name=subject,
        public_key=public_key,
        serial_number=serial,
        not_valid_before=_naive_utc(not_before),
        not_valid_after=_naive_utc(not_after),
        extensions=extensions,
    )
    cert = sign_builder(builder, ca.issuing_key)
    return IssuedCertificate(cert, spki, tuple(sans), key_id, facts.subject_text)
