"""What an enrollment works out once and reuses: a CSR's parsed parts and signature check
(wire/csr.py), the key identifier and the extensions encoded once (authority/issue.py), the
record of a certificate from what built it (authority/service.py), and the store record a
renewal's label check shares with certificate_anchor."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.authority.ca import CertificateAuthority
from estkit.authority.checks import check_signature
from estkit.authority.identity import OWN_ANCHOR, Channel, Identity
from estkit.authority.issue import (
    IssuedCertificate,
    PublicUrls,
    build_certificate,
    key_identifier,
    validity_window,
)
from estkit.authority.profile import parse_profile
from estkit.authority.request import EnrollmentRequest
from estkit.authority.service import Authority, certificate_record
from estkit.errors import BadCsrSignature, Forbidden, ServiceUnavailable
from estkit.wire.csr import csr_facts, load_csr
from estkit.wire.der import assemble_signed, der_elements
from tests.esthttp import make_csr, new_key
from tests.pki import make_ca, make_leaf

URLS = PublicUrls("http://ca.example:8080")
SANS = [
    x509.DNSName("d.example"),
    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
    x509.RFC822Name("a@b.example"),
]


def test_csr_facts_are_worked_out_once_per_csr() -> None:
    csr = load_csr(make_csr("dev", sans=SANS)[1])
    facts = csr_facts(csr)
    assert csr_facts(csr) is facts
    assert facts.subject == csr.subject
    assert facts.public_key == csr.public_key()
    assert facts.spki == csr.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    assert facts.signature_valid is csr.is_signature_valid is True
    other = load_csr(make_csr("other")[1])
    assert csr_facts(other) is not facts
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(csr_facts(other)))
    worker.start()
    worker.join()
    assert found[0] is not csr_facts(other)  # each thread keeps its own


def test_a_bad_signature_stays_refused_after_load_csr() -> None:
    der = bytearray(make_csr("dev")[1])
    der[-1] ^= 0x01  # inside the signature's last integer
    csr = load_csr(bytes(der))
    request = EnrollmentRequest(
        label="",
        csr=csr,
        identity=Identity(name="u", method="basic"),
        channel=Channel("TLSv1.3", None, None, None),
    )
    with pytest.raises(BadCsrSignature):
        check_signature(request, parse_profile("", {}))


def signed_csr(key_type: str, hash_algorithm: hashes.HashAlgorithm | None) -> bytes:
    key = new_key(key_type)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev")])
    )
    return builder.sign(key, hash_algorithm).public_bytes(Encoding.DER)


@pytest.mark.parametrize(
    ("key_type", "hash_algorithm"),
    [
        ("ec-p256", hashes.SHA256()),
        ("ec-p256", hashes.SHA384()),
        ("ec-p384", hashes.SHA512()),
        ("ec-p256", hashes.SHA224()),  # not in the fast path: cryptography checks it
        ("rsa-2048", hashes.SHA256()),
        ("ed25519", None),
    ],
    ids=["p256-sha256", "p256-sha384", "p384-sha512", "p256-sha224", "rsa", "ed25519"],
)
@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered"])
def test_the_signature_check_agrees_with_cryptography(
    key_type: str, hash_algorithm: hashes.HashAlgorithm | None, tampered: bool
) -> None:
    """ECDSA signatures are checked with the key already parsed; the answer must be
    cryptography's own for every algorithm, valid or not."""
    der = bytearray(signed_csr(key_type, hash_algorithm))
    if tampered:
        der[-1] ^= 0x01  # inside the signature
    csr = x509.load_der_x509_csr(bytes(der))
    assert csr_facts(csr).signature_valid is csr.is_signature_valid is not tampered


def test_a_signature_over_other_bytes_is_refused() -> None:
    """A valid signature by the same key, but over another request: not proof of possession."""
    key = new_key()
    first = x509.load_der_x509_csr(make_csr("first", key=key)[1])
    second = x509.load_der_x509_csr(make_csr("second", key=key)[1])
    spliced = assemble_signed(
        first.tbs_certrequest_bytes,
        der_elements(second.public_bytes(Encoding.DER))[1],
        second.signature,
    )
    csr = x509.load_der_x509_csr(spliced)
    assert csr_facts(csr).signature_valid is csr.is_signature_valid is False


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "ed25519"])
def test_the_subject_key_identifier_is_rfc_5280_method_1(
    ca: CertificateAuthority, key_type: str
) -> None:
    """Taken from the encoded key, it equals cryptography's ``from_public_key``."""
    key = new_key(key_type).public_key()
    expected = x509.SubjectKeyIdentifier.from_public_key(key).digest
    assert key_identifier(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)) == (
        expected
    )
    csr = load_csr(make_csr("dev")[1])
    issued = build_certificate(
        ca, csr, parse_profile("", {}), 0x1234, datetime.now(UTC), URLS, public_key=key
    )
    extension = issued.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert extension.value.digest == issued.subject_key_id == expected


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "ed25519"])
@pytest.mark.parametrize(("cn", "sans"), [("dev", None), ("dev", SANS), (None, SANS)])
@pytest.mark.parametrize("server_key", [False, True])
def test_record_from_building_equals_record_read_off_the_certificate(
    ca: CertificateAuthority,
    key_type: str,
    cn: str | None,
    sans: list[x509.GeneralName] | None,
    server_key: bool,
) -> None:
    csr = load_csr(make_csr(cn, key=new_key(key_type), sans=sans)[1])
    profile = parse_profile("", {"san_types": ["dns", "ip"]})
    public_key = new_key("ec-p256").public_key() if server_key else None
    now = datetime.now(UTC)
    issued = build_certificate(ca, csr, profile, 0x1234, now, URLS, public_key=public_key)
    args = ("", "user:u", "enroll", ca.issuing_id, now, "ab")
    read_off = IssuedCertificate.read_off(issued.certificate)
    assert certificate_record(issued, *args) == certificate_record(read_off, *args)


def test_a_certificate_has_its_extensions_in_order_and_its_validity_in_utc(
    ca: CertificateAuthority,
) -> None:
    csr = load_csr(make_csr("dev", sans=SANS[:2])[1])
    profile = parse_profile("", {"san_types": ["dns", "ip"]})  # EKU: clientAuth by default
    now = datetime.now(UTC)
    cert = build_certificate(ca, csr, profile, 0x1234, now, URLS).certificate
    assert [(type(e.value), e.critical) for e in cert.extensions] == [
        (x509.BasicConstraints, True),
        (x509.KeyUsage, True),
        (x509.SubjectKeyIdentifier, False),
        (x509.AuthorityKeyIdentifier, False),
        (x509.CRLDistributionPoints, False),
        (x509.AuthorityInformationAccess, False),
        (x509.ExtendedKeyUsage, False),
        (x509.SubjectAlternativeName, False),
    ]
    values = {type(e.value): e.value for e in cert.extensions}
    assert values[x509.BasicConstraints] == x509.BasicConstraints(ca=False, path_length=None)
    assert values[x509.KeyUsage].digital_signature
    assert not values[x509.KeyUsage].key_encipherment  # an EC key
    assert values[x509.AuthorityKeyIdentifier].key_identifier == bytes.fromhex(ca.issuing_id)
    [point] = values[x509.CRLDistributionPoints]
    assert point.full_name == [x509.UniformResourceIdentifier(URLS.crl(ca.issuing_id))]
    assert [access.access_location.value for access in values[x509.AuthorityInformationAccess]] == [
        URLS.ocsp(),
        URLS.ca_certificate(ca.issuing_id),
    ]
    assert list(values[x509.ExtendedKeyUsage]) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(values[x509.SubjectAlternativeName]) == SANS[:2]
    assert cert.issuer == ca.issuing.subject
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == validity_window(
        ca, profile, now
    )


def test_nothing_is_issued_once_the_issuing_ca_has_expired(ca: CertificateAuthority) -> None:
    csr = load_csr(make_csr("dev")[1])
    after = ca.issuing.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(ServiceUnavailable, match="issuing CA certificate has expired"):
        build_certificate(ca, csr, parse_profile("", {}), 0x1234, after, URLS)


def renewal(cert: x509.Certificate, label: str, issued_on: str | None) -> EnrollmentRequest:
    identity = Identity(
        name="dev",
        method="certificate",
        anchor=OWN_ANCHOR,
        certificate=cert,
        issued_on=issued_on,
    )
    return EnrollmentRequest(
        label=label,
        csr=load_csr(make_csr("dev")[1]),
        identity=identity,
        channel=Channel("TLSv1.3", None, cert, OWN_ANCHOR),
        renewing=cert,
    )


@pytest.mark.parametrize("origin_known", [True, False])
@pytest.mark.parametrize("on_loop", [False, True])
def test_a_certificate_renews_only_on_its_own_label(
    authority: Authority, monkeypatch: pytest.MonkeyPatch, origin_known: bool, on_loop: bool
) -> None:
    """With the label certificate_origin read when the certificate was accepted (the store
    is not read again), or read from the store; on a thread (enroll) or on the event loop
    (enroll_async)."""

    def enroll(request: EnrollmentRequest) -> x509.Certificate:
        if on_loop:
            return asyncio.run(authority.enroll_async(request))
        return authority.enroll(request)

    enrolled = EnrollmentRequest(
        label="",
        csr=load_csr(make_csr("dev")[1]),
        identity=Identity(name="u", method="basic"),
        channel=Channel("TLSv1.3", None, None, None),
    )
    cert = enroll(enrolled)
    issued_on = None
    if origin_known:
        assert authority.certificate_origin(cert) == (OWN_ANCHOR, "")
        issued_on = ""
    reads: list[str] = []
    read = authority.store.certificate
    monkeypatch.setattr(authority.store, "certificate", lambda s: reads.append(s) or read(s))
    with pytest.raises(Forbidden, match="can only be renewed there"):
        enroll(renewal(cert, "iot", issued_on))
    renewed = enroll(renewal(cert, "", issued_on))
    assert len(reads) == (0 if origin_known else 2)
    record = read(format(renewed.serial_number, "x"))
    assert record is not None
    assert (record.label, record.kind) == ("", "rekey")
    assert record.replaces_serial == format(cert.serial_number, "x")


def test_a_recorded_certificate_is_known_without_its_signature_checked_again(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte for byte a certificate this CA recorded: no second signature check.  One that
    only carries the issuing CA's name (a third-party anchor of the same name) is still
    told apart by its signature, and one signed by this CA but never recorded is refused."""
    cert = authority.enroll(
        EnrollmentRequest(
            label="iot",
            csr=load_csr(make_csr("dev")[1]),
            identity=Identity(name="u", method="basic"),
            channel=Channel("TLSv1.3", None, None, None),
        )
    )
    checked: list[x509.Certificate] = []
    generation_for = CertificateAuthority.generation_for
    monkeypatch.setattr(
        CertificateAuthority,
        "generation_for",
        lambda ca, c: checked.append(c) or generation_for(ca, c),
    )
    assert authority.certificate_origin(cert) == (OWN_ANCHOR, "iot")
    assert checked == []

    namesake_key, namesake = make_ca("Issuing CA")  # the fixture CA's own name
    assert namesake.subject == authority.ca.issuing.subject
    stranger = make_leaf(namesake_key, namesake, "stranger")[1]
    authority.anchors["namesake"] = [namesake]
    assert authority.certificate_origin(stranger) == ("namesake", None)
    assert checked == [stranger]

    unrecorded = make_leaf(authority.ca.issuing_key, authority.ca.issuing, "forged")[1]
    with pytest.raises(Forbidden, match="not in this CA's records"):
        authority.certificate_origin(unrecorded)
