"""PKCS#10 certification requests (RFC 2986) as EST carries them."""

from __future__ import annotations

import threading

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AttributeOID, SignatureAlgorithmOID
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc2986

from estkit.errors import BadCsrSignature, MalformedDer, PolicyViolation
from estkit.wire.der import content_bounds


class CsrFacts:
    """What the policy checks and the certificate builder read off one CSR, each worked out
    once: cryptography parses a CSR's subject and public key again on every access, and
    verifies its signature again on every ``is_signature_valid`` (~80 us).  A failure is
    not kept: asking again raises it again."""

    __slots__ = ("_public_key", "_signature_valid", "_spki", "_subject", "_subject_text", "csr")

    def __init__(self, csr: x509.CertificateSigningRequest) -> None:
        self.csr = csr
        self._subject: x509.Name | None = None
        self._subject_text: str | None = None
        self._public_key: CertificatePublicKeyTypes | None = None
        self._spki: bytes | None = None
        self._signature_valid: bool | None = None

    @property
    def subject(self) -> x509.Name:
        if self._subject is None:
            self._subject = self.csr.subject
        return self._subject

    @property
    def subject_text(self) -> str:
        """The subject as RFC 4514 text (the store's record of a certificate keeps it)."""
        if self._subject_text is None:
            self._subject_text = self.subject.rfc4514_string()
        return self._subject_text

    @property
    def public_key(self) -> CertificatePublicKeyTypes:
        if self._public_key is None:
            self._public_key = self.csr.public_key()
        return self._public_key

    @property
    def spki(self) -> bytes:
        """The public key's DER SubjectPublicKeyInfo as cryptography encodes it (what a
        certificate for the key carries, and what its fingerprint is taken of)."""
        if self._spki is None:
            self._spki = self.public_key.public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            )
        return self._spki

    @property
    def signature_valid(self) -> bool:
        if self._signature_valid is None:
            self._signature_valid = _signature_valid(self)
        return self._signature_valid


_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}
"""The ECDSA signature algorithms of nearly every CSR, made once."""


def _signature_valid(facts: CsrFacts) -> bool:
    """Whether the CSR is signed by its own key.  An ECDSA signature is checked with the key
    already parsed (``is_signature_valid`` parses it again and builds the algorithm objects
    on every call, a quarter of its cost); anything else is left to cryptography."""
    csr = facts.csr
    algorithm = _ECDSA.get(csr.signature_algorithm_oid)
    key = facts.public_key
    if algorithm is None or not isinstance(key, ec.EllipticCurvePublicKey):
        return csr.is_signature_valid
    try:
        key.verify(csr.signature, csr.tbs_certrequest_bytes, algorithm)
    except InvalidSignature:
        return False
    return True


_recent = threading.local()


def csr_facts(csr: x509.CertificateSigningRequest) -> CsrFacts:
    """The facts of csr, kept for the calling thread's most recent CSR: an enrollment loads,
    checks and signs its CSR in one go on one thread (the event loop's, with nothing awaited
    in between, or a worker's)."""
    facts: CsrFacts | None = getattr(_recent, "facts", None)
    if facts is None or facts.csr is not csr:
        facts = _recent.facts = CsrFacts(csr)
    return facts


def load_csr(der: bytes, ignore_key: bool = False) -> x509.CertificateSigningRequest:
    """Parse one DER CertificationRequest; BER forms and trailing bytes are refused.

    ``ignore_key``: for serverkeygen, whose server "MUST ignore the public key values and
    signature in the CSR" (RFC 7030 §4.4.1): neither the key nor the signature is checked.
    """
    try:
        csr = x509.load_der_x509_csr(der)
        facts = csr_facts(csr)
        # Touch the lazily parsed parts so that a malformed subject, attribute or extension
        # surfaces here as bad DER rather than later as an unexpected exception.
        _ = facts.subject_text
        _ = csr.attributes
        _ = csr.extensions
    except ValueError as exc:
        raise MalformedDer(
            f"the request body is not a DER PKCS#10 certification request: {_der_problem(exc)}"
        ) from None
    except x509.DuplicateExtension as exc:
        raise PolicyViolation(f"the CSR requests extension {exc.oid.dotted_string} twice") from None
    if ignore_key:
        return csr
    _check_public_key(facts)
    try:
        # Computed now so that an unusable algorithm/key pairing is a 400 here, not a crash in
        # the policy checks that later ask whether the signature is valid.
        _ = facts.signature_valid
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        oid = csr.signature_algorithm_oid
        name = getattr(oid, "_name", None) or oid.dotted_string
        raise BadCsrSignature(
            f"the CSR's signature ({name}) cannot be verified with its public key: {exc}"
        ) from None
    return csr


_PARSE_PROBLEMS = {
    "ExtraData": "trailing bytes follow the request",
    "InvalidLength": "a length is not in DER form (BER long or indefinite lengths are refused)",
    "InvalidValue": "a value is not DER-encoded",
    "ShortData": "the data is truncated",
    "UnexpectedTag": "unexpected ASN.1 type (is it a CSR at all?)",
}


def _der_problem(exc: ValueError) -> str:
    """The parser's complaint, led by a plain-words version of it when we know one."""
    detail = str(exc)
    for kind, words in _PARSE_PROBLEMS.items():
        if kind in detail:
            return f"{words} ({detail})"
    return detail


def _sent_spki_is(csr: x509.CertificateSigningRequest, spki: bytes) -> bool:
    """Whether the CSR's subjectPublicKeyInfo is exactly ``spki``: a fast path that walks the
    three DER headers in front of it (version, subject) instead of decoding the request
    with pyasn1, which costs milliseconds.  The request has already been parsed as strict
    DER by cryptography, so the headers are well formed; anything unexpected says False."""
    tbs = csr.tbs_certrequest_bytes
    try:
        offset, _ = content_bounds(tbs, 0)  # CertificationRequestInfo
        _, offset = content_bounds(tbs, offset)  # version
        _, offset = content_bounds(tbs, offset)  # subject
    except IndexError:
        return False
    return tbs[offset : offset + len(spki)] == spki


def _ec_parameters(csr: x509.CertificateSigningRequest) -> bytes | None:
    """The DER parameters of the CSR's EC subjectPublicKeyInfo exactly as sent."""
    try:
        info, _ = decoder.decode(
            csr.tbs_certrequest_bytes, asn1Spec=rfc2986.CertificationRequestInfo()
        )
    except PyAsn1Error as exc:
        raise MalformedDer(f"the CSR's subjectPublicKeyInfo cannot be decoded: {exc}") from None
    parameters = info["subjectPKInfo"]["algorithm"]["parameters"]
    return bytes(parameters) if parameters.isValue else None


def _names_a_curve(parameters: bytes | None) -> bool:
    if parameters is None:
        return False
    try:
        _, rest = decoder.decode(parameters, asn1Spec=univ.ObjectIdentifier())
    except PyAsn1Error:
        return False
    return not rest


def _check_public_key(facts: CsrFacts) -> None:
    """The key must be one this server can use: a known algorithm, a valid key, a named curve."""
    csr = facts.csr
    try:
        key = facts.public_key
    except UnsupportedAlgorithm as exc:
        raise PolicyViolation(
            f"the CSR's public key is of a type this server does not support ({exc})"
        ) from None
    except ValueError as exc:
        raise MalformedDer(f"the CSR's public key is not a valid key: {exc}") from None
    # cryptography maps explicit parameters of a well-known curve to that curve; RFC 5480
    # §2.1.1 allows only namedCurve in PKIX, so such a request is refused, not silently fixed.
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return
    # The re-encoding names the curve: when it is what was sent, the request named it too.
    if not _sent_spki_is(csr, facts.spki) and not _names_a_curve(_ec_parameters(csr)):
        raise PolicyViolation(
            "the CSR's EC key does not name its curve (explicit curve parameters); "
            "RFC 5480 requires a named curve such as prime256v1"
        )


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
