"""The signed content of a PKCS#10 request, for telling resubmissions apart (RFC 7030 §4.2.3)."""

from __future__ import annotations

from cryptography import x509
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc2986

from estkit.errors import MalformedDer

OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"  # noqa: S105 - an OID, not a secret


def request_info_without_challenge(csr: x509.CertificateSigningRequest) -> bytes:
    """DER of the CSR's CertificationRequestInfo with any challengePassword attribute removed.

    RFC 7030 §4.2.3: after a 202 "the client MUST resend the identical request".  The
    signature is left out because ECDSA signatures differ each time a request is signed, and
    challengePassword because proof-of-possession linking (§3.5) puts the tls-unique value of
    each new TLS connection there.  Everything else (version, subject, public key, every
    other attribute, requested extensions included) must be the same.
    """
    try:
        info, rest = decoder.decode(
            csr.tbs_certrequest_bytes, asn1Spec=rfc2986.CertificationRequestInfo()
        )
    except PyAsn1Error as exc:
        raise MalformedDer(f"the CSR's request information cannot be decoded: {exc}") from None
    if rest:
        raise MalformedDer("trailing bytes follow the CSR's request information")
    kept = rfc2986.CertificationRequestInfo()
    kept["version"] = info["version"]
    kept["subject"] = info["subject"]
    kept["subjectPKInfo"] = info["subjectPKInfo"]
    attributes = kept["attributes"]
    for attribute in info["attributes"]:
        if str(attribute["type"]) != OID_CHALLENGE_PASSWORD:
            attributes.append(attribute)
    return bytes(encoder.encode(kept))
