"""What a serverkeygen CSR says about protecting the key on its way back (RFC 7030 §4.4.1).

A client that wants the server-generated private key encrypted on top of TLS puts one of two
attributes in its CSR: ``DecryptKeyIdentifier`` (RFC 4108; a symmetric key both sides know,
§4.4.1.1) or ``AsymmetricDecryptKeyIdentifier`` (RFC 7030 §4.4.1.2; the subject key identifier
of a certificate whose key the client holds), and with it ``SMIMECapabilities`` (RFC 8551
§2.5.2), the algorithms it can decrypt with, in order of preference.  Read with pyasn1 from
the CSR's DER: cryptography exposes unknown attributes only as untagged bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc2986, rfc5751, rfc7030

from estkit.errors import MalformedDer, PolicyViolation

OID_DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.37"
"""id-aa-decryptKeyID (RFC 4108 §2.2.5): a symmetric key-encryption key's identifier."""
OID_ASYMM_DECRYPT_KEY_ID = str(rfc7030.id_aa_asymmDecryptKeyID)
"""id-aa-asymmDecryptKeyID (RFC 7030 §4.4.1.2): 1.2.840.113549.1.9.16.2.54."""
OID_SMIME_CAPABILITIES = str(rfc5751.smimeCapabilities)
"""smimeCapabilities (RFC 8551 §2.5.2): 1.2.840.113549.1.9.15."""

ASYMMETRIC = "AsymmetricDecryptKeyIdentifier"
SYMMETRIC = "DecryptKeyIdentifier"


@dataclass(frozen=True)
class SmimeCapability:
    """One capability: an algorithm OID and the DER of its parameters, if any."""

    oid: str
    parameters: bytes | None = None


@dataclass(frozen=True)
class KeyDeliveryRequest:
    """How the client wants the generated key protected; all empty means plain PKCS#8."""

    asymmetric_key_id: bytes | None = None
    symmetric_key_id: bytes | None = None
    capabilities: tuple[SmimeCapability, ...] = ()

    @property
    def encrypted(self) -> bool:
        return self.asymmetric_key_id is not None or self.symmetric_key_id is not None


def _single_value(attribute: rfc2986.Attribute, name: str) -> bytes:
    values = attribute["values"]
    if len(values) != 1:
        raise PolicyViolation(f"the CSR's {name} attribute must have exactly one value")
    return bytes(values[0])


def _octets(der: bytes, name: str) -> bytes:
    try:
        value, rest = decoder.decode(der, asn1Spec=univ.OctetString())
    except PyAsn1Error as exc:
        raise MalformedDer(f"the CSR's {name} attribute is not an OCTET STRING: {exc}") from None
    if rest:
        raise MalformedDer(f"the CSR's {name} attribute has trailing bytes")
    if not value:
        raise PolicyViolation(f"the CSR's {name} attribute is empty")
    return bytes(value)


def _capabilities(der: bytes) -> tuple[SmimeCapability, ...]:
    try:
        value, rest = decoder.decode(der, asn1Spec=rfc5751.SMIMECapabilities())
    except PyAsn1Error as exc:
        raise MalformedDer(f"the CSR's SMIMECapabilities attribute is malformed: {exc}") from None
    if rest:
        raise MalformedDer("the CSR's SMIMECapabilities attribute has trailing bytes")
    found = []
    for capability in value:
        parameters = capability["parameters"]
        found.append(
            SmimeCapability(
                str(capability["capabilityID"]),
                bytes(parameters) if parameters.isValue else None,
            )
        )
    return tuple(found)


def key_delivery_request(csr_der: bytes) -> KeyDeliveryRequest:
    """The key-protection attributes of a DER CSR (already accepted by ``load_csr``)."""
    try:
        request, _ = decoder.decode(csr_der, asn1Spec=rfc2986.CertificationRequest())
    except PyAsn1Error as exc:
        raise MalformedDer(f"the CSR's attributes cannot be decoded: {exc}") from None
    seen: dict[str, bytes] = {}
    names = {
        OID_ASYMM_DECRYPT_KEY_ID: ASYMMETRIC,
        OID_DECRYPT_KEY_ID: SYMMETRIC,
        OID_SMIME_CAPABILITIES: "SMIMECapabilities",
    }
    for attribute in request["certificationRequestInfo"]["attributes"]:
        oid = str(attribute["type"])
        if oid not in names:
            continue
        if oid in seen:
            raise PolicyViolation(f"the CSR carries the {names[oid]} attribute twice")
        seen[oid] = _single_value(attribute, names[oid])
    asymmetric = seen.get(OID_ASYMM_DECRYPT_KEY_ID)
    symmetric = seen.get(OID_DECRYPT_KEY_ID)
    capabilities = seen.get(OID_SMIME_CAPABILITIES)
    return KeyDeliveryRequest(
        asymmetric_key_id=None if asymmetric is None else _octets(asymmetric, ASYMMETRIC),
        symmetric_key_id=None if symmetric is None else _octets(symmetric, SYMMETRIC),
        capabilities=() if capabilities is None else _capabilities(capabilities),
    )
