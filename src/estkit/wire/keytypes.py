"""Key types by the names estkit uses everywhere (CLI flags, profiles, csrattrs hints).

Shared by the client and the authority, so it depends on cryptography only.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)

from estkit.wire.key_type_names import KEY_TYPES

CURVE_KEY_TYPES = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}
"""Named curves estkit accepts, by cryptography's curve name."""
_CURVES: dict[str, type[ec.EllipticCurve]] = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}


def generate_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    """A new private key: ec-p256, ec-p384, rsa-BITS (2048 or more) or ed25519."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())
    if key_type.startswith("rsa-") and key_type[4:].isdigit() and int(key_type[4:]) >= 2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def key_type_of(key: PrivateKeyTypes) -> str:
    """The key type name of an existing key (what :func:`generate_key` would make)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name in CURVE_KEY_TYPES:
            return CURVE_KEY_TYPES[key.curve.name]
        raise ValueError(f"unsupported elliptic curve {key.curve.name}; use P-256 or P-384")
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ValueError(f"unsupported key type {type(key).__name__}; use EC, RSA or Ed25519")


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash to sign with for a key: SHA-384 for P-384, none for Ed25519, else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def sign_data(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> bytes:
    """A signature over data as a certificate's signatureAlgorithm for key names it (the hash
    of signature_hash; PKCS#1 v1.5 for RSA): used for certificates, CRLs and OCSP responses."""
    digest = signature_hash(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    assert digest is not None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(digest))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), digest)
    raise TypeError(f"cannot sign with a {type(key).__name__}")
