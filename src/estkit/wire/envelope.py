"""CMS EnvelopedData and SignedData for server-generated keys (RFC 5652, RFC 5753, RFC 5958).

cryptography's ``PKCS7EnvelopeBuilder`` encrypts to RSA recipients only, names them by issuer
and serial number, and always labels the content id-data; RFC 7030 §4.4.2 needs EC key
agreement, the recipient named by subject key identifier, and a SignedData inside.  So the
structures are assembled here with pyasn1-modules and every cryptographic step is
cryptography's: AES-CBC, RSA PKCS#1 v1.5 key transport, ECDH, the X9.63 KDF, AES key wrap,
and the signature.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ, useful
from pyasn1_modules import rfc3565, rfc5280, rfc5652, rfc5753, rfc5958

OID_DATA = str(rfc5652.id_data)
OID_SIGNED_DATA = str(rfc5652.id_signedData)
OID_ENVELOPED_DATA = str(rfc5652.id_envelopedData)
OID_KEY_PACKAGE = str(rfc5958.id_ct_KP_aKeyPackage)
"""id-ct-KP-aKeyPackage (RFC 5958 §2): content type of an AsymmetricKeyPackage."""
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"

CONTENT_CIPHERS: dict[str, int] = {
    str(rfc3565.id_aes128_CBC): 16,
    str(rfc3565.id_aes192_CBC): 24,
    str(rfc3565.id_aes256_CBC): 32,
}
"""Content-encryption algorithms (RFC 3565 AES-CBC) and their key sizes in bytes."""
KEY_WRAPS: dict[str, int] = {
    str(rfc3565.id_aes128_wrap): 16,
    str(rfc3565.id_aes192_wrap): 24,
    str(rfc3565.id_aes256_wrap): 32,
}
"""Key-wrap algorithms for key agreement (RFC 3565 §2.3.2, RFC 3394) and their KEK sizes."""
ECDH_KDFS: dict[str, hashes.HashAlgorithm] = {
    str(rfc5753.dhSinglePass_stdDH_sha224kdf_scheme): hashes.SHA224(),
    str(rfc5753.dhSinglePass_stdDH_sha256kdf_scheme): hashes.SHA256(),
    str(rfc5753.dhSinglePass_stdDH_sha384kdf_scheme): hashes.SHA384(),
    str(rfc5753.dhSinglePass_stdDH_sha512kdf_scheme): hashes.SHA512(),
}
"""RFC 5753 §7.1.4 ephemeral-static ECDH schemes with the X9.63 KDF, by their hash."""

_DIGEST_OIDS = {
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
_ECDSA_OIDS = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3"}
_RSA_SHA_OIDS = {"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12"}
_ED25519_OID = "1.3.101.112"
_ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_ATTR_SIGNING_TIME = "1.2.840.113549.1.9.5"


@dataclass(frozen=True)
class Recipient:
    """Who can open an EnvelopedData: a public key and how the RecipientInfo names it.

    ``key_id`` names the recipient by subject key identifier (RFC 7030 §4.4.2: "copied from
    the attribute"); without it, by the certificate's issuer and serial number.
    """

    certificate: x509.Certificate
    key_id: bytes | None = None


@dataclass(frozen=True)
class Algorithms:
    """The algorithms of one EnvelopedData, chosen from the recipient's capabilities."""

    content_cipher: str = str(rfc3565.id_aes256_CBC)
    key_wrap: str = str(rfc3565.id_aes256_wrap)
    """Only used with EC recipients (key agreement)."""
    ecdh_kdf: str = str(rfc5753.dhSinglePass_stdDH_sha256kdf_scheme)


def _algorithm(oid: str, parameters: bytes | None = None) -> rfc5280.AlgorithmIdentifier:
    identifier = rfc5280.AlgorithmIdentifier()
    identifier["algorithm"] = univ.ObjectIdentifier(oid)
    if parameters is not None:
        identifier["parameters"] = univ.Any(parameters)
    return identifier


_NULL = encoder.encode(univ.Null(""))


def _issuer_and_serial(certificate: x509.Certificate) -> rfc5652.IssuerAndSerialNumber:
    decoded, _ = decoder.decode(
        certificate.public_bytes(Encoding.DER), asn1Spec=rfc5280.Certificate()
    )
    value = rfc5652.IssuerAndSerialNumber()
    value["issuer"] = decoded["tbsCertificate"]["issuer"]
    value["serialNumber"] = certificate.serial_number
    return value


def _content_info(content_type: str, content: univ.Asn1Item) -> bytes:
    info = rfc5652.ContentInfo()
    info["contentType"] = univ.ObjectIdentifier(content_type)
    info["content"] = univ.Any(encoder.encode(content))
    return bytes(encoder.encode(info))


# EnvelopedData ---------------------------------------------------------------------------------


def _key_trans(
    recipient: Recipient, public_key: rsa.RSAPublicKey, cek: bytes
) -> rfc5652.RecipientInfo:
    """KeyTransRecipientInfo (RFC 5652 §6.2.1) with rsaEncryption (RFC 3370 §4.2.1)."""
    info = rfc5652.RecipientInfo()
    ktri = info["ktri"]
    if recipient.key_id is not None:
        ktri["version"] = 2
        ktri["rid"]["subjectKeyIdentifier"] = recipient.key_id
    else:
        ktri["version"] = 0
        ktri["rid"]["issuerAndSerialNumber"] = _issuer_and_serial(recipient.certificate)
    ktri["keyEncryptionAlgorithm"] = _algorithm(OID_RSA_ENCRYPTION, _NULL)
    ktri["encryptedKey"] = public_key.encrypt(cek, asym_padding.PKCS1v15())
    return info


def _key_agree(
    recipient: Recipient,
    public_key: ec.EllipticCurvePublicKey,
    cek: bytes,
    chosen: Algorithms,
) -> rfc5652.RecipientInfo:
    """KeyAgreeRecipientInfo (RFC 5652 §6.2.2) with ephemeral-static ECDH (RFC 5753 §3.1)."""
    ephemeral = ec.generate_private_key(public_key.curve)
    shared_secret = ephemeral.exchange(ec.ECDH(), public_key)
    wrap = _algorithm(chosen.key_wrap)  # RFC 3565 §2.3.2: AES key wrap has no parameters
    kek_size = KEY_WRAPS[chosen.key_wrap]
    shared_info = rfc5753.ECC_CMS_SharedInfo()
    shared_info["keyInfo"] = wrap
    shared_info["suppPubInfo"] = (kek_size * 8).to_bytes(4, "big")
    kek = X963KDF(
        algorithm=ECDH_KDFS[chosen.ecdh_kdf],
        length=kek_size,
        sharedinfo=encoder.encode(shared_info),
    ).derive(shared_secret)

    info = rfc5652.RecipientInfo()
    kari = info["kari"]
    kari["version"] = 3
    originator = kari["originator"]["originatorKey"]
    # RFC 5753 §7.1.2: id-ecPublicKey's parameters SHOULD be absent here (the recipient's
    # certificate names the curve).
    originator["algorithm"] = _algorithm(OID_EC_PUBLIC_KEY)
    originator["publicKey"] = univ.BitString.fromOctetString(
        ephemeral.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    kari["keyEncryptionAlgorithm"] = _algorithm(chosen.ecdh_kdf, encoder.encode(wrap))
    encrypted_key = rfc5652.RecipientEncryptedKey()
    if recipient.key_id is not None:
        encrypted_key["rid"]["rKeyId"]["subjectKeyIdentifier"] = recipient.key_id
    else:
        encrypted_key["rid"]["issuerAndSerialNumber"] = _issuer_and_serial(recipient.certificate)
    encrypted_key["encryptedKey"] = aes_key_wrap(kek, cek)
    kari["recipientEncryptedKeys"].append(encrypted_key)
    return info


def enveloped_data(
    content: bytes,
    content_type: str,
    recipient: Recipient,
    chosen: Algorithms | None = None,
) -> bytes:
    """DER ContentInfo holding an EnvelopedData of ``content`` for one recipient."""
    chosen = chosen or Algorithms()
    public_key = recipient.certificate.public_key()
    cek = os.urandom(CONTENT_CIPHERS[chosen.content_cipher])
    if isinstance(public_key, rsa.RSAPublicKey):
        recipient_info = _key_trans(recipient, public_key, cek)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        recipient_info = _key_agree(recipient, public_key, cek, chosen)
    else:
        raise ValueError("only RSA (key transport) and EC (key agreement) recipients")

    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()

    enveloped = rfc5652.EnvelopedData()
    # RFC 5652 §6.1: 0 only when every RecipientInfo is a version-0 ktri.
    only_v0 = recipient_info.getName() == "ktri" and recipient.key_id is None
    enveloped["version"] = 0 if only_v0 else 2
    enveloped["recipientInfos"].append(recipient_info)
    encrypted = enveloped["encryptedContentInfo"]
    encrypted["contentType"] = univ.ObjectIdentifier(content_type)
    encrypted["contentEncryptionAlgorithm"] = _algorithm(
        chosen.content_cipher, encoder.encode(univ.OctetString(iv))
    )
    encrypted["encryptedContent"] = ciphertext
    return _content_info(OID_ENVELOPED_DATA, enveloped)


# SignedData ------------------------------------------------------------------------------------


def asymmetric_key_package(private_key_info: bytes) -> bytes:
    """DER AsymmetricKeyPackage (RFC 5958 §2) holding one PKCS#8 PrivateKeyInfo."""
    key, _ = decoder.decode(private_key_info, asn1Spec=rfc5958.OneAsymmetricKey())
    package = rfc5958.AsymmetricKeyPackage()
    package.append(key)
    return bytes(encoder.encode(package))


def _attribute(oid: str, value: univ.Asn1Item) -> rfc5652.Attribute:
    attribute = rfc5652.Attribute()
    attribute["attrType"] = univ.ObjectIdentifier(oid)
    attribute["attrValues"].append(univ.Any(encoder.encode(value)))
    return attribute


def _signature_algorithms(
    key: CertificateIssuerPrivateKeyTypes,
) -> tuple[str, rfc5280.AlgorithmIdentifier]:
    """(digest name, signatureAlgorithm) for the signer's key (RFC 5754, RFC 8419)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "sha512", _algorithm(_ED25519_OID)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        name = "sha384" if key.curve.key_size >= 384 else "sha256"
        return name, _algorithm(_ECDSA_OIDS[name])
    if isinstance(key, rsa.RSAPrivateKey):
        return "sha256", _algorithm(_RSA_SHA_OIDS["sha256"], _NULL)
    raise ValueError(f"cannot sign CMS with a {type(key).__name__}")


def _sign(key: CertificateIssuerPrivateKeyTypes, data: bytes, digest_name: str) -> bytes:
    hash_algorithm = hashes.SHA384() if digest_name == "sha384" else hashes.SHA256()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hash_algorithm))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, asym_padding.PKCS1v15(), hash_algorithm)
    raise ValueError(f"cannot sign CMS with a {type(key).__name__}")


def signed_data(
    content: bytes,
    content_type: str,
    signer_key: CertificateIssuerPrivateKeyTypes,
    signer: x509.Certificate,
    certificates: list[x509.Certificate],
    signing_time: datetime,
) -> bytes:
    """DER ContentInfo holding a SignedData over ``content`` (RFC 5652 §5), one signer.

    Signed attributes carry the content type, the digest and the signing time; the
    certificates let the recipient build the path from the signer to its trust anchor.
    """
    digest_name, signature_algorithm = _signature_algorithms(signer_key)
    digest = hashlib.new(digest_name, content).digest()
    attributes = rfc5652.SignedAttributes()
    attributes.append(_attribute(_ATTR_CONTENT_TYPE, univ.ObjectIdentifier(content_type)))
    attributes.append(_attribute(_ATTR_MESSAGE_DIGEST, univ.OctetString(digest)))
    time = rfc5280.Time()
    time["utcTime"] = useful.UTCTime(signing_time.strftime("%y%m%d%H%M%SZ"))
    attributes.append(_attribute(_ATTR_SIGNING_TIME, time))
    # RFC 5652 §5.4: the signature covers the DER of the attributes as an explicit SET OF.
    signature = _sign(signer_key, encoder.encode(attributes), digest_name)

    signer_info = rfc5652.SignerInfo()
    signer_info["version"] = 1
    signer_info["sid"]["issuerAndSerialNumber"] = _issuer_and_serial(signer)
    signer_info["digestAlgorithm"] = _algorithm(_DIGEST_OIDS[digest_name])
    for attribute in attributes:
        signer_info["signedAttrs"].append(attribute)
    signer_info["signatureAlgorithm"] = signature_algorithm
    signer_info["signature"] = signature

    signed = rfc5652.SignedData()
    # RFC 5652 §5.1: version 3 when the encapsulated content is not id-data.
    signed["version"] = 1 if content_type == OID_DATA else 3
    signed["digestAlgorithms"].append(_algorithm(_DIGEST_OIDS[digest_name]))
    signed["encapContentInfo"]["eContentType"] = univ.ObjectIdentifier(content_type)
    signed["encapContentInfo"]["eContent"] = content
    for certificate in certificates:
        decoded, _ = decoder.decode(
            certificate.public_bytes(Encoding.DER), asn1Spec=rfc5280.Certificate()
        )
        choice = rfc5652.CertificateChoices()
        choice["certificate"] = decoded
        signed["certificates"].append(choice)
    signed["signerInfos"].append(signer_info)
    return _content_info(OID_SIGNED_DATA, signed)
