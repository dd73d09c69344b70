"""OCSP (RFC 6960) requests and responses as DER, with pyasn1-modules' RFC 6960 module.

pyca/cryptography reads only requests with a single CertID and builds responses with a single
SingleResponse, while RFC 6960 §4.1.1 lets one request ask about several certificates
("requestList SEQUENCE OF Request") and §4.2.1 answers each ("responses SEQUENCE OF
SingleResponse"). So both directions are encoded here with pyasn1; hashing and signing stay
with cryptography. Pure: no I/O, no policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import SignatureAlgorithmOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, tag, univ
from pyasn1_modules import rfc5280, rfc6960

from estkit.wire.keytypes import sign_data

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"

NONCE_OID = str(rfc6960.id_pkix_ocsp_nonce)
ACCEPTABLE_RESPONSES_OID = str(rfc6960.id_pkix_ocsp_response)
PREFERRED_SIGNATURE_ALGORITHMS_OID = str(rfc6960.id_pkix_ocsp_pref_sig_algs)
SERVICE_LOCATOR_OID = str(rfc6960.id_pkix_ocsp_service_locator)

CERT_ID_HASHES: dict[str, hashes.HashAlgorithm] = {
    "1.3.14.3.2.26": hashes.SHA1(),  # noqa: S303 - names a CertID's issuer, signs nothing
    "2.16.840.1.101.3.4.2.4": hashes.SHA224(),
    "2.16.840.1.101.3.4.2.1": hashes.SHA256(),
    "2.16.840.1.101.3.4.2.2": hashes.SHA384(),
    "2.16.840.1.101.3.4.2.3": hashes.SHA512(),
}
"""CertID hash algorithms a request may use (RFC 6960 §4.1.1 leaves the choice to the client:
SHA-1 is what most clients still send, SHA-256 what newer ones do)."""


class ResponseStatus(IntEnum):
    """OCSPResponseStatus (RFC 6960 §4.2.1); 4 is not used."""

    SUCCESSFUL = 0
    MALFORMED_REQUEST = 1
    INTERNAL_ERROR = 2
    TRY_LATER = 3
    SIG_REQUIRED = 5
    UNAUTHORIZED = 6


class MalformedOcspRequest(ValueError):
    """The bytes are not a DER OCSPRequest this responder can read; the text says why."""


@dataclass(frozen=True)
class CertId:
    """One Request's reqCert, with its DER kept so the response can echo it exactly."""

    hash_oid: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    der: bytes


@dataclass(frozen=True)
class OcspRequest:
    cert_ids: tuple[CertId, ...]
    nonce: bytes | None
    """The nonce extension's extnValue, echoed verbatim in the response (RFC 6960 §4.4.1)."""
    nonce_length: int
    """Length of the nonce itself: the OCTET STRING inside extnValue (RFC 9654 §2.1), or of
    the whole extnValue when an older client put the bare bytes there."""
    critical_unknown: tuple[str, ...]
    """OIDs of critical request or single-request extensions this responder does not know."""
    signed: bool


def _decode(data: bytes, spec: Any, what: str) -> Any:
    try:
        value, rest = der_decoder.decode(data, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError, RecursionError) as exc:
        raise MalformedOcspRequest(f"{what} is not valid DER ({type(exc).__name__})") from None
    if rest:
        raise MalformedOcspRequest(f"{len(rest)} bytes follow the {what}")
    return value


def _nonce_length(extn_value: bytes) -> int:
    try:
        inner, rest = der_decoder.decode(extn_value, asn1Spec=univ.OctetString())
    except (PyAsn1Error, ValueError, TypeError, IndexError):
        return len(extn_value)
    return len(extn_value) if rest else len(inner.asOctets())


_KNOWN_REQUEST_EXTENSIONS = {
    NONCE_OID,
    ACCEPTABLE_RESPONSES_OID,
    PREFERRED_SIGNATURE_ALGORITHMS_OID,
}
_KNOWN_SINGLE_EXTENSIONS = {SERVICE_LOCATOR_OID}


def _critical_unknown(extensions: Any, known: set[str]) -> list[str]:
    if not extensions.isValue:
        return []
    return [
        str(ext["extnID"])
        for ext in extensions
        if bool(ext["critical"]) and str(ext["extnID"]) not in known
    ]


def parse_request(der: bytes) -> OcspRequest:
    """Read a DER OCSPRequest (RFC 6960 §4.1.1); MalformedOcspRequest says what is wrong."""
    if not der:
        raise MalformedOcspRequest("the OCSP request is empty")
    request = _decode(der, rfc6960.OCSPRequest(), "OCSP request")
    try:
        tbs = request["tbsRequest"]
        if int(tbs["version"]) != 0:
            raise MalformedOcspRequest(f"unsupported OCSP request version {int(tbs['version'])}")
        cert_ids: list[CertId] = []
        critical: list[str] = []
        for single in tbs["requestList"]:
            cert_id = single["reqCert"]
            cert_ids.append(
                CertId(
                    hash_oid=str(cert_id["hashAlgorithm"]["algorithm"]),
                    issuer_name_hash=cert_id["issuerNameHash"].asOctets(),
                    issuer_key_hash=cert_id["issuerKeyHash"].asOctets(),
                    serial=int(cert_id["serialNumber"]),
                    der=der_encoder.encode(cert_id),
                )
            )
            critical += _critical_unknown(
                single["singleRequestExtensions"], _KNOWN_SINGLE_EXTENSIONS
            )
        nonce: bytes | None = None
        extensions = tbs["requestExtensions"]
        if extensions.isValue:
            for ext in extensions:
                if str(ext["extnID"]) == NONCE_OID:
                    if nonce is not None:
                        raise MalformedOcspRequest("the request has two nonce extensions")
                    nonce = ext["extnValue"].asOctets()
        critical += _critical_unknown(extensions, _KNOWN_REQUEST_EXTENSIONS)
        signed = request["optionalSignature"].isValue
    except PyAsn1Error as exc:
        raise MalformedOcspRequest(
            f"the OCSP request is incomplete ({type(exc).__name__})"
        ) from None
    if not cert_ids:
        raise MalformedOcspRequest("the OCSP request asks about no certificate")
    return OcspRequest(
        cert_ids=tuple(cert_ids),
        nonce=nonce,
        nonce_length=0 if nonce is None else _nonce_length(nonce),
        critical_unknown=tuple(critical),
        signed=signed,
    )


# Hashes that name an issuer or a responder ------------------------------------------------------


def public_key_bits(key: CertificatePublicKeyTypes) -> bytes:
    """The subjectPublicKey BIT STRING's contents: what KeyHash and issuerKeyHash hash
    ("excluding the tag and length fields", RFC 6960 §4.1.1 and §4.2.1)."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    decoded, _ = der_decoder.decode(spki, asn1Spec=rfc5280.SubjectPublicKeyInfo())
    bits: bytes = decoded["subjectPublicKey"].asOctets()
    return bits


def issuer_hashes(issuer: x509.Certificate, hash_oid: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CA certificate for one CertID hash algorithm."""
    algorithm = CERT_ID_HASHES[hash_oid]
    name = hashes.Hash(algorithm)
    name.update(issuer.subject.public_bytes())
    key = hashes.Hash(algorithm)
    key.update(public_key_bits(issuer.public_key()))
    return name.finalize(), key.finalize()


def responder_key_hash(key: CertificatePublicKeyTypes) -> bytes:
    """ResponderID byKey: the SHA-1 of the responder's public key bits (RFC 6960 §4.2.1)."""
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - fixed by RFC 6960, an identifier only
    digest.update(public_key_bits(key))
    return digest.finalize()


# Responses --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SingleStatus:
    """What one SingleResponse says about one CertID."""

    cert_id: CertId
    status: str
    """'good', 'revoked' or 'unknown'."""
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None


_CERTIFICATES = univ.SequenceOf(componentType=univ.Any()).subtype(
    explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 0)
)
"""``certs [0] EXPLICIT SEQUENCE OF Certificate``, each kept as its own DER bytes."""

_BASIC_OCSP_RESPONSE = univ.Sequence(
    componentType=namedtype.NamedTypes(
        namedtype.NamedType("tbsResponseData", univ.Any()),
        namedtype.NamedType("signatureAlgorithm", rfc5280.AlgorithmIdentifier()),
        namedtype.NamedType("signature", univ.BitString()),
        namedtype.OptionalNamedType("certs", _CERTIFICATES),
    )
)
"""BasicOCSPResponse carrying the signed ResponseData and the certificates as the exact bytes
that were signed and issued (no decode and re-encode round trip)."""


def _time(moment: datetime) -> str:
    """GeneralizedTime in UTC with whole seconds (RFC 5280 §4.1.2.5.2, as RFC 6960 uses it)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def _empty(sequence: Any, name: str) -> Any:
    """A fresh value of a component's type, its tags included."""
    return sequence.componentType[name].asn1Object.clone()


def _cert_status(single: SingleStatus) -> rfc6960.CertStatus:
    status = rfc6960.CertStatus()
    if single.status == "good":
        status["good"] = ""
    elif single.status == "revoked":
        assert single.revoked_at is not None
        info = _empty(status, "revoked")
        info["revocationTime"] = _time(single.revoked_at)
        if single.reason is not None:
            info["revocationReason"] = single.reason.value
        status["revoked"] = info
    else:
        status["unknown"] = ""
    return status


def _single_response(
    single: SingleStatus, this_update: datetime, next_update: datetime
) -> rfc6960.SingleResponse:
    response = rfc6960.SingleResponse()
    cert_id, _ = der_decoder.decode(single.cert_id.der, asn1Spec=rfc6960.CertID())
    response["certID"] = cert_id
    response["certStatus"] = _cert_status(single)
    response["thisUpdate"] = _time(this_update)
    response["nextUpdate"] = _time(next_update)
    return response


def signature_algorithm(
    key: CertificateIssuerPrivateKeyTypes,
) -> tuple[rfc5280.AlgorithmIdentifier, hashes.HashAlgorithm | None]:
    """The AlgorithmIdentifier a key signs with, and the hash: SHA-384 for P-384, none for
    Ed25519, SHA-256 otherwise (RFC 5754, RFC 8410; RSA with NULL parameters, RFC 4055)."""
    algorithm = rfc5280.AlgorithmIdentifier()
    digest: hashes.HashAlgorithm | None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        oid, digest = SignatureAlgorithmOID.ED25519, None
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 384:
            oid, digest = SignatureAlgorithmOID.ECDSA_WITH_SHA384, hashes.SHA384()
        else:
            oid, digest = SignatureAlgorithmOID.ECDSA_WITH_SHA256, hashes.SHA256()
    elif isinstance(key, rsa.RSAPrivateKey):
        oid, digest = SignatureAlgorithmOID.RSA_WITH_SHA256, hashes.SHA256()
        algorithm["parameters"] = der_encoder.encode(univ.Null(""))
    else:
        raise ValueError(f"cannot sign OCSP responses with a {type(key).__name__}")
    algorithm["algorithm"] = univ.ObjectIdentifier(oid.dotted_string)
    return algorithm, digest


def _response(status: ResponseStatus, basic: bytes | None = None) -> bytes:
    response = rfc6960.OCSPResponse()
    response["responseStatus"] = rfc6960.OCSPResponseStatus(int(status))
    if basic is not None:
        response_bytes = _empty(response, "responseBytes")
        response_bytes["responseType"] = rfc6960.id_pkix_ocsp_basic
        response_bytes["response"] = basic
        response["responseBytes"] = response_bytes
    encoded: bytes = der_encoder.encode(response)
    return encoded


def encode_unsuccessful(status: ResponseStatus) -> bytes:
    """An OCSPResponse with only a status: RFC 6960 §4.2.1 sends no responseBytes then."""
    if status == ResponseStatus.SUCCESSFUL:
        raise ValueError("a successful response needs its BasicOCSPResponse")
    return _response(status)


def encode_basic_response(
    *,
    responder_key: CertificateIssuerPrivateKeyTypes,
    responder_certificates: Sequence[x509.Certificate],
    produced_at: datetime,
    this_update: datetime,
    next_update: datetime,
    singles: Sequence[SingleStatus],
    nonce: bytes | None,
    signer: Callable[[CertificateIssuerPrivateKeyTypes, bytes], bytes] = sign_data,
) -> bytes:
    """A successful OCSPResponse: id-pkix-ocsp-basic, ResponderID byKey, one SingleResponse
    per CertID in request order, the nonce echoed, signed, the responder's certificates
    carried so a client can check the delegation (RFC 6960 §4.2.2.2)."""
    data = rfc6960.ResponseData()
    responder_id = _empty(data, "responderID")
    responder_id["byKey"] = responder_key_hash(responder_key.public_key())
    data["responderID"] = responder_id
    data["producedAt"] = _time(produced_at)
    responses = _empty(data, "responses")
    for index, single in enumerate(singles):
        responses[index] = _single_response(single, this_update, next_update)
    data["responses"] = responses
    if nonce is not None:
        extensions = _empty(data, "responseExtensions")
        extension = rfc5280.Extension()
        extension["extnID"] = rfc6960.id_pkix_ocsp_nonce
        extension["critical"] = False
        extension["extnValue"] = nonce
        extensions[0] = extension
        data["responseExtensions"] = extensions
    tbs = der_encoder.encode(data)

    algorithm, _ = signature_algorithm(responder_key)
    basic = _BASIC_OCSP_RESPONSE.clone()
    basic["tbsResponseData"] = univ.Any(tbs)
    basic["signatureAlgorithm"] = algorithm
    basic["signature"] = univ.BitString.fromOctetString(signer(responder_key, tbs))
    certs = _CERTIFICATES.clone()
    for index, cert in enumerate(responder_certificates):
        certs[index] = univ.Any(cert.public_bytes(serialization.Encoding.DER))
    if responder_certificates:
        basic["certs"] = certs
    return _response(ResponseStatus.SUCCESSFUL, der_encoder.encode(basic))
