"""Describing public keys and keeping CA key files private.

Key generation by type name lives in :mod:`estkit.wire.keytypes` (shared with the client),
and reading a file only its owner may read in :mod:`estkit.authority.secret_files`; their
names the authority's callers use are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)

from estkit.authority.secret_files import KeyFileError, read_owner_only
from estkit.wire.key_type_names import KEY_TYPES
from estkit.wire.keytypes import CURVE_KEY_TYPES, generate_key, signature_hash


def describe_public_key(key: CertificatePublicKeyTypes) -> str:
    """A short human name for a public key: 'RSA 2048', 'EC secp256r1', 'Ed25519'."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__.removeprefix("_").replace("PublicKey", "") or "unknown"


def spki_sha256(key: CertificateIssuerPublicKeyTypes | CertificatePublicKeyTypes) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: the key's fingerprint in the store."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return digest.finalize().hex()


def write_private_key(path: Path, key: CertificateIssuerPrivateKeyTypes) -> None:
    """Write a PKCS#8 PEM key readable by its owner only; never replaces an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def load_private_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    """Load a PEM private key, refusing one that group or others may read."""
    data = read_owner_only(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"key file {path} is not an unencrypted PEM private key") from exc
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise KeyFileError(f"key file {path} holds a {type(key).__name__}, not RSA, EC or Ed25519")
    return key


__all__ = [
    "CURVE_KEY_TYPES",
    "KEY_TYPES",
    "KeyFileError",
    "describe_public_key",
    "generate_key",
    "load_private_key",
    "signature_hash",
    "spki_sha256",
    "write_private_key",
]
