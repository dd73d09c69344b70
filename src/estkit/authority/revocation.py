"""Revocation reasons (RFC 5280 §5.3.1) by the names operators type."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from estkit.store import AuditEvent, CertificateRecord, Store, UnknownCertificate

REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
"""Reason names as spelled in RFC 5280's CRLReason; the store keeps these names."""


def reason_flag(name: str) -> x509.ReasonFlags:
    """The ReasonFlags for a reason name, accepting any letter case."""
    for known, flag in REASONS.items():
        if known.lower() == name.lower():
            return flag
    raise ValueError(f"unknown revocation reason {name!r}; choose one of {', '.join(REASONS)}")


NOT_FOR_REVOCATION = {
    "removeFromCRL": "removeFromCRL only appears in delta CRLs (RFC 5280 §5.3.1), "
    "it is not a reason to revoke",
}


def canonical_reason(name: str) -> str:
    """The RFC 5280 spelling of a reason an operator may revoke with (any letter case)."""
    valid = ", ".join(n for n in REASONS if n not in NOT_FOR_REVOCATION)
    try:
        flag = reason_flag(name)
    except ValueError:
        raise ValueError(f"unknown revocation reason {name!r}; choose one of {valid}") from None
    canonical = next(known for known, value in REASONS.items() if value is flag)
    if canonical in NOT_FOR_REVOCATION:
        raise ValueError(f"{NOT_FOR_REVOCATION[canonical]}; choose one of {valid}")
    return canonical


_MAX_SERIAL_DIGITS = 40
"""RFC 5280 §4.1.2.2: serial numbers are at most 20 octets."""


def parse_serial(text: str) -> str:
    """The store's form of a serial typed by an operator: hex with or without colons (as
    ``openssl x509 -serial`` or a browser shows it), any case, leading zeros allowed."""
    digits = text.strip().replace(":", "")
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    if not digits or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
        raise ValueError(f"{text!r} is not a serial number: give it in hex, with or without colons")
    serial = format(int(digits, 16), "x")
    if len(serial) > _MAX_SERIAL_DIGITS:
        raise ValueError(f"{text!r} is longer than a serial number can be (20 octets)")
    return serial


def revoke(
    store: Store, serial: str, reason: str, actor: str, now: datetime, source: str = ""
) -> CertificateRecord:
    """Revoke a certificate with its audit event (who, why, when) in the same transaction.

    Raises UnknownCertificate, or AlreadyRevoked carrying the earlier time and reason.
    """
    record = store.certificate(serial)
    if record is None:
        raise UnknownCertificate(serial)
    event = AuditEvent(
        actor=actor,
        action="certificate.revoke",
        subject=serial,
        at=now,
        source=source,
        detail={"reason": reason, "subject": record.subject, "label": record.label},
    )
    return store.revoke_certificate(serial, reason, now, event)
