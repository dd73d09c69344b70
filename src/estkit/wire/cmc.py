"""CMC Full PKI Request and Response (RFC 5272 as updated by RFC 6402), as EST's fullcmc
operation carries them (RFC 7030 §4.3), and the CMS SignedData around them (RFC 5652 §5).

Pure encodings: this module turns bytes into plain dataclasses and back.  It never decides
whether a signature is good or a request is granted (that is the authority's job), and it
never signs; it lays out the bytes that get signed and assembles the signature it is given.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, namedtype, univ, useful
from pyasn1_modules import rfc5280, rfc5652, rfc6402

from estkit.errors import MalformedDer

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ID_CCT_PKI_DATA = "1.3.6.1.5.5.7.12.2"
ID_CCT_PKI_RESPONSE = "1.3.6.1.5.5.7.12.3"
ID_CMC_STATUS_INFO_V2 = "1.3.6.1.5.5.7.7.25"
ID_CMC_TRANSACTION_ID = "1.3.6.1.5.5.7.7.5"
ID_CMC_SENDER_NONCE = "1.3.6.1.5.5.7.7.6"
ID_CMC_RECIPIENT_NONCE = "1.3.6.1.5.5.7.7.7"
ID_CMC_REVOKE_REQUEST = "1.3.6.1.5.5.7.7.17"
ID_CMC_QUERY_PENDING = "1.3.6.1.5.5.7.7.21"

CONTROL_NAMES: dict[str, str] = {
    str(oid): name.removeprefix("id_cmc_")
    for name, oid in vars(rfc6402).items()
    if name.startswith("id_cmc_") and isinstance(oid, univ.ObjectIdentifier)
}
"""RFC 5272 control names by OID, for reasons that name an unsupported control."""


class CmcStatus(enum.IntEnum):
    """CMCStatus (RFC 5272 §6.1.1)."""

    SUCCESS = 0
    FAILED = 2
    PENDING = 3
    NO_SUPPORT = 4
    CONFIRM_REQUIRED = 5
    POP_REQUIRED = 6
    PARTIAL = 7


class FailInfo(enum.IntEnum):
    """CMCFailInfo (RFC 5272 §6.1.4, RFC 6402 §2.5); names as the RFC spells them."""

    badAlg = 0  # the RFC's spelling, shown to operators
    badMessageCheck = 1
    badRequest = 2
    badTime = 3
    badCertId = 4
    unsupportedExt = 5
    mustArchiveKeys = 6
    badIdentity = 7
    popRequired = 8
    popFailed = 9
    noKeyReuse = 10
    internalCAError = 11
    tryLater = 12
    authDataFail = 13


def _decode(der: bytes, spec: Any, what: str) -> Any:
    """One DER value of the given ASN.1 type; trailing bytes and decoder complaints refused."""
    try:
        value, rest = decoder.decode(der, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError) as exc:
        raise MalformedDer(f"the {what} cannot be decoded: {exc}") from None
    if rest:
        raise MalformedDer(f"the {what} is followed by {len(rest)} trailing bytes")
    return value


def _encode(value: Any) -> bytes:
    return bytes(encoder.encode(value))


# CMS SignedData -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignerInfo:
    """One CMS SignerInfo, identified either by issuer and serial or by subjectKeyIdentifier."""

    digest_algorithm: str
    signature_algorithm: str
    signature: bytes
    signed_attributes: bytes | None
    """DER of the SignedAttributes as a SET OF (tag 0x31): exactly what the signature covers
    (RFC 5652 §5.4); None when the signer signed the content itself."""
    issuer: bytes | None = None
    """DER Name of the signer certificate's issuer (issuerAndSerialNumber form)."""
    serial: int | None = None
    key_id: bytes | None = None
    """subjectKeyIdentifier form of the signer identifier."""
    signature_parameters: bytes | None = None
    """DER parameters of the signature algorithm, when present."""

    def attribute_values(self, oid: str) -> tuple[bytes, ...] | None:
        """DER values of one signed attribute; None when absent, refused when repeated."""
        if self.signed_attributes is None:
            return None
        attributes = _decode(
            self.signed_attributes, univ.SetOf(componentType=rfc5652.Attribute()), "signedAttrs"
        )
        found = [a for a in attributes if str(a["attrType"]) == oid]
        if len(found) > 1:
            # RFC 5652 §5.3: content-type and message-digest appear once each.
            raise MalformedDer(f"signed attribute {oid} appears more than once")
        if not found:
            return None
        return tuple(_encode(v) for v in found[0]["attrValues"])

    @property
    def content_type(self) -> str | None:
        """The content-type signed attribute (RFC 5652 §11.1)."""
        values = self.attribute_values(ID_CONTENT_TYPE)
        if values is None:
            return None
        if len(values) != 1:
            raise MalformedDer("the content-type signed attribute must have exactly one value")
        oid = _decode(values[0], univ.ObjectIdentifier(), "content-type attribute")
        return str(oid)

    @property
    def message_digest(self) -> bytes | None:
        """The message-digest signed attribute (RFC 5652 §11.2)."""
        values = self.attribute_values(ID_MESSAGE_DIGEST)
        if values is None:
            return None
        if len(values) != 1:
            raise MalformedDer("the message-digest signed attribute must have exactly one value")
        return bytes(_decode(values[0], univ.OctetString(), "message-digest attribute"))


@dataclass(frozen=True)
class SignedContent:
    """A CMS SignedData: the encapsulated content, the certificates it carries, its signers."""

    content_type: str
    content: bytes
    certificates: tuple[x509.Certificate, ...] = ()
    signers: tuple[SignerInfo, ...] = ()


def signed_attributes(content_type: str, message_digest: bytes) -> bytes:
    """DER SignedAttributes (SET OF, tag 0x31) with content-type and message-digest: the
    bytes a signer signs (RFC 5652 §5.4)."""
    attributes = univ.SetOf(componentType=rfc5652.Attribute())
    for index, (oid, value) in enumerate(
        (
            (ID_CONTENT_TYPE, univ.ObjectIdentifier(content_type)),
            (ID_MESSAGE_DIGEST, univ.OctetString(message_digest)),
        )
    ):
        attribute = rfc5652.Attribute()
        attribute["attrType"] = univ.ObjectIdentifier(oid)
        attribute["attrValues"][0] = univ.Any(_encode(value))
        attributes[index] = attribute
    return _encode(attributes)


def _algorithm(oid: str, parameters: bytes | None = None) -> rfc5280.AlgorithmIdentifier:
    algorithm = rfc5280.AlgorithmIdentifier()
    algorithm["algorithm"] = univ.ObjectIdentifier(oid)
    if parameters is not None:
        algorithm["parameters"] = univ.Any(parameters)
    return algorithm


def _signer_info(signer: SignerInfo) -> rfc5652.SignerInfo:
    info = rfc5652.SignerInfo()
    sid = info["sid"]
    if signer.key_id is not None:
        info["version"] = 3  # RFC 5652 §5.3: subjectKeyIdentifier means version 3
        sid["subjectKeyIdentifier"] = signer.key_id
    else:
        if signer.issuer is None or signer.serial is None:
            raise ValueError("a signer needs issuer and serial, or a key identifier")
        info["version"] = 1
        issuer_and_serial = sid["issuerAndSerialNumber"]
        issuer_and_serial["issuer"] = _decode(signer.issuer, rfc5280.Name(), "issuer name")
        issuer_and_serial["serialNumber"] = signer.serial
    info["digestAlgorithm"] = _algorithm(signer.digest_algorithm)
    if signer.signed_attributes is not None:
        values = _decode(
            signer.signed_attributes, univ.SetOf(componentType=rfc5652.Attribute()), "signedAttrs"
        )
        attrs = info["signedAttrs"]
        for index, attribute in enumerate(values):
            attrs[index] = attribute
    info["signatureAlgorithm"] = _algorithm(signer.signature_algorithm, signer.signature_parameters)
    info["signature"] = signer.signature
    return info


def encode_signed_data(
    content_type: str,
    content: bytes,
    certificates: Sequence[x509.Certificate],
    signers: Sequence[SignerInfo],
) -> bytes:
    """DER ContentInfo holding a SignedData that encapsulates ``content``."""
    signed = rfc5652.SignedData()
    # RFC 5652 §5.1: version 3 when the encapsulated content is not id-data.
    signed["version"] = 1 if content_type == ID_DATA and all(not s.key_id for s in signers) else 3
    digests = signed["digestAlgorithms"]
    for index, oid in enumerate(dict.fromkeys(s.digest_algorithm for s in signers)):
        digests[index] = _algorithm(oid)
    encapsulated = signed["encapContentInfo"]
    encapsulated["eContentType"] = univ.ObjectIdentifier(content_type)
    encapsulated["eContent"] = content
    if certificates:
        cert_set = signed["certificates"]
        for index, cert in enumerate(certificates):
            choice = rfc5652.CertificateChoices()
            choice["certificate"] = _decode(
                cert.public_bytes(Encoding.DER), rfc5280.Certificate(), "certificate"
            )
            cert_set[index] = choice
    infos = signed["signerInfos"]
    for index, signer in enumerate(signers):
        infos[index] = _signer_info(signer)
    info = rfc5652.ContentInfo()
    info["contentType"] = univ.ObjectIdentifier(ID_SIGNED_DATA)
    info["content"] = univ.Any(_encode(signed))
    return _encode(info)


def _load_signer(info: rfc5652.SignerInfo) -> SignerInfo:
    sid = info["sid"]
    issuer = serial = key_id = None
    if sid.getName() == "subjectKeyIdentifier":
        key_id = bytes(sid["subjectKeyIdentifier"])
    else:
        issuer = _encode(sid["issuerAndSerialNumber"]["issuer"])
        serial = int(sid["issuerAndSerialNumber"]["serialNumber"])
    signed_attrs = None
    if info["signedAttrs"].isValue:
        # Signed as a universal SET OF, sent [0] IMPLICIT (RFC 5652 §5.4): re-tag for checking.
        attributes = univ.SetOf(componentType=rfc5652.Attribute())
        for index, attribute in enumerate(info["signedAttrs"]):
            attributes[index] = attribute
        signed_attrs = _encode(attributes)
    parameters = info["signatureAlgorithm"]["parameters"]
    return SignerInfo(
        digest_algorithm=str(info["digestAlgorithm"]["algorithm"]),
        signature_algorithm=str(info["signatureAlgorithm"]["algorithm"]),
        signature=bytes(info["signature"]),
        signed_attributes=signed_attrs,
        issuer=issuer,
        serial=serial,
        key_id=key_id,
        signature_parameters=_encode(parameters) if parameters.isValue else None,
    )


def load_signed_data(der: bytes) -> SignedContent:
    """Parse a DER ContentInfo holding a SignedData with encapsulated content."""
    info = _decode(der, rfc5652.ContentInfo(), "CMS ContentInfo")
    content_type = str(info["contentType"])
    if content_type != ID_SIGNED_DATA:
        raise MalformedDer(f"the CMS content is of type {content_type}, not SignedData")
    signed = _decode(bytes(info["content"]), rfc5652.SignedData(), "CMS SignedData")
    encapsulated = signed["encapContentInfo"]
    if not encapsulated["eContent"].isValue:
        raise MalformedDer("the SignedData has no encapsulated content (detached signature)")
    certificates: list[x509.Certificate] = []
    if signed["certificates"].isValue:
        for choice in signed["certificates"]:
            if choice.getName() != "certificate":
                continue  # attribute and other certificate formats carry no signer key
            try:
                certificates.append(x509.load_der_x509_certificate(_encode(choice["certificate"])))
            except ValueError as exc:
                raise MalformedDer(f"a certificate in the SignedData is malformed: {exc}") from None
    return SignedContent(
        content_type=str(encapsulated["eContentType"]),
        content=bytes(encapsulated["eContent"]),
        certificates=tuple(certificates),
        signers=tuple(_load_signer(s) for s in signed["signerInfos"]),
    )


# PKIData: the Full PKI Request ---------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """A TaggedAttribute of the controlSequence: one control and its DER values."""

    body_part_id: int
    oid: str
    values: tuple[bytes, ...]

    @property
    def name(self) -> str:
        return CONTROL_NAMES.get(self.oid, self.oid)


@dataclass(frozen=True)
class CertificationRequest:
    """A TaggedCertificationRequest (tcr): a PKCS#10 request and its body part ID."""

    body_part_id: int
    csr: bytes
    """DER of the PKCS#10 CertificationRequest."""


@dataclass(frozen=True)
class OtherBodyPart:
    """A body part this module parses no further: CRMF (crm), other request formats (orm),
    nested CMS content (cmsSequence) and otherMsgSequence entries."""

    body_part_id: int
    kind: str


@dataclass(frozen=True)
class PkiData:
    controls: tuple[Control, ...] = ()
    requests: tuple[CertificationRequest, ...] = ()
    others: tuple[OtherBodyPart, ...] = ()

    @property
    def body_part_ids(self) -> tuple[int, ...]:
        """Every top-level body part ID, in message order."""
        parts: tuple[Control | CertificationRequest | OtherBodyPart, ...] = (
            *self.controls,
            *self.requests,
            *self.others,
        )
        return tuple(part.body_part_id for part in parts)


def load_pki_data(der: bytes) -> PkiData:
    """Parse a PKIData (RFC 5272 §3.2.1)."""
    data = _decode(der, rfc6402.PKIData(), "PKIData")
    controls = tuple(
        Control(
            body_part_id=int(attribute["bodyPartID"]),
            oid=str(attribute["attrType"]),
            values=tuple(_encode(v) for v in attribute["attrValues"]),
        )
        for attribute in data["controlSequence"]
    )
    requests: list[CertificationRequest] = []
    others: list[OtherBodyPart] = []
    for tagged in data["reqSequence"]:
        kind = tagged.getName()
        if kind == "tcr":
            tcr = tagged["tcr"]
            requests.append(
                CertificationRequest(int(tcr["bodyPartID"]), _encode(tcr["certificationRequest"]))
            )
        elif kind == "crm":
            crm_id = int(tagged["crm"]["certReq"]["certReqId"])
            others.append(OtherBodyPart(crm_id, "CRMF request (crm)"))
        else:
            others.append(OtherBodyPart(int(tagged["orm"]["bodyPartID"]), "other request (orm)"))
    for tagged_content in data["cmsSequence"]:
        others.append(OtherBodyPart(int(tagged_content["bodyPartID"]), "nested CMS content"))
    for message in data["otherMsgSequence"]:
        others.append(OtherBodyPart(int(message["bodyPartID"]), "other message"))
    return PkiData(controls, tuple(requests), tuple(others))


def _tagged_attribute(body_part_id: int, oid: str, values: Sequence[bytes]) -> Any:
    attribute = rfc6402.TaggedAttribute()
    attribute["bodyPartID"] = body_part_id
    attribute["attrType"] = univ.ObjectIdentifier(oid)
    for index, value in enumerate(values):
        attribute["attrValues"][index] = univ.Any(value)
    return attribute


def encode_pki_data(
    controls: Sequence[Control] = (), requests: Sequence[CertificationRequest] = ()
) -> bytes:
    """DER PKIData with these controls and PKCS#10 requests (what a client sends)."""
    data = rfc6402.PKIData()
    control_sequence = data["controlSequence"]
    control_sequence.clear()
    for index, control in enumerate(controls):
        control_sequence[index] = _tagged_attribute(
            control.body_part_id, control.oid, control.values
        )
    req_sequence = data["reqSequence"]
    req_sequence.clear()
    for index, request in enumerate(requests):
        tagged = rfc6402.TaggedRequest()
        tcr = tagged["tcr"]
        tcr["bodyPartID"] = request.body_part_id
        tcr["certificationRequest"] = _decode(
            request.csr, rfc6402.CertificationRequest(), "PKCS#10 request"
        )
        req_sequence[index] = tagged
    data["cmsSequence"].clear()
    data["otherMsgSequence"].clear()
    return _encode(data)


# Controls ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevokeRequest:
    """id-cmc-revokeRequest (RFC 5272 §6.11). A passphrase, if sent, is not kept."""

    issuer: bytes
    """DER Name of the certificate's issuer."""
    serial: int
    reason: int
    """CRLReason (RFC 5280 §5.3.1) as its integer value."""
    invalidity_date: datetime | None = None
    comment: str | None = None
    has_passphrase: bool = field(default=False, compare=False)


def load_revoke_request(value: bytes) -> RevokeRequest:
    request = _decode(value, rfc6402.RevokeRequest(), "revokeRequest control")
    invalidity = request["invalidityDate"]
    comment = request["comment"]
    return RevokeRequest(
        issuer=_encode(request["issuerName"]),
        serial=int(request["serialNumber"]),
        reason=int(request["reason"]),
        invalidity_date=_generalized_time(invalidity) if invalidity.isValue else None,
        comment=str(comment) if comment.isValue else None,
        has_passphrase=request["passphrase"].isValue,
    )


def encode_revoke_request(request: RevokeRequest) -> bytes:
    value = rfc6402.RevokeRequest()
    value["issuerName"] = _decode(request.issuer, rfc5280.Name(), "issuer name")
    value["serialNumber"] = request.serial
    value["reason"] = request.reason
    if request.invalidity_date is not None:
        value["invalidityDate"] = _to_generalized_time(request.invalidity_date)
    if request.comment is not None:
        value["comment"] = char.UTF8String(request.comment)
    return _encode(value)


def _generalized_time(value: useful.GeneralizedTime) -> datetime:
    try:
        moment: datetime = value.asDateTime
    except (PyAsn1Error, ValueError) as exc:
        raise MalformedDer(f"a GeneralizedTime is malformed: {exc}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _to_generalized_time(moment: datetime) -> useful.GeneralizedTime:
    return useful.GeneralizedTime(moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ"))


def encode_integer(value: int) -> bytes:
    """DER INTEGER: the value of id-cmc-transactionId."""
    return _encode(univ.Integer(value))


def load_integer(der: bytes) -> int:
    return int(_decode(der, univ.Integer(), "INTEGER control value"))


def encode_octets(value: bytes) -> bytes:
    """DER OCTET STRING: the value of id-cmc-senderNonce and id-cmc-recipientNonce."""
    return _encode(univ.OctetString(value))


def load_octets(der: bytes) -> bytes:
    return bytes(_decode(der, univ.OctetString(), "OCTET STRING control value"))


# PKIResponse: the Full PKI Response ----------------------------------------------------------


@dataclass(frozen=True)
class StatusInfo:
    """CMCStatusInfoV2 (RFC 6402 §2.4) for a list of the request's body parts."""

    status: CmcStatus
    body_parts: tuple[int, ...]
    """Body part IDs of the request this status is about (RFC 5272 §6.1.1: at least one;
    0 stands for a request as a whole)."""
    text: str | None = None
    fail_info: FailInfo | None = None
    pend_token: bytes | None = None
    pend_time: datetime | None = None


@dataclass(frozen=True)
class PkiResponse:
    statuses: tuple[StatusInfo, ...]
    transaction_id: int | None = None
    recipient_nonce: bytes | None = None
    sender_nonce: bytes | None = None


def _status_value(info: StatusInfo) -> bytes:
    value = rfc6402.CMCStatusInfoV2()
    value["cMCStatus"] = int(info.status)
    body_list = value["bodyList"]
    body_list.clear()
    for index, body_part in enumerate(info.body_parts):
        reference = rfc6402.BodyPartReference()
        reference["bodyPartID"] = body_part
        body_list[index] = reference
    if info.text is not None:
        value["statusString"] = char.UTF8String(info.text)
    if info.fail_info is not None:
        value["otherInfo"]["failInfo"] = int(info.fail_info)
    elif info.pend_token is not None and info.pend_time is not None:
        pend = value["otherInfo"]["pendInfo"]
        pend["pendToken"] = info.pend_token
        pend["pendTime"] = _to_generalized_time(info.pend_time)
    return _encode(value)


def encode_pki_response(response: PkiResponse) -> bytes:
    """DER PKIResponse: one statusInfoV2 control per StatusInfo, then the transactionId and
    nonces (RFC 5272 §6.6: the request's senderNonce comes back as recipientNonce)."""
    controls: list[tuple[str, bytes]] = [
        (ID_CMC_STATUS_INFO_V2, _status_value(s)) for s in response.statuses
    ]
    if response.transaction_id is not None:
        controls.append((ID_CMC_TRANSACTION_ID, encode_integer(response.transaction_id)))
    if response.recipient_nonce is not None:
        controls.append((ID_CMC_RECIPIENT_NONCE, encode_octets(response.recipient_nonce)))
    if response.sender_nonce is not None:
        controls.append((ID_CMC_SENDER_NONCE, encode_octets(response.sender_nonce)))
    value = rfc6402.PKIResponse()
    sequence = value["controlSequence"]
    sequence.clear()
    for index, (oid, control_value) in enumerate(controls):
        # The response's own body part IDs: 1, 2, ... (unique within the response).
        sequence[index] = _tagged_attribute(index + 1, oid, [control_value])
    value["cmsSequence"].clear()
    value["otherMsgSequence"].clear()
    return _encode(value)


# CMCStatusInfoV2 for decoding, with otherInfo left open.  RFC 5272's OtherStatusInfo is a
# CHOICE of failInfo (INTEGER), pendInfo and extendedFailInfo, both untagged SEQUENCEs: a
# tag-driven decoder cannot tell the two apart (pyasn1-modules' rfc6402 spec fails on it), so
# the choice is made below by content.
_STATUS_INFO_V2 = univ.Sequence(
    componentType=namedtype.NamedTypes(
        namedtype.NamedType("cMCStatus", rfc6402.CMCStatus()),
        namedtype.NamedType("bodyList", univ.SequenceOf(componentType=rfc6402.BodyPartReference())),
        namedtype.OptionalNamedType("statusString", char.UTF8String()),
        namedtype.OptionalNamedType("otherInfo", univ.Any()),
    )
)


def _load_status(der: bytes) -> StatusInfo:
    value = _decode(der, _STATUS_INFO_V2, "CMCStatusInfoV2")
    body_parts = []
    for reference in value["bodyList"]:
        if reference.getName() != "bodyPartID":
            raise MalformedDer("bodyPartPath references are not supported")
        body_parts.append(int(reference["bodyPartID"]))
    text = value["statusString"]
    fail_info = pend_token = pend_time = None
    if value["otherInfo"].isValue:
        other = bytes(value["otherInfo"])
        if other[:1] == b"\x02":
            fail_info = _enum(FailInfo, int(_decode(other, univ.Integer(), "failInfo")))
        elif other[:1] == b"\x30":
            try:
                pend = _decode(other, rfc6402.PendInfo(), "pendInfo")
            except MalformedDer:
                pend = None  # an extendedFailInfo, which this module does not interpret
            if pend is not None:
                pend_token = bytes(pend["pendToken"])
                pend_time = _generalized_time(pend["pendTime"])
    return StatusInfo(
        status=_enum(CmcStatus, int(value["cMCStatus"])),
        body_parts=tuple(body_parts),
        text=str(text) if text.isValue else None,
        fail_info=fail_info,
        pend_token=pend_token,
        pend_time=pend_time,
    )


_E = TypeVar("_E", CmcStatus, FailInfo)


def _enum(kind: type[_E], value: int) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise MalformedDer(f"{value} is not a known {kind.__name__} value") from None


def load_pki_response(der: bytes) -> PkiResponse:
    """Parse a PKIResponse (what a client reads); unknown controls are skipped."""
    value = _decode(der, rfc6402.PKIResponse(), "PKIResponse")
    statuses: list[StatusInfo] = []
    transaction_id = recipient_nonce = sender_nonce = None
    for attribute in value["controlSequence"]:
        oid = str(attribute["attrType"])
        values = [_encode(v) for v in attribute["attrValues"]]
        if len(values) != 1:
            continue
        if oid == ID_CMC_STATUS_INFO_V2:
            statuses.append(_load_status(values[0]))
        elif oid == ID_CMC_TRANSACTION_ID:
            transaction_id = load_integer(values[0])
        elif oid == ID_CMC_RECIPIENT_NONCE:
            recipient_nonce = load_octets(values[0])
        elif oid == ID_CMC_SENDER_NONCE:
            sender_nonce = load_octets(values[0])
    return PkiResponse(tuple(statuses), transaction_id, recipient_nonce, sender_nonce)
