"""CMS signatures of CMC messages (RFC 5652 §5.4-§5.6): the CA signs its Full PKI Responses
and checks the signatures of Full PKI Requests.

cryptography's PKCS7SignatureBuilder signs only id-data content, and CMC needs
id-cct-PKIResponse, so :mod:`estkit.wire.cmc` lays out the bytes and this module does the one
thing the authority must do itself: compute and check signatures with the keys.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from estkit.errors import CmcFailure, MalformedDer
from estkit.wire.cmc import SignedContent, SignerInfo, encode_signed_data, signed_attributes
from estkit.wire.keytypes import signature_hash

HashType = type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]

DIGESTS: dict[str, HashType] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
"""Accepted digest algorithms (RFC 5754); SHA-1 and MD5 are refused as badAlg."""
DIGEST_OIDS = {cls.name: oid for oid, cls in DIGESTS.items()}
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSA_SIGNATURES: dict[str, HashType] = {
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
ECDSA_SIGNATURES: dict[str, HashType] = {
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
}
ED25519 = "1.3.101.112"
DER_NULL = b"\x05\x00"


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _oid_of(table: dict[str, HashType], algorithm: hashes.HashAlgorithm) -> str:
    return next(oid for oid, cls in table.items() if cls.name == algorithm.name)


def sign_signed_data(
    key: CertificateIssuerPrivateKeyTypes,
    signer: x509.Certificate,
    content_type: str,
    content: bytes,
    certificates: Sequence[x509.Certificate],
) -> bytes:
    """A ContentInfo/SignedData of ``content`` signed by ``key`` (whose certificate is
    ``signer``), with the content-type and message-digest signed attributes."""
    # RFC 8419 §3: Ed25519 in CMS uses SHA-512 for the message digest.
    algorithm: hashes.HashAlgorithm = signature_hash(key) or hashes.SHA512()
    attributes = signed_attributes(content_type, _digest(algorithm, content))
    parameters = None
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(attributes, padding.PKCS1v15(), algorithm)
        signature_algorithm, parameters = _oid_of(RSA_SIGNATURES, algorithm), DER_NULL
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(attributes, ec.ECDSA(algorithm))
        signature_algorithm = _oid_of(ECDSA_SIGNATURES, algorithm)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(attributes)
        signature_algorithm = ED25519
    else:
        raise TypeError(f"cannot sign CMS with a {type(key).__name__}")
    signer_info = SignerInfo(
        digest_algorithm=DIGEST_OIDS[algorithm.name],
        signature_algorithm=signature_algorithm,
        signature=signature,
        signed_attributes=attributes,
        issuer=signer.issuer.public_bytes(),
        serial=signer.serial_number,
        signature_parameters=parameters,
    )
    return encode_signed_data(content_type, content, certificates, [signer_info])


def _bad_algorithm(signer: SignerInfo, key: CertificatePublicKeyTypes) -> CmcFailure:
    return CmcFailure(
        f"the signature algorithm {signer.signature_algorithm} is not supported with a "
        f"{type(key).__name__.removeprefix('_')} signer key (use RSA PKCS#1 v1.5, ECDSA or "
        "Ed25519 with SHA-256 or stronger)",
        "badAlg",
    )


def _verify_with_key(signer: SignerInfo, key: CertificatePublicKeyTypes, digest: HashType) -> None:
    """Check the signature over the signed attributes; raises InvalidSignature or CmcFailure."""
    data = signer.signed_attributes
    assert data is not None
    oid = signer.signature_algorithm
    if isinstance(key, rsa.RSAPublicKey):
        if oid != RSA_ENCRYPTION and oid not in RSA_SIGNATURES:
            raise _bad_algorithm(signer, key)
        key.verify(signer.signature, data, padding.PKCS1v15(), RSA_SIGNATURES.get(oid, digest)())
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if oid != EC_PUBLIC_KEY and oid not in ECDSA_SIGNATURES:
            raise _bad_algorithm(signer, key)
        key.verify(signer.signature, data, ec.ECDSA(ECDSA_SIGNATURES.get(oid, digest)()))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        if oid != ED25519:
            raise _bad_algorithm(signer, key)
        key.verify(signer.signature, data)
    else:
        raise _bad_algorithm(signer, key)


def verify_signed_data(
    message: SignedContent, signer: SignerInfo, key: CertificatePublicKeyTypes
) -> None:
    """RFC 5652 §5.6: the signed attributes name the content type and carry the digest of the
    content, and the signature over them verifies with ``key``.

    Raises CmcFailure with failInfo badMessageCheck (the integrity check failed) or badAlg
    (an algorithm this server does not accept).
    """
    digest = DIGESTS.get(signer.digest_algorithm)
    if digest is None:
        raise CmcFailure(
            f"the digest algorithm {signer.digest_algorithm} is not accepted; use SHA-256, "
            "SHA-384 or SHA-512",
            "badAlg",
        )
    if signer.signed_attributes is None:
        # RFC 5652 §5.3: signedAttrs MUST be present when the content type is not id-data.
        raise CmcFailure("the SignerInfo has no signed attributes", "badMessageCheck")
    try:
        content_type, message_digest = signer.content_type, signer.message_digest
    except MalformedDer as exc:
        raise CmcFailure(f"the signed attributes are malformed: {exc}", "badMessageCheck") from None
    if content_type != message.content_type:
        raise CmcFailure(
            f"the content-type signed attribute ({content_type or 'absent'}) does not match the "
            f"encapsulated content type {message.content_type}",
            "badMessageCheck",
        )
    if message_digest is None or not hmac.compare_digest(
        message_digest, _digest(digest(), message.content)
    ):
        raise CmcFailure(
            "the message-digest signed attribute does not match the content (altered in transit?)",
            "badMessageCheck",
        )
    try:
        _verify_with_key(signer, key, digest)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        raise CmcFailure(
            "the CMS signature does not verify with the signer's public key", "badMessageCheck"
        ) from None
