"""Server-side key generation (RFC 7030 §4.4): the authority makes the key and certifies it.

The CSR still says what to certify (subject, SANs, PoP linking) and passes the label's
policy checks like any enrollment; but RFC 7030 §4.4.1 says the server "MUST ignore the
public key values and signature in the CSR", so the key-type and signature checks are left
out: the certificate is for the key made here, and a signature by another key proves nothing
about it.  The CSR is still parsed in full, so a malformed one is a 400.

The key leaves the server once, in the answer.  A copy is kept only on labels with
``serverkeygen_archive``, and then only as a CMS EnvelopedData to the instance's archive
certificate, whose private key the server does not have.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from estkit.authority.ca import load_pem_certificates
from estkit.authority.checks import CHECKS, Check, check_key, check_signature
from estkit.authority.profile import Profile
from estkit.authority.request import EnrollmentRequest
from estkit.authority.service import (
    Authority,
)
from estkit.errors import (
    Forbidden,
    KeyDeliveryRefused,
    ServiceUnavailable,
)
from estkit.store import ArchivedKey, AuditEvent, CertificateRecord
from estkit.wire.envelope import (
    CONTENT_CIPHERS,
    ECDH_KDFS,
    KEY_WRAPS,
    OID_DATA,
    OID_KEY_PACKAGE,
    OID_SIGNED_DATA,
    Algorithms,
    Recipient,
    asymmetric_key_package,
    enveloped_data,
    signed_data,
)
from estkit.wire.keydelivery import KeyDeliveryRequest
from estkit.wire.keytypes import generate_key

SERVERKEYGEN_CHECKS: tuple[Check, ...] = tuple(
    check for check in CHECKS if check not in (check_key, check_signature)
)
"""Every enrollment check but those on the CSR's own key and signature (RFC 7030 §4.4.1)."""

_CIPHER_NAMES = "aes128-CBC, aes192-CBC, aes256-CBC"
_WRAP_NAMES = "id-aes128-wrap, id-aes192-wrap, id-aes256-wrap"
_DEFAULT_KDF = {
    256: "1.3.132.1.11.1",  # dhSinglePass-stdDH-sha256kdf-scheme
    384: "1.3.132.1.11.2",  # dhSinglePass-stdDH-sha384kdf-scheme
}


@dataclass(frozen=True)
class KeyArchive:
    """The archive certificate (``[key_archive] recipient_cert``) keys are encrypted to."""

    certificate: x509.Certificate

    @classmethod
    def load(cls, path: Path) -> KeyArchive:
        """Refuses (ValueError naming the file) a certificate keys cannot be encrypted to."""
        certificate = load_pem_certificates(path)[0]
        key = certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise ValueError(f"{path}: the archive certificate's RSA key is under 2048 bits")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ("secp256r1", "secp384r1"):
                raise ValueError(f"{path}: the archive certificate's curve must be P-256 or P-384")
        else:
            raise ValueError(
                f"{path}: the archive certificate must have an RSA or EC key "
                f"(keys are encrypted to it), not {type(key).__name__}"
            )
        return cls(certificate)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER: names the archive key that opens an entry."""
        return hashlib.sha256(self.certificate.public_bytes(Encoding.DER)).hexdigest()

    def seal(self, private_key_info: bytes) -> bytes:
        """EnvelopedData of the PKCS#8 key; ``openssl cms -decrypt`` with the archive key
        opens it."""
        return enveloped_data(private_key_info, OID_DATA, Recipient(self.certificate))


@dataclass(frozen=True)
class ServerGeneratedKey:
    """What the answer carries: the certificate, and the key in one of its two forms."""

    certificate: x509.Certificate
    private_key_info: bytes
    """DER PKCS#8 PrivateKeyInfo (RFC 5958): the application/pkcs8 part."""
    encrypted_key: bytes | None = None
    """DER CMS EnvelopedData(SignedData(AsymmetricKeyPackage)) when the CSR asked for
    encryption (RFC 7030 §4.4.2): the smime-type=server-generated-key part instead."""


@dataclass(frozen=True)
class _Destination:
    recipient: Recipient
    algorithms: Algorithms


def _first(capabilities: list[str], offered: dict[str, object]) -> str | None:
    return next((oid for oid in capabilities if oid in offered), None)


def _algorithms(public_key: object, capabilities: list[str]) -> Algorithms:
    """Algorithms from the client's SMIMECapabilities, in its order of preference.

    RFC 7030 §4.4.2: "The server MUST use a key wrap algorithm that the client included in
    the SMIMECapabilities"; likewise for the content-encryption algorithm (RFC 8551 §2.7).
    """
    cipher = _first(capabilities, dict(CONTENT_CIPHERS))
    if cipher is None:
        raise KeyDeliveryRefused(
            "the CSR's SMIMECapabilities list no content-encryption algorithm this server "
            f"offers ({_CIPHER_NAMES})"
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        return Algorithms(content_cipher=cipher)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        wrap = _first(capabilities, dict(KEY_WRAPS))
        if wrap is None:
            raise KeyDeliveryRefused(
                "the CSR's SMIMECapabilities list no key-wrap algorithm this server offers "
                f"({_WRAP_NAMES}); key agreement with an EC certificate needs one"
            )
        kdf = _first(capabilities, dict(ECDH_KDFS)) or _DEFAULT_KDF.get(
            public_key.curve.key_size, _DEFAULT_KDF[256]
        )
        return Algorithms(content_cipher=cipher, key_wrap=wrap, ecdh_kdf=kdf)
    raise KeyDeliveryRefused(
        "the certificate named by AsymmetricDecryptKeyIdentifier has a "
        f"{type(public_key).__name__.removeprefix('_')} key, which cannot receive an encrypted "
        "key; name an RSA (key transport) or EC (key agreement) certificate"
    )


def _destination(authority: Authority, delivery: KeyDeliveryRequest) -> _Destination | None:
    """Where an encrypted key goes, or None for plain PKCS#8; refusals name the reason."""
    if delivery.symmetric_key_id is not None:
        raise KeyDeliveryRefused(
            "the CSR asks for the key encrypted with a symmetric key (DecryptKeyIdentifier, "
            "RFC 7030 section 4.4.1.1); this server does not offer symmetric key delivery. "
            "Use AsymmetricDecryptKeyIdentifier with a certificate of this CA, or neither "
            "(the key then comes as PKCS#8 inside TLS)"
        )
    key_id = delivery.asymmetric_key_id
    if key_id is None:
        return None
    if not delivery.capabilities:
        raise KeyDeliveryRefused(
            "the CSR has AsymmetricDecryptKeyIdentifier but no SMIMECapabilities attribute; "
            "RFC 7030 section 4.4.1.2 requires it, to choose the encryption algorithms"
        )
    now = authority.clock()
    certificate = None
    for record in authority.store.certificates_by_key_id(key_id.hex()):
        if authority.ca.generation(record.issuer_id) is None or record.status != "valid":
            continue
        if record.not_before <= now <= record.not_after:
            certificate = x509.load_der_x509_certificate(record.der)
            break
    if certificate is None:
        shown = key_id.hex() if len(key_id) <= 64 else key_id[:64].hex() + "..."
        raise KeyDeliveryRefused(
            f"AsymmetricDecryptKeyIdentifier {shown} names no currently valid "
            "certificate issued by this CA; it must be the subject key identifier of such a "
            "certificate, whose key will decrypt the generated key"
        )
    algorithms = _algorithms(
        certificate.public_key(), [capability.oid for capability in delivery.capabilities]
    )
    # RFC 7030 §4.4.2: the RecipientIdentifier is "the subjectKeyIdentifier copied from the
    # attribute", which also matches every renewal of that certificate with the same key.
    return _Destination(Recipient(certificate, key_id), algorithms)


def _check_label(profile: Profile) -> None:
    if profile.approval == "manual":
        where = f"label '{profile.label}'" if profile.label else "the default label"
        raise Forbidden(
            f"serverkeygen is not offered on {where}, which issues only after an operator's "
            "approval: the server would have to keep the generated private key while the "
            "request waits. Generate the key yourself and use simpleenroll"
        )


def serverkeygen(
    authority: Authority,
    request: EnrollmentRequest,
    delivery: KeyDeliveryRequest,
    archive: KeyArchive | None = None,
) -> ServerGeneratedKey:
    """Check, generate, sign and durably record; the key exists outside memory only as the
    label's archive entry, written in the same transaction as the certificate."""
    profile = authority.profile(request.label)
    _check_label(profile)
    for check in SERVERKEYGEN_CHECKS:
        check(request, profile)
    destination = _destination(authority, delivery)
    if profile.serverkeygen_archive and archive is None:
        # load_config refuses this; an Authority built by other code might not.
        raise ServiceUnavailable("the key archive is not configured; nothing was issued")

    key_type = profile.serverkeygen_key
    private_key = generate_key(key_type)
    private_key_info = private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    sealed = archive.seal(private_key_info) if profile.serverkeygen_archive and archive else None
    encrypted = None
    if destination is not None:
        ca = authority.ca
        package = signed_data(
            asymmetric_key_package(private_key_info),
            OID_KEY_PACKAGE,
            ca.issuing_key,
            ca.issuing,
            [ca.issuing],
            authority.clock(),
        )
        encrypted = enveloped_data(
            package, OID_SIGNED_DATA, destination.recipient, destination.algorithms
        )

    identity = request.identity
    detail: dict[str, object] = {
        "key_type": key_type,
        "archived": sealed is not None,
        "delivery": "encrypted" if destination else "pkcs8",
    }
    if destination is not None and destination.recipient.key_id is not None:
        detail["recipient_key_id"] = destination.recipient.key_id.hex()

    def write(record: CertificateRecord, event: AuditEvent) -> None:
        archived = None
        if sealed is not None and archive is not None:
            archived = ArchivedKey(
                record.serial, request.label, archive.fingerprint, record.issued_at, sealed
            )
        authority.store.record_certificate(
            record,
            consume_once_user=identity.name if identity.once else None,
            audit=event,
            archived_key=archived,
        )

    cert, _ = authority.sign_and_record(
        request,
        profile,
        "serverkeygen",
        write,
        public_key=private_key.public_key(),
        detail=detail,
    )
    return ServerGeneratedKey(cert, private_key_info, encrypted)
