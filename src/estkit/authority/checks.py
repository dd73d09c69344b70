"""Issuance checks: small validators a label's profile turns into an ordered list.

Each check looks at one thing and raises an :mod:`estkit.errors` exception naming what it
checked and why the request fails; the authority applies them in order before signing.
"""

from __future__ import annotations

import base64
import fnmatch
import hmac
import ipaddress
import re
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier, SignatureAlgorithmOID

from estkit.authority.identity import OWN_ANCHOR
from estkit.authority.keys import CURVE_KEY_TYPES, describe_public_key
from estkit.authority.profile import Profile
from estkit.authority.request import EnrollmentRequest
from estkit.errors import BadCsrSignature, Forbidden, PolicyViolation, PopLinkingRequired
from estkit.wire.csr import challenge_password, csr_facts

Check = Callable[[EnrollmentRequest, Profile], None]

ACCEPTED_SIGNATURES = {
    SignatureAlgorithmOID.RSA_WITH_SHA256,
    SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512,
    SignatureAlgorithmOID.RSASSA_PSS,
    SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    SignatureAlgorithmOID.ED25519,
}
WEAK_HASHES = {"md5", "sha1", "sha224"}

# RFC 5280 Appendix A upper bounds for the attribute types a subject commonly holds.
NAME_UPPER_BOUNDS: dict[ObjectIdentifier, tuple[str, int]] = {
    NameOID.COMMON_NAME: ("CN", 64),
    NameOID.ORGANIZATION_NAME: ("O", 64),
    NameOID.ORGANIZATIONAL_UNIT_NAME: ("OU", 64),
    NameOID.LOCALITY_NAME: ("L", 128),
    NameOID.STATE_OR_PROVINCE_NAME: ("ST", 128),
    NameOID.COUNTRY_NAME: ("C", 2),
    NameOID.SERIAL_NUMBER: ("serialNumber", 64),
    NameOID.TITLE: ("title", 64),
    NameOID.EMAIL_ADDRESS: ("emailAddress", 255),
    NameOID.PSEUDONYM: ("pseudonym", 128),
}
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_label_access(request: EnrollmentRequest, profile: Profile) -> None:
    """The identity must be allowed on this label (users, anchors, the user's own labels)."""
    identity = request.identity
    where = f"label '{profile.label}'" if profile.label else "the default label"
    if identity.method == "basic":
        if identity.labels is not None and profile.label not in identity.labels:
            raise Forbidden(f"user '{identity.name}' may not enroll on {where}")
        if not any(fnmatch.fnmatchcase(identity.name, p) for p in profile.allow_users):
            raise Forbidden(f"user '{identity.name}' is not in allow_users of {where}")
    elif request.renewing is None and identity.anchor not in profile.allow_anchors:
        # Renewal is not initial enrollment: a certificate renews on the label that issued
        # it (checked by the authority), whatever the label's allow_anchors say.
        raise Forbidden(
            f"certificates issued by anchor '{identity.anchor}' may not enroll on {where} "
            "(allow_anchors)"
        )


def check_signature(request: EnrollmentRequest, profile: Profile) -> None:
    """The CSR is signed with an accepted algorithm, and the signature verifies."""
    csr = request.csr
    oid = csr.signature_algorithm_oid
    name = getattr(oid, "_name", None) or oid.dotted_string
    if oid not in ACCEPTED_SIGNATURES:
        raise PolicyViolation(
            f"the CSR is signed with {name}, which is not accepted; sign it with SHA-256 or "
            "stronger (RSA, ECDSA) or with Ed25519"
        )
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        hash_algorithm = csr.signature_hash_algorithm
        if hash_algorithm is None or hash_algorithm.name in WEAK_HASHES:
            raise PolicyViolation("the CSR's RSASSA-PSS signature uses a weak hash")
    if not csr_facts(csr).signature_valid:
        raise BadCsrSignature(
            "the CSR's signature does not verify with its public key (proof of possession failed)"
        )


def check_key(request: EnrollmentRequest, profile: Profile) -> None:
    """The public key is of a type and size the profile allows."""
    key = csr_facts(request.csr).public_key
    allowed = ", ".join(profile.key_types)
    if isinstance(key, rsa.RSAPublicKey):
        if "rsa" not in profile.key_types:
            raise PolicyViolation(f"RSA keys are not accepted here (allowed: {allowed})")
        if key.key_size < profile.rsa_min_bits:
            raise PolicyViolation(
                f"the RSA key has {key.key_size} bits; at least {profile.rsa_min_bits} are required"
            )
        if key.key_size > 16384:
            raise PolicyViolation(f"the RSA key has {key.key_size} bits; at most 16384 accepted")
        exponent = key.public_numbers().e
        if exponent < 3 or exponent % 2 == 0:
            raise PolicyViolation(f"the RSA public exponent {exponent} is not valid")
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        key_type = CURVE_KEY_TYPES.get(key.curve.name)
        if key_type is None or key_type not in profile.key_types:
            raise PolicyViolation(
                f"EC keys on curve {key.curve.name} are not accepted here (allowed: {allowed})"
            )
        return
    if isinstance(key, ed25519.Ed25519PublicKey):
        if "ed25519" not in profile.key_types:
            raise PolicyViolation(f"Ed25519 keys are not accepted here (allowed: {allowed})")
        return
    raise PolicyViolation(f"{describe_public_key(key)} keys are not accepted (allowed: {allowed})")


def check_name_bounds(request: EnrollmentRequest, profile: Profile) -> None:
    """Subject attributes respect RFC 5280's upper bounds and hold no control characters."""
    for attribute in csr_facts(request.csr).subject:
        value = attribute.value
        text = value if isinstance(value, str) else value.decode("latin-1")
        short, bound = NAME_UPPER_BOUNDS.get(attribute.oid, (attribute.oid.dotted_string, 32768))
        if len(text) > bound:
            raise PolicyViolation(
                f"subject {short} is {len(text)} characters; RFC 5280 allows at most {bound}"
            )
        if _CONTROL.search(text):
            raise PolicyViolation(f"subject {short} contains control characters")


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("latin-1")


def check_subject(request: EnrollmentRequest, profile: Profile) -> None:
    """Subject present when required; CN allowed for this label and, if so set, the identity's."""
    subject = csr_facts(request.csr).subject
    if len(subject) == 0:
        if profile.require_subject:
            raise PolicyViolation("the CSR's subject is empty; this label requires a subject")
        return
    if len(subject.get_attributes_for_oid(NameOID.COMMON_NAME)) > 1:
        raise PolicyViolation("the CSR's subject has more than one CN")
    cn = common_name(subject)
    if cn is None:
        if profile.require_subject:
            raise PolicyViolation("the CSR's subject has no CN; this label requires one")
        return
    if profile.cn_must_equal_identity and cn != request.identity.name:
        raise Forbidden(
            f"the CSR asks for CN '{cn}' but this label only issues to the authenticated "
            f"identity '{request.identity.name}'"
        )
    if not any(fnmatch.fnmatchcase(cn, pattern) for pattern in profile.allowed_cn):
        raise Forbidden(f"CN '{cn}' is not allowed on this label (allowed_cn)")


def requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def _valid_dns_name(name: str) -> bool:
    body = name[2:] if name.startswith("*.") else name
    if len(name) > 253 or not body:
        return False
    return all(_DNS_LABEL.fullmatch(part) for part in body.rstrip(".").split("."))


def check_sans(request: EnrollmentRequest, profile: Profile) -> None:
    """Only SAN types and values the profile allows."""
    for general_name in requested_sans(request.csr):
        if isinstance(general_name, x509.DNSName):
            if "dns" not in profile.san_types:
                raise Forbidden("DNS subjectAltNames are not allowed on this label")
            if not _valid_dns_name(general_name.value):
                raise PolicyViolation(f"'{general_name.value}' is not a valid DNS name")
            if not any(
                fnmatch.fnmatchcase(general_name.value.lower(), p.lower())
                for p in profile.allowed_dns
            ):
                raise Forbidden(f"DNS name '{general_name.value}' is not allowed (allowed_dns)")
        elif isinstance(general_name, x509.IPAddress):
            if "ip" not in profile.san_types:
                raise Forbidden("IP address subjectAltNames are not allowed on this label")
            address = general_name.value
            if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise PolicyViolation("IP address subjectAltNames must be single addresses")
            if not any(
                address in network
                for network in profile.allowed_ips
                if network.version == address.version
            ):
                raise Forbidden(f"IP address {address} is not allowed (allowed_ips)")
        else:
            raise Forbidden(
                f"subjectAltName of type {type(general_name).__name__} is not allowed here"
            )


def check_pop_linking(request: EnrollmentRequest, profile: Profile) -> None:
    """RFC 7030 §3.5: challengePassword must be base64 of this TLS connection's tls-unique.

    tls-unique is defined for TLS 1.2 only (RFC 9266 §3 forbids it on TLS 1.3, where Python
    would still return a value), so a linking label refuses TLS 1.3 requests with a reason.
    """
    if not profile.require_pop:
        return
    if request.channel.tls_version != "TLSv1.2":
        raise PopLinkingRequired(
            "this label requires proof-of-possession linking (RFC 7030 section 3.5), which uses "
            f"tls-unique and needs TLS 1.2; this connection is {request.channel.tls_version}. "
            "Reconnect with TLS 1.2 and put base64(tls-unique) in the CSR's challengePassword"
        )
    expected = base64.b64encode(request.channel.tls_unique or b"").decode("ascii")
    provided = challenge_password(request.csr)
    if provided is None:
        raise PopLinkingRequired(
            "this label requires proof-of-possession linking (RFC 7030 section 3.5): the CSR "
            "must carry challengePassword = base64(tls-unique) of this TLS connection"
        )
    if not hmac.compare_digest(provided.strip().encode(), expected.encode()):
        raise PopLinkingRequired(
            "proof-of-possession linking failed: the CSR's challengePassword is not the tls-unique "
            "value of this TLS connection (was the CSR made on another connection?)"
        )


def _sans_text(names: list[x509.GeneralName]) -> list[str]:
    return sorted(f"{type(n).__name__}:{n.value}" for n in names)


def check_reenroll_matches(request: EnrollmentRequest, profile: Profile) -> None:
    """RFC 7030 §4.2.2: a reenroll CSR has the same Subject and SubjectAltName as the cert."""
    current = request.renewing
    if current is None:
        return
    subject = csr_facts(request.csr).subject
    if subject != current.subject:
        raise PolicyViolation(
            f"reenroll must keep the subject: the CSR has '{subject.rfc4514_string()}'"
            f" but the certificate has '{current.subject.rfc4514_string()}'"
        )
    try:
        current_sans = list(
            current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        current_sans = []
    wanted, have = _sans_text(requested_sans(request.csr)), _sans_text(current_sans)
    if wanted != have:
        raise PolicyViolation(
            f"reenroll must keep the subjectAltName: the CSR has {wanted or 'none'} but the "
            f"certificate has {have or 'none'}"
        )


def check_reenroll_certificate(request: EnrollmentRequest, profile: Profile) -> None:
    """Only this CA's own certificates can be renewed."""
    if request.renewing is not None and request.channel.peer_anchor != OWN_ANCHOR:
        raise Forbidden("reenroll needs a TLS client certificate issued by this CA")


def same_key(csr: x509.CertificateSigningRequest, cert: x509.Certificate) -> bool:
    encoding, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return csr_facts(csr).spki == cert.public_key().public_bytes(encoding, spki)


CHECKS: tuple[Check, ...] = (
    check_label_access,
    check_reenroll_certificate,
    check_key,
    check_signature,
    check_name_bounds,
    check_reenroll_matches,
    check_subject,
    check_sans,
    check_pop_linking,
)
"""Applied in this order: who may ask, then is the CSR sound, then what it asks for."""
