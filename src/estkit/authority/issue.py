"""Building and signing an end-entity certificate from an accepted request."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AuthorityInformationAccessOID

from estkit.authority.ca import CertificateAuthority
from estkit.authority.checks import requested_sans
from estkit.authority.profile import Profile
from estkit.authority.signing import sign_builder
from estkit.wire.csr import csr_facts

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
    """(notBefore, notAfter) from the profile, never outside the issuing CA's own validity."""
    not_before = max(now - CLOCK_SKEW_ALLOWANCE, ca.issuing.not_valid_before_utc)
    not_after = min(now + profile.validity, ca.issuing.not_valid_after_utc)
    return not_before.replace(microsecond=0), not_after.replace(microsecond=0)


@functools.lru_cache(maxsize=32)
def _issuer_extensions(issuing_id: str, urls: PublicUrls) -> tuple[x509.ExtensionType, ...]:
    """Authority key identifier, CRL distribution point and AIA: the same for every
    certificate of one issuing CA, so built once (the AKI names the issuer's own subject
    key identifier, as RFC 5280 §4.2.1.1 asks)."""
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


_BASES: dict[tuple[str, bool], tuple[x509.Certificate, x509.CertificateBuilder]] = {}


def _base_builder(
    issuing: x509.Certificate, issuing_id: str, is_rsa: bool
) -> x509.CertificateBuilder:
    """Issuer name, basic constraints and key usage: the same for every certificate of one
    issuing CA and key kind, so set once (builders are immutable)."""
    key = (issuing_id, is_rsa)
    cached = _BASES.get(key)
    if cached is not None and cached[0] is issuing:
        return cached[1]
    builder = (
        x509.CertificateBuilder()
        .issuer_name(issuing.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(is_rsa), critical=True)
    )
    _BASES[key] = (issuing, builder)
    return builder


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
    issuing_id = ca.issuing_id
    not_before, not_after = validity_window(ca, profile, now)
    if public_key is None:
        public_key, spki = facts.public_key, facts.spki
    else:
        spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    subject = facts.subject
    key_id = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        _base_builder(ca.issuing, issuing_id, isinstance(public_key, rsa.RSAPublicKey))
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(key_id, critical=False)
    )
    for extension in _issuer_extensions(issuing_id, urls):
        builder = builder.add_extension(extension, critical=False)
    eku_oids = profile.eku_oids
    if eku_oids:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku_oids)), critical=False)
    sans = requested_sans(csr)
    if sans:
        # RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=len(subject) == 0
        )
    cert = sign_builder(builder, ca.issuing_key)
    return IssuedCertificate(cert, spki, tuple(sans), key_id.digest, facts.subject_text)
