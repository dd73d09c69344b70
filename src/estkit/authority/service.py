"""The authority: applies a label's checks, signs, and records the result in one transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier, SignatureAlgorithmOID

from estkit.authority.accounts import ONCE_SECRET_USED
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
        subject=cert.subject.rfc4514_string(),
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
        now = self.clock()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Forbidden("the TLS client certificate is not currently valid")
        if self.ca.generation_for(cert) is not None:
            record = self.store.certificate(serial_hex(cert.serial_number))
            if record is None or record.der != cert.public_bytes(Encoding.DER):
                raise Forbidden("the TLS client certificate is not in this CA's records")
            if record.status == "revoked":
                raise Forbidden("certificate revoked")
            return OWN_ANCHOR
        for name, anchor_certs in self.anchors.items():
            if any(is_issued_by(cert, anchor) or cert == anchor for anchor in anchor_certs):
                if name in self.anchor_crls:
                    self.anchor_crls[name].check(cert)
                return name
        raise Forbidden("the TLS client certificate is not issued by a configured trust anchor")

    def _check_renewal_label(self, current: x509.Certificate, label: str) -> None:
        """A certificate is renewed under the profile it was issued with.

        Otherwise a holder of a short-lived certificate from one label (say 30-day device
        certificates) could reenroll on another and come away with that label's validity and
        extended key usages.
        """
        record = self.store.certificate(serial_hex(current.serial_number))
        if record is None:
            raise Forbidden("the TLS client certificate is not in this CA's records")
        if record.label != label:
            raise Forbidden(
                f"this certificate was issued on {_where(record.label)} and can only be "
                f"renewed there, not on {_where(label)}"
            )

    # Issuing ----------------------------------------------------------------------------------

    def enroll(self, request: EnrollmentRequest) -> x509.Certificate:
        """Check, sign and durably record; the certificate exists only if this returns."""
        profile = self.profile(request.label)
        for check in CHECKS:
            check(request, profile)
        if request.renewing is not None:
            self._check_renewal_label(request.renewing, request.label)
        elif profile.approval == "manual":
            # RFC 7030 §4.2.3: a person decides (202 until then). Imported here because
            # approval builds on this module. Renewal stays automatic: see README.
            from estkit.authority.approval import enroll_with_approval

            return enroll_with_approval(self, request, profile)
        kind = "enroll"
        replaces = None
        if request.renewing is not None:
            kind = "renew" if same_key(request.csr, request.renewing) else "rekey"
            replaces = serial_hex(request.renewing.serial_number)
        identity = request.identity

        def write(record: CertificateRecord, event: AuditEvent) -> None:
            self.store.record_certificate(
                record, consume_once_user=identity.name if identity.once else None, audit=event
            )

        cert, _ = self.sign_and_record(request, profile, kind, write, replaces=replaces)
        return cert

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
        path (enroll, approved requests, serverkeygen, CMC) goes through here."""
        requester = request.identity.describe()
        for _ in range(SERIAL_ATTEMPTS):
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
            cert = issued.certificate
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
            try:
                write(record, event)
            except SerialCollision:
                continue
            except OnceSecretConsumed:
                raise AuthenticationRequired(ONCE_SECRET_USED) from None
            return cert, record
        raise ServiceUnavailable(
            "could not allocate a unique serial number; nothing was issued, retry later",
            retry_after=self.store.retry_after,
        )


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
