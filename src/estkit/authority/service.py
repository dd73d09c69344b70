"""The authority: applies a label's checks, signs, and records the result in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier, SignatureAlgorithmOID

from estkit.authority.accounts import ONCE_SECRET_USED, AccountChanged
from estkit.authority.anchor_crl import AnchorCrl
from estkit.authority.ca import CertificateAuthority, is_issued_by
from estkit.authority.checks import CHECKS, same_key
from estkit.authority.identity import OWN_ANCHOR
from estkit.authority.issue import IssuedCertificate, PublicUrls, build_certificate
from estkit.authority.profile import Profile
from estkit.authority.request import EnrollmentRequest
from estkit.errors import AuthenticationRequired, Forbidden, NotFound, ServiceUnavailable
from estkit.store import (
    AuditEvent,
    CertificateRecord,
    OnceSecretConsumed,
    SerialCollision,
    Store,
    UserChanged,
)
from estkit.wire.csrattrs import CsrAttribute, CsrAttrItem, oid_value

Clock = Callable[[], datetime]
RecordWriter = Callable[[CertificateRecord, AuditEvent], None]
"""Writes an issued certificate's record and audit event in one store transaction."""

OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"  # noqa: S105 - an OID, not a secret
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_ED25519 = "1.3.101.112"
OID_SUBJECT_ALT_NAME = "2.5.29.17"
CURVE_OIDS = {"ec-p256": "1.2.840.10045.3.1.7", "ec-p384": "1.3.132.0.34"}
EC_SIGNATURES: dict[str, ObjectIdentifier] = {
    "ec-p256": SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    "ec-p384": SignatureAlgorithmOID.ECDSA_WITH_SHA384,
}
SERIAL_ATTEMPTS = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def san_strings(names: Sequence[x509.GeneralName]) -> tuple[str, ...]:
    kinds = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email"}
    return tuple(f"{kinds.get(type(n), type(n).__name__)}:{n.value}" for n in names)


def certificate_record(
    issued: IssuedCertificate,
    label: str,
    requester: str,
    kind: str,
    issuer_id: str,
    issued_at: datetime,
    replaces_serial: str | None = None,
) -> CertificateRecord:
    """The store's record of an issued certificate.  At issuance the parts known from
    building it are taken as they are (parsing the certificate's extensions back costs more
    than the rest); for a certificate made elsewhere, IssuedCertificate.read_off(cert)."""
    cert = issued.certificate
    return CertificateRecord(
        serial=serial_hex(cert.serial_number),
        label=label,
        subject=issued.subject_text,
        sans=san_strings(issued.sans),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        # keys.spki_sha256, of the SubjectPublicKeyInfo already encoded
        key_fingerprint=hashlib.sha256(issued.spki).hexdigest(),
        requester=requester,
        kind=kind,
        der=cert.public_bytes(Encoding.DER),
        issuer_id=issuer_id,
        issued_at=issued_at,
        replaces_serial=replaces_serial,
        subject_key_id=None if issued.subject_key_id is None else issued.subject_key_id.hex(),
    )


class Authority:
    """The CA's decisions: which requests are granted, what is signed, what is recorded."""

    def __init__(
        self,
        ca: CertificateAuthority,
        profiles: Mapping[str, Profile],
        store: Store,
        urls: PublicUrls,
        anchors: Mapping[str, Sequence[x509.Certificate]] | None = None,
        clock: Clock = utc_now,
        anchor_crls: Mapping[str, AnchorCrl] | None = None,
    ) -> None:
        self.ca = ca
        self.profiles = dict(profiles)
        self.store = store
        self.urls = urls
        self.anchors = dict(anchors or {})
        self.clock = clock
        self.anchor_crls = dict(anchor_crls or {})
        """``[anchors.<name>] crl``: revocations of third-party anchors' certificates."""

    def profile(self, label: str) -> Profile:
        try:
            return self.profiles[label]
        except KeyError:
            raise NotFound(f"no EST label '{label}' is configured on this server") from None

    # What clients are told -----------------------------------------------------------------

    def csr_attributes(self, label: str) -> tuple[CsrAttrItem, ...]:
        """RFC 7030 §4.5: what the label's profile wants to see in a CSR (may be nothing)."""
        profile = self.profile(label)
        items: list[CsrAttrItem] = []
        if profile.require_pop:
            items.append(OID_CHALLENGE_PASSWORD)
        items.extend(_key_type_attributes(profile.key_types))
        if profile.san_types:
            items.append(CsrAttribute(OID_EXTENSION_REQUEST, (oid_value(OID_SUBJECT_ALT_NAME),)))
        return tuple(items)

    # Who is asking ---------------------------------------------------------------------------

    def certificate_anchor(self, cert: x509.Certificate) -> str:
        """Which anchor issued a TLS client certificate; refuses revoked or unknown ones."""
        return self.certificate_origin(cert)[0]

    def certificate_origin(self, cert: x509.Certificate) -> tuple[str, str | None]:
        """certificate_anchor, with the label the store records for this CA's own
        certificates (None for a third-party anchor's)."""
        now = self.clock()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Forbidden("the TLS client certificate is not currently valid")
        record = self._own_record(cert)
        if record is not None:
            if record.status == "revoked":
                raise Forbidden("certificate revoked")
            return OWN_ANCHOR, record.label
        if self.ca.generation_for(cert) is not None:
            raise Forbidden("the TLS client certificate is not in this CA's records")
        for name, anchor_certs in self.anchors.items():
            if any(is_issued_by(cert, anchor) or cert == anchor for anchor in anchor_certs):
                if name in self.anchor_crls:
                    self.anchor_crls[name].check(cert)
                return name, None
        raise Forbidden("the TLS client certificate is not issued by a configured trust anchor")

    def _own_record(self, cert: x509.Certificate) -> CertificateRecord | None:
        """The store's record of exactly this certificate, when it names one of this CA's
        issuing CAs as its issuer.  A certificate byte for byte equal to one this CA issued
        and recorded is that certificate, so its signature need not be checked again (TLS
        has verified the chain already; a check costs as much as the rest of the lookup)."""
        if not any(cert.issuer == g.issuing.subject for g in self.ca.generations):
            return None
        record = self.store.certificate(serial_hex(cert.serial_number))
        if record is None or record.der != cert.public_bytes(Encoding.DER):
            return None
        return record

    def _check_renewal_label(self, request: EnrollmentRequest) -> None:
        """A certificate is renewed under the profile it was issued with.

        Otherwise a holder of a short-lived certificate from one label (say 30-day device
        certificates) could reenroll on another and come away with that label's validity and
        extended key usages.  The label is the one read when the certificate was accepted,
        or read now.
        """
        current, label = request.renewing, request.label
        assert current is not None
        identity = request.identity
        issued_on = identity.issued_on if identity.certificate is current else None
        if issued_on is None:
            record = self.store.certificate(serial_hex(current.serial_number))
            if record is None:
                raise Forbidden("the TLS client certificate is not in this CA's records")
            issued_on = record.label
        if issued_on != label:
            raise Forbidden(
                f"this certificate was issued on {_where(issued_on)} and can only be "
                f"renewed there, not on {_where(label)}"
            )

    # Issuing ----------------------------------------------------------------------------------

    def enroll(self, request: EnrollmentRequest) -> x509.Certificate:
        """Check, sign and durably record; the certificate exists only if this returns."""
        admitted = self._admit(request)
        if admitted.awaits_approval:
            return self._enroll_with_approval(request, admitted.profile)
        cert, _ = self.sign_and_record(
            request,
            admitted.profile,
            admitted.kind,
            self._enrollment_writer(request),
            replaces=admitted.replaces,
        )
        return cert

    async def enroll_async(self, request: EnrollmentRequest) -> x509.Certificate:
        """``enroll`` for the event loop, where the server's enrollments run.

        A trip to a worker thread and back costs more CPU than the checks and the signing
        together, so they run right here, and the record is committed by the store's writer
        thread together with the other records pending at the time (one wake-up of the loop
        per commit).  What could hold up the loop goes to a thread: signing with an RSA key
        or a key in a token, a request that waits for approval, and the rare serial
        collision.  The checks read nothing from the store: a renewal's label came with its
        identity (certificate_origin).
        """
        if not self.ca.signs_quickly:
            return await asyncio.to_thread(self.enroll, request)
        admitted = self._admit(request)
        if admitted.awaits_approval:
            return await asyncio.to_thread(self._enroll_with_approval, request, admitted.profile)
        profile, kind, replaces = admitted.profile, admitted.kind, admitted.replaces
        cert, record, event = self._draft(request, profile, kind, replaces)
        try:
            with _account_refusals():
                await self.store.record_certificate_async(
                    record,
                    consume_once_user=_consumed_user(request),
                    audit=event,
                    account=request.identity.account,
                )
        except SerialCollision:  # redrawn on the threaded path, which retries
            write = self._enrollment_writer(request)
            cert, _ = await asyncio.to_thread(
                self.sign_and_record, request, profile, kind, write, replaces=replaces
            )
        return cert

    def _admit(self, request: EnrollmentRequest) -> _Admitted:
        """The label's checks, and what kind of issuance the request is."""
        profile = self.profile(request.label)
        for check in CHECKS:
            check(request, profile)
        if request.renewing is not None:
            self._check_renewal_label(request)
            kind = "renew" if same_key(request.csr, request.renewing) else "rekey"
            return _Admitted(profile, kind, serial_hex(request.renewing.serial_number))
        # RFC 7030 §4.2.3: a person decides (202 until then).  Renewal stays automatic:
        # see README.
        return _Admitted(profile, "enroll", None, awaits_approval=profile.approval == "manual")

    def _enroll_with_approval(
        self, request: EnrollmentRequest, profile: Profile
    ) -> x509.Certificate:
        # Imported here because approval builds on this module.
        from estkit.authority.approval import enroll_with_approval

        account = request.identity.account
        if account is not None:  # recalled: the request is queued only if it still stands
            with _account_refusals():
                self.store.confirm_user(account)
        return enroll_with_approval(self, request, profile)

    def _enrollment_writer(self, request: EnrollmentRequest) -> RecordWriter:
        consume = _consumed_user(request)
        account = request.identity.account

        def write(record: CertificateRecord, event: AuditEvent) -> None:
            self.store.record_certificate(
                record, consume_once_user=consume, audit=event, account=account
            )

        return write

    def sign_and_record(
        self,
        request: EnrollmentRequest,
        profile: Profile,
        kind: str,
        write: RecordWriter,
        *,
        replaces: str | None = None,
        public_key: CertificatePublicKeyTypes | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> tuple[x509.Certificate, CertificateRecord]:
        """Sign under a fresh random serial and hand the record and its audit event to write
        (one store transaction); a serial that exists already is redrawn.  Every issuance
        path on a thread (enroll, approved requests, serverkeygen, CMC) goes through here."""
        for _ in range(SERIAL_ATTEMPTS):
            cert, record, event = self._draft(request, profile, kind, replaces, public_key, detail)
            try:
                with _account_refusals():
                    write(record, event)
            except SerialCollision:
                continue
            return cert, record
        raise ServiceUnavailable(
            "could not allocate a unique serial number; nothing was issued, retry later",
            retry_after=self.store.retry_after,
        )

    def _draft(
        self,
        request: EnrollmentRequest,
        profile: Profile,
        kind: str,
        replaces: str | None,
        public_key: CertificatePublicKeyTypes | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> tuple[x509.Certificate, CertificateRecord, AuditEvent]:
        """A certificate signed under a fresh random serial, its record and audit event."""
        requester = request.identity.describe()
        now = self.clock()
        issued = build_certificate(
            self.ca,
            request.csr,
            profile,
            x509.random_serial_number(),
            now,
            self.urls,
            public_key=public_key,
        )
        record = certificate_record(
            issued, request.label, requester, kind, self.ca.issuing_id, now, replaces
        )
        event = AuditEvent(
            actor=requester,
            action=f"certificate.{kind}",
            subject=record.serial,
            at=now,
            source=request.source,
            detail={"label": request.label, "subject": record.subject, **(detail or {})}
            | ({"operation": request.operation} if request.operation else {}),
        )
        return issued.certificate, record, event


@dataclass(frozen=True)
class _Admitted:
    """A request that passed its label's checks, and how it is to be issued."""

    profile: Profile
    kind: str
    """enroll, renew (the same key) or rekey."""
    replaces: str | None
    """The serial of the certificate being renewed."""
    awaits_approval: bool = False


@contextlib.contextmanager
def _account_refusals() -> Iterator[None]:
    """The store's refusals of the Basic account an issuance acts for, as the 401s they are:
    a one-time secret used meanwhile, a recalled account removed or replaced meanwhile."""
    try:
        yield
    except OnceSecretConsumed:
        raise AuthenticationRequired(ONCE_SECRET_USED) from None
    except UserChanged as changed:
        raise AccountChanged(changed.name) from None


def _consumed_user(request: EnrollmentRequest) -> str | None:
    """The one-time bootstrap account this enrollment uses up, if any."""
    identity = request.identity
    return identity.name if identity.once else None


def _where(label: str) -> str:
    return f"label '{label}'" if label else "the default label"


def _key_type_attributes(key_types: Sequence[str]) -> list[CsrAttrItem]:
    """Ask for a key type only when the profile allows exactly one family."""
    if len(key_types) != 1:
        if set(key_types) == {"ec-p256", "ec-p384"}:
            return [OID_EC_PUBLIC_KEY]
        return []
    key_type = key_types[0]
    if key_type in CURVE_OIDS:
        return [
            CsrAttribute(OID_EC_PUBLIC_KEY, (oid_value(CURVE_OIDS[key_type]),)),
            EC_SIGNATURES[key_type].dotted_string,
        ]
    if key_type == "rsa":
        return [OID_RSA_ENCRYPTION, SignatureAlgorithmOID.RSA_WITH_SHA256.dotted_string]
    return [OID_ED25519]
