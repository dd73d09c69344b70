"""PKCS#10 certification requests (RFC 2986) as EST carries them."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from estkit.errors import MalformedDer, PolicyViolation


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    """Parse one DER CertificationRequest; BER forms and trailing bytes are refused."""
    try:
        csr = x509.load_der_x509_csr(der)
        # Touch the lazily parsed parts so that a malformed subject, attribute or extension
        # surfaces here as bad DER rather than later as an unexpected exception.
        csr.subject.rfc4514_string()
        _ = csr.attributes
        _ = csr.extensions
    except ValueError as exc:
        raise MalformedDer(
            f"the request body is not a DER PKCS#10 certification request: {exc}"
        ) from None
    except x509.DuplicateExtension as exc:
        raise PolicyViolation(f"the CSR requests extension {exc.oid.dotted_string} twice") from None
    return csr


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR's challengePassword attribute (RFC 2985 §5.4.1), if any, as text."""
    values = [a for a in csr.attributes if a.oid == AttributeOID.CHALLENGE_PASSWORD]
    if not values:
        return None
    if len(values) > 1:
        raise PolicyViolation("the CSR carries more than one challengePassword attribute")
    try:
        value: bytes = values[0].value
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyViolation("the CSR's challengePassword is not valid UTF-8") from exc
