"""Manual approval (RFC 7030 §4.2.3): initial enrollments that wait for a person's decision.

On a label with ``approval = "manual"`` a request that passes every check is stored and
answered 202 with Retry-After; "the client MUST resend the identical request" until an
operator approves (``estkit request approve``) or rejects it.  The certificate is signed when
the approved request is next resent, in the same transaction that records it, marks the
request issued and consumes a one-time bootstrap secret: the CA key never leaves the server
process, and a bootstrap secret keeps authenticating the resubmissions until it has bought a
certificate.

What makes two submissions "identical": the same label, the same requester (the identity as
recorded, so nobody else can collect the certificate) and the same signed request content,
except the signature (ECDSA signs differently every time) and challengePassword (which
proof-of-possession linking fills with each connection's tls-unique) — see
:func:`estkit.wire.csrinfo.request_info_without_challenge`.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.profile import Profile
from estkit.authority.request import EnrollmentRequest
from estkit.authority.service import (
    Authority,
)
from estkit.errors import (
    ApprovalPending,
    RejectedByOperator,
    ServiceUnavailable,
    TooManyPendingRequests,
)
from estkit.store import (
    AuditEvent,
    CertificateRecord,
    OpenRequestExists,
    RequestAlreadyDecided,
    RequestNotApproved,
    RequestRecord,
    Store,
    TooManyOpenRequests,
    UnknownRequest,
)
from estkit.wire.csrinfo import request_info_without_challenge

MAX_PENDING_PER_REQUESTER = 10
"""Pending requests one requester may have on one label: bounds the operator's queue."""
MAX_REASON_LENGTH = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class DecisionError(Exception):
    """An operator's decision cannot be recorded; the message says why, in one line."""


def request_fingerprint(csr: x509.CertificateSigningRequest) -> str:
    """SHA-256 hex of what an identical resubmission repeats (see the module docstring)."""
    return hashlib.sha256(request_info_without_challenge(csr)).hexdigest()


def enroll_with_approval(
    authority: Authority, request: EnrollmentRequest, profile: Profile
) -> x509.Certificate:
    """The certificate once approved; until then ApprovalPending (202) or, after a
    rejection, RejectedByOperator (403).  Called after every policy check has passed."""
    store = authority.store
    requester = request.identity.describe()
    fingerprint = request_fingerprint(request.csr)
    now = authority.clock()
    record = store.latest_request(request.label, requester, fingerprint)
    if record is not None and record.status == "issued":
        issued = _still_valid(store, record, now)
        if issued is not None:
            # The response that carried it may have been lost: hand the same one out again.
            return issued
        record = None  # its certificate expired or was revoked: this is a new request
    if record is None:
        record = _submit(store, request, requester, fingerprint, now)
    if record.status == "pending":
        raise ApprovalPending(record.id, profile.retry_after)
    if record.status == "rejected":
        raise RejectedByOperator(
            f"request {record.id} was rejected by an operator: {record.reason or 'no reason given'}"
        )
    if record.status == "issued":  # a concurrent identical request collected it just now
        return _certificate(store, record)
    return _issue(authority, request, profile, record)


def _submit(
    store: Store, request: EnrollmentRequest, requester: str, fingerprint: str, now: datetime
) -> RequestRecord:
    event = AuditEvent(
        actor=requester,
        action="request.submit",
        subject="",
        at=now,
        source=request.source,
        detail={"label": request.label, "subject": request.csr.subject.rfc4514_string()},
    )
    try:
        return store.add_request(
            request.label,
            requester,
            request.csr.public_bytes(Encoding.DER),
            fingerprint,
            now,
            source=request.source,
            max_pending=MAX_PENDING_PER_REQUESTER,
            audit=event,
        )
    except OpenRequestExists:
        # An identical request from the same requester was queued concurrently: it is ours.
        existing = store.latest_request(request.label, requester, fingerprint)
        if existing is None:  # pragma: no cover - the conflicting row cannot vanish
            raise ServiceUnavailable("the request could not be queued; retry later") from None
        return existing
    except TooManyOpenRequests:
        where = f"label '{request.label}'" if request.label else "the default label"
        raise TooManyPendingRequests(
            f"{MAX_PENDING_PER_REQUESTER} requests from this requester already await approval "
            f"on {where}; resend one of those (identically) instead of a new one"
        ) from None


def _issue(
    authority: Authority, request: EnrollmentRequest, profile: Profile, approved: RequestRecord
) -> x509.Certificate:
    """Sign the approved request and record it, the request's new state and a consumed
    one-time secret in one transaction."""
    identity = request.identity

    def write(record: CertificateRecord, event: AuditEvent) -> None:
        authority.store.issue_request(
            approved.id,
            record,
            consume_once_user=identity.name if identity.once else None,
            audit=event,
        )

    try:
        cert, _ = authority.sign_and_record(
            request, profile, "enroll", write, detail={"request": approved.id}
        )
    except RequestNotApproved:
        current = authority.store.request(approved.id)
        if current is not None and current.status == "issued":
            return _certificate(authority.store, current)
        raise ServiceUnavailable(  # pragma: no cover - approved requests only get issued
            "the request changed state while its certificate was made; retry later"
        ) from None
    return cert


def _certificate(store: Store, record: RequestRecord) -> x509.Certificate:
    certificate = store.certificate(record.serial or "")
    if certificate is None:  # pragma: no cover - written in the same transaction
        raise ServiceUnavailable("the issued certificate is missing from the store")
    return x509.load_der_x509_certificate(certificate.der)


def _still_valid(store: Store, record: RequestRecord, now: datetime) -> x509.Certificate | None:
    certificate = store.certificate(record.serial or "")
    if certificate is None or certificate.status != "valid" or certificate.not_after <= now:
        return None
    return x509.load_der_x509_certificate(certificate.der)


# Operator decisions --------------------------------------------------------------------------


def approve(store: Store, request_id: int, actor: str, now: datetime) -> RequestRecord:
    """Approve a pending request; the certificate is made when the requester resends it."""
    return _decide(store, request_id, "approved", actor, now, None)


def reject(store: Store, request_id: int, actor: str, reason: str, now: datetime) -> RequestRecord:
    """Reject a pending request; resending it is answered 403 with this reason."""
    return _decide(store, request_id, "rejected", actor, now, check_reason(reason))


def check_reason(reason: str) -> str:
    """A rejection reason goes into an HTTP body and the audit trail: one printable line."""
    text = reason.strip()
    if not text:
        raise DecisionError("give a reason for the rejection (--reason TEXT)")
    if _CONTROL.search(text):
        raise DecisionError("the reason must be one line of printable text")
    if len(text) > MAX_REASON_LENGTH:
        raise DecisionError(f"the reason is {len(text)} characters; at most {MAX_REASON_LENGTH}")
    return text


def _decide(
    store: Store,
    request_id: int,
    status: str,
    actor: str,
    now: datetime,
    reason: str | None,
) -> RequestRecord:
    current = store.request(request_id)
    detail: dict[str, object] = {}
    if current is not None:
        detail = {"label": current.label, "requester": current.requester}
    if reason is not None:
        detail["reason"] = reason
    event = AuditEvent(
        actor=actor,
        action="request.approve" if status == "approved" else "request.reject",
        subject=str(request_id),
        at=now,
        detail=detail,
    )
    try:
        return store.decide_request(request_id, status, actor, now, reason, audit=event)
    except UnknownRequest:
        raise DecisionError(f"no request {request_id}") from None
    except RequestAlreadyDecided as exc:
        raise DecisionError(_already_decided(exc.record, status)) from None


def _already_decided(record: RequestRecord, wanted: str) -> str:
    when = record.decided_at.strftime("%Y-%m-%dT%H:%M:%SZ") if record.decided_at else "?"
    decided = f"by {record.decided_by} at {when}"
    if record.status == wanted:
        return f"request {record.id} is already {record.status} ({decided})"
    if record.status == "issued":
        if wanted == "approved":
            return f"request {record.id} is already approved ({decided}) and issued"
        return (
            f"request {record.id} was approved ({decided}) and its certificate "
            f"{record.serial} issued; it cannot be rejected now (revoke the certificate instead)"
        )
    return f"request {record.id} was {record.status} ({decided}); it cannot be {wanted} now"
