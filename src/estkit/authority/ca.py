"""The CA hierarchy this instance signs with: a root and an issuing CA."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from estkit.authority.token import (
    KeyRef,
    Pkcs11Uri,
    TokenEcKey,
    TokenKeyRef,
    TokenRsaKey,
    load_signing_key,
)


def load_pem_certificates(path: Path) -> list[x509.Certificate]:
    """All certificates of a PEM file, in file order."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ValueError(f"{path} holds no PEM certificate: {exc}") from exc


def subject_key_id(cert: x509.Certificate) -> str:
    """Hex SubjectKeyIdentifier, the stable name of a CA in URLs and records."""
    ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return ext.value.digest.hex()


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when issuer's name and key signed cert."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


RETIRED_DIR = "retired"
"""Beside the issuing CA's files: one directory per retired generation (named by its SKI)
holding root.pem, issuing.pem and the key: issuing.key, or issuing.uri (its ``pkcs11:`` URI)
when the key is in a token; written by ``estkit ca rollover``."""
RETIRED_KEY_URI = "issuing.uri"
LINKS_DIR = "links"
"""Beside the issuing CA's files: root rollover link certificates (OldWithNew, NewWithOld)."""


@dataclass(frozen=True)
class CertificateAuthority:
    """The current generation (root, issuing CA, its key) and the generations it replaced.

    New certificates are always signed by the current issuing CA.  A retired generation keeps
    its key so its certificates stay verifiable and revocable: it signs their CRLs and OCSP
    answers, and its certificates still authenticate, until they expire.
    """

    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: CertificateIssuerPrivateKeyTypes
    retired: tuple[CertificateAuthority, ...] = ()
    links: tuple[x509.Certificate, ...] = ()

    @classmethod
    def load(cls, root_cert: Path, issuing_cert: Path, issuing_key: KeyRef) -> CertificateAuthority:
        """The current generation from its files, with the retired generations and links
        found beside them (those whose issuing CA has expired are left out)."""
        current = cls._load_generation(root_cert, issuing_cert, issuing_key)
        now = datetime.now(UTC)
        retired = []
        retired_dir = issuing_cert.parent / RETIRED_DIR
        for directory in sorted(retired_dir.iterdir()) if retired_dir.is_dir() else []:
            generation = cls._load_generation(
                directory / "root.pem",
                directory / "issuing.pem",
                _retired_key(directory, issuing_key),
            )
            if generation.issuing.not_valid_after_utc > now:
                retired.append(generation)
        links_dir = issuing_cert.parent / LINKS_DIR
        links = [
            cert
            for path in (sorted(links_dir.glob("*.pem")) if links_dir.is_dir() else [])
            for cert in load_pem_certificates(path)
            if cert.not_valid_after_utc > now
        ]
        return replace(current, retired=tuple(retired), links=tuple(links))

    @classmethod
    def _load_generation(
        cls, root_cert: Path, issuing_cert: Path, issuing_key: KeyRef
    ) -> CertificateAuthority:
        root = load_pem_certificates(root_cert)[0]
        issuing = load_pem_certificates(issuing_cert)[0]
        key = load_signing_key(issuing_key)
        if not is_issued_by(issuing, root):
            raise ValueError(f"{issuing_cert} is not issued by the root CA in {root_cert}")
        if key.public_key() != issuing.public_key():
            raise ValueError(f"{issuing_key} is not the key of the issuing CA in {issuing_cert}")
        return cls(root=root, issuing=issuing, issuing_key=key)

    @property
    def generations(self) -> tuple[CertificateAuthority, ...]:
        """The current generation first, then the retired ones."""
        return (self, *self.retired)

    def generation(self, issuer_id: str) -> CertificateAuthority | None:
        """The generation whose issuing CA has this SKI (hex)."""
        return next((g for g in self.generations if g.issuing_id == issuer_id), None)

    def generation_for(self, cert: x509.Certificate) -> CertificateAuthority | None:
        """The generation whose issuing CA signed cert."""
        return next((g for g in self.generations if is_issued_by(cert, g.issuing)), None)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """What a client needs to validate every certificate this CA still stands behind
        (RFC 7030 §4.1.3): the current issuing CA and root first, then retired issuing CAs,
        their roots, and the root rollover links (OldWithNew, NewWithOld)."""
        certificates: list[x509.Certificate] = []
        for generation in self.generations:
            for cert in (generation.issuing, generation.root):
                if cert not in certificates:
                    certificates.append(cert)
        certificates.extend(link for link in self.links if link not in certificates)
        return tuple(certificates)

    @cached_property
    def signs_quickly(self) -> bool:
        """The issuing key signs in well under a millisecond where it is called: an EC or
        Ed25519 key held by cryptography.  An RSA signature takes milliseconds (about 1 for
        2048 bits and 7 for 4096 on the development machine) and a token's may block, so
        those are made on a thread, never on an event loop (cryptography lets go of the GIL
        while it signs).  Every enrollment asks, so it is worked out once."""
        key = self.issuing_key
        if isinstance(key, TokenEcKey | TokenRsaKey):
            return False
        return isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)

    @cached_property
    def issuing_id(self) -> str:
        """The issuing CA's SKI (hex); every issuance reads it, so it is worked out once."""
        return subject_key_id(self.issuing)

    @cached_property
    def root_id(self) -> str:
        return subject_key_id(self.root)


def _retired_key(directory: Path, current: KeyRef) -> KeyRef:
    """A retired generation's key: its file, or the token object its issuing.uri names (in
    the token of the current key, whose [pkcs11] settings it shares)."""
    uri_file = directory / RETIRED_KEY_URI
    if not uri_file.exists():
        return directory / "issuing.key"
    if not isinstance(current, TokenKeyRef):
        raise ValueError(f"{uri_file} names a key in a PKCS#11 token, but [pkcs11] is not set")
    return TokenKeyRef(current.settings, Pkcs11Uri.parse(uri_file.read_text().strip()))
