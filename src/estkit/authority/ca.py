"""The CA hierarchy this instance signs with: a root and an issuing CA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from estkit.authority.keys import load_private_key


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


@dataclass(frozen=True)
class CertificateAuthority:
    """The root (trust anchor) and the issuing CA with its signing key."""

    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: CertificateIssuerPrivateKeyTypes

    @classmethod
    def load(cls, root_cert: Path, issuing_cert: Path, issuing_key: Path) -> CertificateAuthority:
        root = load_pem_certificates(root_cert)[0]
        issuing = load_pem_certificates(issuing_cert)[0]
        key = load_private_key(issuing_key)
        if not is_issued_by(issuing, root):
            raise ValueError(f"{issuing_cert} is not issued by the root CA in {root_cert}")
        if key.public_key() != issuing.public_key():
            raise ValueError(f"{issuing_key} is not the key of the issuing CA in {issuing_cert}")
        return cls(root=root, issuing=issuing, issuing_key=key)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Every certificate needed to chain an issued certificate to the root, root last."""
        return (self.issuing, self.root)

    @property
    def issuing_id(self) -> str:
        return subject_key_id(self.issuing)

    @property
    def root_id(self) -> str:
        return subject_key_id(self.root)
