"""Revocation reasons (RFC 5280 §5.3.1) by the names operators type."""

from __future__ import annotations

from cryptography import x509

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
