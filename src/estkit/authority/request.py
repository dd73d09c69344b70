"""An enrollment request as the authority sees it: CSR, requester, channel and label."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from estkit.authority.identity import Channel, Identity


@dataclass(frozen=True)
class EnrollmentRequest:
    label: str
    csr: x509.CertificateSigningRequest
    identity: Identity
    channel: Channel
    renewing: x509.Certificate | None = None
    """For simplereenroll: the currently valid certificate being renewed or rekeyed."""
    source: str = ""
    """Where the request came from (peer address), for the audit trail."""
    operation: str = ""
    """The EST operation that carried the request when it is not simpleenroll/simplereenroll
    (e.g. "fullcmc"), noted in the audit event."""
