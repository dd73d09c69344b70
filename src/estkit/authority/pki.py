"""Creating an instance's PKI: root CA, issuing CA and the EST server's TLS certificate."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.authority.keys import generate_key, write_private_key
from estkit.authority.signing import sign_builder
from estkit.authority.token import Pkcs11Uri, Token

ROOT_VALIDITY = timedelta(days=20 * 365)
ISSUING_VALIDITY = timedelta(days=10 * 365)
TLS_VALIDITY = timedelta(days=397)


@dataclass(frozen=True)
class InstancePki:
    """File names of a freshly created PKI, relative to the instance directory (the CA keys:
    pkcs11: URIs when they were made in a token)."""

    root_cert: str = "ca/root.pem"
    root_key: str = "ca/root.key"
    issuing_cert: str = "ca/issuing.pem"
    issuing_key: str = "ca/issuing.key"
    tls_cert: str = "tls/server.pem"
    tls_key: str = "tls/server.key"


def ca_certificate(
    subject: x509.Name,
    public_key: CertificateIssuerPublicKeyTypes,
    issuer: x509.Name,
    signer: CertificateIssuerPrivateKeyTypes,
    not_after: datetime,
    path_length: int | None,
    now: datetime,
) -> x509.Certificate:
    """A CA certificate for subject's key, signed by signer under the name issuer.

    Roots have no path length limit (None): during a root rollover the old root must be able to
    validate NewWithOld -> new issuing CA -> end entity, two CA certificates below it.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    return sign_builder(builder, signer)


def _hostname_san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def tls_server_certificate(
    hostnames: list[str],
    key: CertificateIssuerPrivateKeyTypes,
    issuing: x509.Certificate,
    issuing_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
) -> x509.Certificate:
    """The EST server's own certificate, issued by the issuing CA for the given names."""
    not_after = min(now + TLS_VALIDITY, issuing.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_hostname_san(h) for h in hostnames]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key()),
            critical=False,
        )
    )
    return sign_builder(builder, issuing_key)


def _write_pem(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def new_ca_key(
    token: Token | None, key_type: str, role: str
) -> tuple[CertificateIssuerPrivateKeyTypes, str | None]:
    """A new CA key, in the token when there is one: (key, its pkcs11: URI or None)."""
    if token is None:
        return generate_key(key_type), None
    label = f"estkit-{role}-{secrets.token_hex(4)}"  # several instances may share a token
    return token.generate(key_type, label), str(Pkcs11Uri(token.label, label))


def create_pki(
    directory: Path,
    ca_name: str,
    key_type: str,
    hostnames: list[str],
    now: datetime | None = None,
    token: Token | None = None,
) -> tuple[InstancePki, x509.Certificate]:
    """Create the root, issuing CA and TLS certificate under directory; returns the TLS cert.

    With a token the two CA key pairs are made in it (non-extractable) and the returned file
    names carry their pkcs11: URIs instead of key files; the TLS key is a file either way.
    """
    now = now or datetime.now(UTC)
    (directory / "ca").mkdir(mode=0o700)
    (directory / "tls").mkdir(mode=0o700)

    root_key, root_uri = new_ca_key(token, key_type, "root")
    root_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_name} Root CA"),
        ]
    )
    root = ca_certificate(
        root_name, root_key.public_key(), root_name, root_key, now + ROOT_VALIDITY, None, now
    )
    issuing_key, issuing_uri = new_ca_key(token, key_type, "issuing")
    issuing_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_name} Issuing CA"),
        ]
    )
    issuing = ca_certificate(
        issuing_name, issuing_key.public_key(), root_name, root_key, now + ISSUING_VALIDITY, 0, now
    )
    tls_key = generate_key(key_type)
    tls_cert = tls_server_certificate(hostnames, tls_key, issuing, issuing_key, now)

    files = InstancePki()
    if root_uri is None or issuing_uri is None:
        write_private_key(directory / files.root_key, root_key)
        write_private_key(directory / files.issuing_key, issuing_key)
    else:
        files = replace(files, root_key=root_uri, issuing_key=issuing_uri)
    write_private_key(directory / files.tls_key, tls_key)
    _write_pem(directory / files.root_cert, root)
    _write_pem(directory / files.issuing_cert, issuing)
    (directory / files.tls_cert).write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (tls_cert, issuing))
    )
    return files, tls_cert
