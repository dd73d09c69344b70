"""Certificate revocation lists (RFC 5280 §5) of the issuing CA, signed from the store's state.

Any process holding the CA key may publish (the server's refresh task, ``estkit cert
revoke``); each new CRL is decided and numbered inside the store's write transaction, so the
newest stored CRL is always the one to serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.ca import CertificateAuthority
from estkit.authority.crl_settings import CrlSettings
from estkit.authority.revocation import REASONS
from estkit.authority.service import Clock, utc_now
from estkit.authority.signing import sign_builder
from estkit.store import AuditEvent, CrlRecord, CrlState, RevokedEntry, Store

_REASON_EXTENSIONS: dict[x509.ReasonFlags, list[x509.Extension[x509.ExtensionType]]] = {
    reason: [x509.Extension(x509.CRLReason.oid, False, x509.CRLReason(reason))]
    for reason in x509.ReasonFlags
    if reason is not x509.ReasonFlags.unspecified
}


def _entry(entry: RevokedEntry, this_update: datetime) -> x509.RevokedCertificate:
    # A row marked revoked without a time (edited by hand) is still listed — failing to list
    # a revoked certificate is the one unsafe outcome — dated no later than this CRL.
    revoked_at = (entry.revoked_at or this_update).astimezone(UTC)
    reason = REASONS.get(entry.reason or "unspecified", x509.ReasonFlags.unspecified)
    # RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD be absent instead of
    # using the unspecified (0) reasonCode value".
    # One constructor call, not the fluent setters: each setter copies the builder, which was
    # most of the time of a CRL with 100,000 entries.
    return x509.RevokedCertificateBuilder(
        int(entry.serial, 16),
        revoked_at.replace(tzinfo=None, microsecond=0),  # naive UTC, as the setter makes it
        _REASON_EXTENSIONS.get(reason, []),
    ).build()


def build_crl(
    ca: CertificateAuthority,
    number: int,
    entries: Sequence[RevokedEntry],
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A v2 CRL signed by the issuing CA: cRLNumber and authorityKeyIdentifier (both
    required by RFC 5280 §5.2), one entry per revoked certificate, no invalidityDate (the
    store knows when the operator revoked, not when the key was compromised)."""
    ski = ca.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # The entries go in at construction: add_revoked_certificate copies the list each time
    # (quadratic: a minute for 100,000 entries).
    builder = (
        x509.CertificateRevocationListBuilder(
            revoked_certificates=[_entry(entry, this_update) for entry in entries]
        )
        .issuer_name(ca.issuing.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    return sign_builder(builder, ca.issuing_key)


class CrlPublisher:
    """Decides when the issuing CA's CRL is due, signs it, and records it in the store."""

    def __init__(
        self,
        ca: CertificateAuthority,
        store: Store,
        settings: CrlSettings | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.ca = ca
        self.store = store
        self.settings = settings or CrlSettings()
        self.clock = clock

    @property
    def issuer_id(self) -> str:
        return self.ca.issuing_id

    def why_due(self, state: CrlState) -> str | None:
        """Why a new CRL is needed now ('first', 'revocation', 'schedule'), or None."""
        latest = state.latest
        if latest is None:
            return "first"
        if state.revoked_count != latest.revoked_count:
            return "revocation"
        if latest.next_update - self.clock() <= self.settings.refresh_before:
            return "schedule"
        return None

    def refresh(self, actor: str, source: str = "", force: bool = False) -> CrlRecord | None:
        """Publish a new CRL if one is due (or ``force``); returns it, or None if the newest
        stored CRL is still current.  The cheap read comes first so that polling every
        second takes the write lock only when there is something to sign."""
        if not force and self.why_due(self.store.crl_state(self.issuer_id)) is None:
            return None

        def due(state: CrlState) -> bool:
            return force or self.why_due(state) is not None

        def sign(state: CrlState, entries: list[RevokedEntry]) -> tuple[CrlRecord, AuditEvent]:
            return self._sign(state, entries, actor, source, force)

        return self.store.publish_crl(self.issuer_id, due, sign)

    def current(self, actor: str) -> CrlRecord:
        """The newest stored CRL, publishing the first one if there is none yet."""
        record = self.store.latest_crl(self.issuer_id)
        if record is None:
            self.refresh(actor)
            record = self.store.latest_crl(self.issuer_id)
        assert record is not None, "publish_crl records a CRL when none exists"
        return record

    def _sign(
        self, state: CrlState, entries: list[RevokedEntry], actor: str, source: str, force: bool
    ) -> tuple[CrlRecord, AuditEvent]:
        now = self.clock()
        this_update = now.replace(microsecond=0)
        next_update = this_update + self.settings.validity
        number = state.latest.number + 1 if state.latest else 1
        crl = build_crl(self.ca, number, entries, this_update, next_update)
        record = CrlRecord(
            issuer_id=self.issuer_id,
            number=number,
            this_update=this_update,
            next_update=next_update,
            revoked_count=state.revoked_count,
            entries=len(entries),
            der=crl.public_bytes(Encoding.DER),
        )
        event = AuditEvent(
            actor=actor,
            action="crl.generate",
            subject=self.issuer_id,
            at=now,
            source=source,
            detail={
                "number": number,
                "entries": len(entries),
                "next_update": next_update.isoformat(),
                "why": self.why_due(state) or ("forced" if force else "schedule"),
            },
        )
        return record, event
