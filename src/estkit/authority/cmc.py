"""Full CMC (RFC 7030 §4.3; RFC 5272 and RFC 6402): what the authority does with a Full PKI
Request, and the signed Full PKI Response it answers with.

Supported: PKCS#10 requests (tcr), each issued through :meth:`Authority.enroll` with the
label's checks; the revokeRequest control; transactionId and senderNonce, echoed as
RFC 5272 §6.6 requires.  Anything else in a request (CRMF, other request formats, nested CMS
content, other messages, other controls) fails the whole request before anything is done:
CMC controls carry no criticality flag, and acting on half of a request the server does not
fully understand is the unsafe reading.

Who asks: the requester is the identity EST authenticated (Basic user or TLS client
certificate), exactly as for simpleenroll.  The CMS signature must come from the key of a
PKCS#10 request in the message (RFC 5272 §3.2: "self-signed", proof of possession) or from a
current certificate of this CA, checked like a TLS client certificate (in the records, not
revoked).  A revokeRequest is granted to the holder of the certificate it names (the message
is signed with that certificate) or to a Basic user matching the label's ``cmc_revokers``, for
certificates issued on that label.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from estkit.authority.cms import sign_signed_data, verify_signed_data
from estkit.authority.identity import OWN_ANCHOR, Channel, Identity
from estkit.authority.request import EnrollmentRequest
from estkit.authority.revocation import REASONS
from estkit.authority.service import Authority, serial_hex
from estkit.errors import (
    ApprovalPending,
    BadCsrSignature,
    CmcFailure,
    EstError,
    Forbidden,
    PopLinkingRequired,
    ServiceUnavailable,
)
from estkit.store import AlreadyRevoked, AuditEvent, UnknownCertificate
from estkit.wire.cmc import (
    ID_CCT_PKI_DATA,
    ID_CCT_PKI_RESPONSE,
    ID_CMC_REVOKE_REQUEST,
    ID_CMC_SENDER_NONCE,
    ID_CMC_TRANSACTION_ID,
    CmcStatus,
    Control,
    FailInfo,
    PkiData,
    PkiResponse,
    SignedContent,
    StatusInfo,
    encode_pki_response,
    load_integer,
    load_octets,
    load_pki_data,
    load_revoke_request,
    load_signed_data,
)
from estkit.wire.csr import load_csr

OPERATION = "fullcmc"
MAX_BODY_PARTS = 16
"""Body parts one Full PKI Request may carry: each request costs a signature."""
SUPPORTED_CONTROLS = frozenset({ID_CMC_TRANSACTION_ID, ID_CMC_SENDER_NONCE, ID_CMC_REVOKE_REQUEST})
CRL_REASONS: dict[int, str] = {
    0: "unspecified",
    1: "keyCompromise",
    2: "cACompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
    6: "certificateHold",
    9: "privilegeWithdrawn",
    10: "aACompromise",
}
"""CRLReason values (RFC 5280 §5.3.1) a revokeRequest may carry, by the store's names.
removeFromCRL (8) only appears in delta CRLs and 7 is unassigned: both are refused."""
assert set(CRL_REASONS.values()) <= set(REASONS)
MAX_COMMENT = 200


@dataclass(frozen=True)
class CmcRequest:
    """A Full PKI Request as it arrived: the label, who sent it, and over what channel."""

    label: str
    identity: Identity
    channel: Channel
    source: str = ""


@dataclass(frozen=True)
class CmcAnswer:
    """The signed Full PKI Response and the HTTP status that carries it (RFC 7030 §4.3.2)."""

    der: bytes
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    statuses: tuple[StatusInfo, ...] = ()


@dataclass
class _Outcome:
    """What processing one body part produced."""

    info: StatusInfo
    http_status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    certificate: x509.Certificate | None = None


@dataclass(frozen=True)
class _Transaction:
    """The controls a response echoes (RFC 5272 §6.6)."""

    transaction_id: int | None = None
    sender_nonce: bytes | None = None


def failure(exc: EstError, body_parts: tuple[int, ...]) -> tuple[StatusInfo, int]:
    """The CMCStatusInfoV2 (status failed, a CMCFailInfo) and HTTP status for an error."""
    if isinstance(exc, CmcFailure):
        fail_info, status = FailInfo[exc.fail_info], exc.status
        body_parts = exc.body_parts or body_parts
    elif isinstance(exc, BadCsrSignature):
        fail_info, status = FailInfo.popFailed, exc.status
    elif isinstance(exc, PopLinkingRequired):
        fail_info, status = FailInfo.popRequired, exc.status
    elif isinstance(exc, ServiceUnavailable):
        fail_info, status = FailInfo.tryLater, exc.status
    else:
        fail_info, status = FailInfo.badRequest, exc.status
    # bodyList is SIZE (1..MAX); 0 names a request as a whole (RFC 5272 §6.1.1).
    info = StatusInfo(CmcStatus.FAILED, body_parts or (0,), text=exc.reason, fail_info=fail_info)
    return info, status


def _transaction(pki: PkiData) -> _Transaction:
    """transactionId and senderNonce, read first so that even a refusal echoes them."""
    transaction_id = sender_nonce = None
    for control in pki.controls:
        if len(control.values) != 1:
            continue  # refused by the structure check
        if control.oid == ID_CMC_TRANSACTION_ID:
            transaction_id = load_integer(control.values[0])
        elif control.oid == ID_CMC_SENDER_NONCE:
            sender_nonce = load_octets(control.values[0])
    return _Transaction(transaction_id, sender_nonce)


def _request_key_ids(csr: x509.CertificateSigningRequest) -> set[bytes]:
    """Key identifiers a self-signed Full PKI Request may name its signer by (RFC 5272 §3.2):
    the subjectKeyIdentifier extension the request asks for, and the RFC 5280 §4.2.1.2 SHA-1
    identifier of its key (what that extension would hold when the request has none)."""
    ids = {x509.SubjectKeyIdentifier.from_public_key(csr.public_key()).digest}
    with contextlib.suppress(x509.ExtensionNotFound):
        ids.add(csr.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    return ids


def _key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


class FullCmc:
    """Processes Full PKI Requests for one authority."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    # The message ------------------------------------------------------------------------

    def answer(self, request: CmcRequest, der: bytes) -> CmcAnswer:
        """Process a Full PKI Request (DER ContentInfo); never raises for a bad request."""
        body_parts: tuple[int, ...] = ()
        transaction = _Transaction()
        try:
            message = load_signed_data(der)
            if message.content_type != ID_CCT_PKI_DATA:
                raise CmcFailure(
                    f"the SignedData encapsulates {message.content_type}, not a PKIData "
                    f"({ID_CCT_PKI_DATA})"
                )
            pki = load_pki_data(message.content)
            body_parts = pki.body_part_ids
            transaction = _transaction(pki)
            self._check_structure(pki)
            csrs = self._load_requests(pki)
            signer = self._verify(message, csrs)
        except EstError as exc:
            return self.refuse(exc, body_parts, transaction)
        outcomes = [
            self._enroll(request, tcr.body_part_id, csrs[tcr.body_part_id]) for tcr in pki.requests
        ]
        # After the requests, so a device can rekey and revoke its old certificate at once.
        outcomes += [
            self._revoke(request, control, signer)
            for control in pki.controls
            if control.oid == ID_CMC_REVOKE_REQUEST
        ]
        return self._respond(outcomes, transaction)

    def refuse(
        self,
        exc: EstError,
        body_parts: tuple[int, ...] = (),
        transaction: _Transaction | None = None,
    ) -> CmcAnswer:
        """A Full PKI Response failing the whole request (RFC 7030 §4.3.2: 4xx/5xx + CMC)."""
        info, status = failure(exc, body_parts)
        return self._respond([_Outcome(info, status, exc.headers())], transaction or _Transaction())

    def _check_structure(self, pki: PkiData) -> None:
        """Unique body part IDs, something to do, and nothing this server does not support."""
        ids = pki.body_part_ids
        if len(ids) > MAX_BODY_PARTS:
            raise CmcFailure(f"the PKIData has {len(ids)} body parts; at most {MAX_BODY_PARTS}")
        duplicates = tuple(sorted({i for i in ids if ids.count(i) > 1}))
        if duplicates:
            # Responses refer to body parts by ID: an ID naming two parts names neither.
            raise CmcFailure(
                f"body part IDs {', '.join(map(str, duplicates))} are used more than once",
                body_parts=duplicates,
            )
        if pki.others:
            other = pki.others[0]
            raise CmcFailure(
                f"body part {other.body_part_id} is a {other.kind}, which this server does not "
                "support; send PKCS#10 requests (tcr)",
                body_parts=(other.body_part_id,),
            )
        for control in pki.controls:
            if control.oid not in SUPPORTED_CONTROLS:
                raise CmcFailure(
                    f"control {control.name} (body part {control.body_part_id}) is not supported; "
                    "supported: revokeRequest, transactionId, senderNonce",
                    body_parts=(control.body_part_id,),
                )
            if len(control.values) != 1:
                raise CmcFailure(
                    f"control {control.name} (body part {control.body_part_id}) must have "
                    "exactly one value",
                    body_parts=(control.body_part_id,),
                )
        if not pki.requests and not any(c.oid == ID_CMC_REVOKE_REQUEST for c in pki.controls):
            raise CmcFailure("the PKIData holds no certification request and no revokeRequest")

    def _load_requests(self, pki: PkiData) -> dict[int, x509.CertificateSigningRequest]:
        csrs = {}
        for tcr in pki.requests:
            try:
                csrs[tcr.body_part_id] = load_csr(tcr.csr)
            except EstError as exc:
                info, status = failure(exc, (tcr.body_part_id,))
                raise CmcFailure(
                    f"body part {tcr.body_part_id}: {exc.reason}",
                    info.fail_info.name if info.fail_info else "badRequest",
                    status,
                    (tcr.body_part_id,),
                ) from None
        return csrs

    # The signature ----------------------------------------------------------------------

    def _verify(
        self, message: SignedContent, csrs: Mapping[int, x509.CertificateSigningRequest]
    ) -> x509.Certificate | None:
        """Check the CMS signature; the signer's certificate, or None for a PoP signature."""
        if len(message.signers) != 1:
            raise CmcFailure(
                f"the PKIData must have exactly one signer; it has {len(message.signers)}",
                "badMessageCheck",
            )
        signer = message.signers[0]
        cert: x509.Certificate | None = None
        key: CertificatePublicKeyTypes | None = None
        if signer.key_id is not None:
            # The key of a request first: a client may carry a throwaway self-signed
            # certificate of that key (openssl cms -sign needs one), which proves nothing more.
            key = next(
                (
                    csr.public_key()
                    for csr in csrs.values()
                    if signer.key_id in _request_key_ids(csr)
                ),
                None,
            )
            if key is None:
                cert = next((c for c in message.certificates if _key_id(c) == signer.key_id), None)
        else:
            cert = self._signer_certificate(message, signer.issuer or b"", signer.serial or 0)
        if cert is not None:
            key = cert.public_key()
        if key is None:
            raise CmcFailure(
                "the signer's key identifier matches neither a certificate in the message nor "
                "the key of a PKCS#10 request in it",
                "badMessageCheck",
            )
        verify_signed_data(message, signer, key)
        if cert is not None:
            self._check_signer_certificate(cert)
        return cert

    def _signer_certificate(
        self, message: SignedContent, issuer: bytes, serial: int
    ) -> x509.Certificate:
        for cert in message.certificates:
            if cert.serial_number == serial and cert.issuer.public_bytes() == issuer:
                return cert
        issuers = {g.issuing.subject.public_bytes() for g in self.authority.ca.generations}
        if issuer in issuers:
            record = self.authority.store.certificate(serial_hex(serial))
            if record is not None:
                return x509.load_der_x509_certificate(record.der)
        raise CmcFailure(
            "the signer's certificate is neither in the message nor one this CA issued",
            "badMessageCheck",
        )

    def _check_signer_certificate(self, cert: x509.Certificate) -> None:
        """A signer certificate must be this CA's, and counts like a TLS client certificate
        (currently valid, in the records, not revoked)."""
        if self.authority.ca.generation_for(cert) is None:
            raise CmcFailure(
                "the PKIData is signed with a certificate this CA did not issue; sign it with "
                "the key of the PKCS#10 request or with a certificate from this CA",
                "badMessageCheck",
                403,
            )
        try:
            anchor = self.authority.certificate_anchor(cert)
        except Forbidden as exc:
            reason = exc.reason.replace("TLS client certificate", "signer certificate")
            raise CmcFailure(reason, "badMessageCheck", 403) from None
        assert anchor == OWN_ANCHOR

    # The body parts ---------------------------------------------------------------------

    def _enroll(
        self, request: CmcRequest, body_part: int, csr: x509.CertificateSigningRequest
    ) -> _Outcome:
        try:
            if not csr.is_signature_valid:
                raise CmcFailure(
                    "the PKCS#10 request's signature does not verify with its public key "
                    "(proof of possession failed)",
                    "popFailed",
                )
            cert = self.authority.enroll(
                EnrollmentRequest(
                    label=request.label,
                    csr=csr,
                    identity=request.identity,
                    channel=request.channel,
                    source=request.source,
                    operation=OPERATION,
                )
            )
        except ApprovalPending as exc:
            # RFC 5272 §6.1.1: pending, with when to ask again; the client resends the same
            # PKCS#10 (as simpleenroll clients do after a 202).
            when = self.authority.clock() + timedelta(seconds=exc.retry_after)
            info = StatusInfo(
                CmcStatus.PENDING,
                (body_part,),
                text=f"{exc.reason}; resend the same request after {exc.retry_after} seconds",
                pend_token=str(exc.request_id).encode(),
                pend_time=when,
            )
            return _Outcome(info, 202, exc.headers())
        except EstError as exc:
            info, status = failure(exc, (body_part,))
            return _Outcome(info, status, exc.headers())
        serial = serial_hex(cert.serial_number)
        info = StatusInfo(CmcStatus.SUCCESS, (body_part,), text=f"certificate {serial} issued")
        return _Outcome(info, 200, certificate=cert)

    def _revoke(
        self, request: CmcRequest, control: Control, signer: x509.Certificate | None
    ) -> _Outcome:
        body_part = control.body_part_id
        try:
            serial, reason = self._revoke_certificate(request, control, signer)
        except EstError as exc:
            info, status = failure(exc, (body_part,))
            return _Outcome(info, status, exc.headers())
        text = f"certificate {serial} revoked ({reason})"
        return _Outcome(StatusInfo(CmcStatus.SUCCESS, (body_part,), text=text))

    def _revoke_certificate(
        self, request: CmcRequest, control: Control, signer: x509.Certificate | None
    ) -> tuple[str, str]:
        """RFC 5272 §6.11, after checking who asks; the serial and reason revoked."""
        revoke = load_revoke_request(control.values[0])
        serial = serial_hex(revoke.serial) if revoke.serial >= 0 else str(revoke.serial)
        issuer_names = {g.issuing.subject.public_bytes() for g in self.authority.ca.generations}
        holder = (
            signer is not None
            and signer.serial_number == revoke.serial
            and signer.issuer.public_bytes() == revoke.issuer
        )
        profile = self.authority.profile(request.label)
        identity = request.identity
        revoker = identity.method == "basic" and any(
            fnmatch.fnmatchcase(identity.name, pattern) for pattern in profile.cmc_revokers
        )
        if not holder and not revoker:
            raise CmcFailure(
                f"{identity.describe()} may not revoke certificate {serial}: sign the request "
                "with that certificate's key, or authenticate as a user in the label's "
                "cmc_revokers",
                status=403,
            )
        reason = CRL_REASONS.get(revoke.reason)
        if reason is None:
            raise CmcFailure(f"CRLReason {revoke.reason} is not a reason to revoke with")
        if revoke.issuer not in issuer_names:
            raise CmcFailure(
                "the certificate to revoke is not from this CA (issuerName is not "
                f"{self.authority.ca.issuing.subject.rfc4514_string()} or an earlier "
                "generation's)",
                "badCertId",
            )
        record = self.authority.store.certificate(serial)
        if record is None:
            raise CmcFailure(f"this CA has no certificate with serial {serial}", "badCertId")
        if not holder and record.label != request.label:
            raise CmcFailure(
                f"certificate {serial} was issued on another label; cmc_revokers may only "
                "revoke certificates of their own label",
                status=403,
            )
        now = self.authority.clock()
        detail: dict[str, str] = {
            "label": record.label,
            "subject": record.subject,
            "reason": reason,
            "operation": OPERATION,
            "authorized_as": "holder" if holder else "cmc_revokers",
        }
        if revoke.invalidity_date is not None:
            detail["invalidity_date"] = revoke.invalidity_date.isoformat()
        if revoke.comment:
            detail["comment"] = revoke.comment[:MAX_COMMENT]
        event = AuditEvent(
            actor=identity.describe(),
            action="certificate.revoke",
            subject=serial,
            at=now,
            source=request.source,
            detail=detail,
        )
        try:
            self.authority.store.revoke_certificate(serial, reason, now, event)
        except UnknownCertificate:
            raise CmcFailure(
                f"this CA has no certificate with serial {serial}", "badCertId"
            ) from None
        except AlreadyRevoked as exc:
            when = exc.record.revoked_at.isoformat() if exc.record.revoked_at else "earlier"
            raise CmcFailure(
                f"certificate {serial} was already revoked at {when} "
                f"({exc.record.revocation_reason})"
            ) from None
        return serial, reason

    # The response -----------------------------------------------------------------------

    def _respond(self, outcomes: Sequence[_Outcome], transaction: _Transaction) -> CmcAnswer:
        """Sign the Full PKI Response: issued certificates and the CA chain travel in the
        SignedData's certificates (RFC 5272 §4.2)."""
        ca = self.authority.ca
        issued = [o.certificate for o in outcomes if o.certificate is not None]
        response = PkiResponse(
            statuses=tuple(o.info for o in outcomes),
            transaction_id=transaction.transaction_id,
            recipient_nonce=transaction.sender_nonce,
            sender_nonce=os.urandom(16),
        )
        der = sign_signed_data(
            ca.issuing_key,
            ca.issuing,
            ID_CCT_PKI_RESPONSE,
            encode_pki_response(response),
            [*issued, *ca.chain],
        )
        status, headers = _http_status(outcomes)
        return CmcAnswer(der, status, headers, response.statuses)


def _http_status(outcomes: Sequence[_Outcome]) -> tuple[int, Mapping[str, str]]:
    """200 when any body part succeeded (the response carries what was done), else 202 when
    any waits for approval, else the first failure's 4xx/5xx (RFC 7030 §4.3.2)."""
    for wanted in (CmcStatus.SUCCESS, CmcStatus.PENDING):
        for outcome in outcomes:
            if outcome.info.status == wanted:
                return outcome.http_status, outcome.headers
    first = outcomes[0]
    return first.http_status, first.headers
