"""What the CA signs: validity, extensions, serials, SANs, subjects, key types, chains."""

from __future__ import annotations

import ipaddress
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from tests.esthttp import Reply, enroll_basic, issued, make_csr, new_key
from tests.estserver import EstServer

SKEW = timedelta(minutes=5)
"""notBefore is backdated by this much (estkit.authority.issue.CLOCK_SKEW_ALLOWANCE)."""

# --- helpers -------------------------------------------------------------------------------


def load_pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def issuing_ca(server: EstServer) -> x509.Certificate:
    return load_pem(server.data_dir / "ca" / "issuing.pem")


class Enroller:
    """One Basic user on a server (argon2 is paid once, then the server remembers it)."""

    def __init__(self, server: EstServer, name: str, labels=()) -> None:
        self.server = server
        self.name = name
        self.password = server.add_user(name, labels=labels)

    def reply(self, der: bytes, label: str | None = None) -> Reply:
        return enroll_basic(self.server, der, label, self.name, self.password)

    def cert(self, der: bytes, label: str | None = None) -> x509.Certificate:
        return issued(self.reply(der, label))


@pytest.fixture(scope="module")
def alice(est_server) -> Enroller:
    return Enroller(est_server, "issuance-alice")


@pytest.fixture(scope="module")
def device(est_server) -> Enroller:
    return Enroller(est_server, "issuance-device-7")


@pytest.fixture
def request_fixture(request):
    """Look a fixture up by name (for parametrizing over enrollers)."""
    return request.getfixturevalue


def ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


# --- validity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "days", "who"),
    [(None, 365, "alice"), ("iot", 30, "device"), ("server", 90, "alice")],
)
def test_validity_is_the_labels(request_fixture, label, days, who):
    enroller: Enroller = request_fixture(who)
    before = datetime.now(UTC).replace(microsecond=0)
    _, der = make_csr(enroller.name)
    cert = enroller.cert(der, label)
    after = datetime.now(UTC)
    validity = timedelta(days=days)
    assert before + validity - timedelta(seconds=1) <= cert.not_valid_after_utc
    assert cert.not_valid_after_utc <= after + validity
    assert before - SKEW - timedelta(seconds=1) <= cert.not_valid_before_utc <= after
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == validity + SKEW


def test_validity_never_beyond_the_issuing_ca(est_server_factory):
    server = est_server_factory('[labels.forever]\nvalidity = "9000d"\n')
    enroller = Enroller(server, "long-lived")
    _, der = make_csr("long-lived")
    cert = enroller.cert(der, "forever")
    issuing = issuing_ca(server)
    assert cert.not_valid_after_utc == issuing.not_valid_after_utc
    assert cert.not_valid_before_utc >= issuing.not_valid_before_utc
    # An ordinary label stays well inside.
    cert = enroller.cert(der)
    assert cert.not_valid_after_utc < issuing.not_valid_after_utc


# --- extensions -----------------------------------------------------------------------------


def test_extensions_of_an_ec_certificate(est_server, alice):
    _, der = make_csr("ext-ec")
    cert = alice.cert(der)
    issuing = issuing_ca(est_server)

    assert cert.version == x509.Version.v3
    assert cert.issuer == issuing.subject
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256

    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca is False
    assert basic.value.path_length is None

    key_usage = ext(cert, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert not key_usage.value.key_encipherment
    assert not key_usage.value.key_cert_sign
    assert not key_usage.value.crl_sign
    assert not key_usage.value.content_commitment
    assert not key_usage.value.data_encipherment
    assert not key_usage.value.key_agreement

    eku = ext(cert, x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    ski = ext(cert, x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = ext(cert, x509.AuthorityKeyIdentifier)
    assert not aki.critical
    assert aki.value.key_identifier == ext(issuing, x509.SubjectKeyIdentifier).value.digest

    issuing_id = ext(issuing, x509.SubjectKeyIdentifier).value.digest.hex()
    base = f"http://localhost:{server_http_port(est_server)}"
    [point] = ext(cert, x509.CRLDistributionPoints).value
    assert [n.value for n in point.full_name] == [f"{base}/crl/{issuing_id}.crl"]
    aia = ext(cert, x509.AuthorityInformationAccess).value
    ca_issuers = [
        d.access_location.value
        for d in aia
        if d.access_method == x509.oid.AuthorityInformationAccessOID.CA_ISSUERS
    ]
    assert ca_issuers == [f"{base}/ca/{issuing_id}.crt"]
    # The AIA URL really serves the issuing CA (fetched on the address the server listens on).
    local = ca_issuers[0].replace("http://localhost:", "http://127.0.0.1:")
    with urllib.request.urlopen(local, timeout=10) as response:
        assert x509.load_der_x509_certificate(response.read()) == issuing

    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)


def server_http_port(server: EstServer) -> int:
    return int(server.http_url.rsplit(":", 1)[1])


def test_key_encipherment_only_for_rsa(alice):
    for key_type, expected in (("rsa-2048", True), ("ec-p384", False), ("ed25519", False)):
        _, der = make_csr(f"ku-{key_type}", key=new_key(key_type))
        key_usage = ext(alice.cert(der), x509.KeyUsage)
        assert key_usage.critical
        assert key_usage.value.digital_signature
        assert key_usage.value.key_encipherment is expected, key_type


@pytest.mark.parametrize(
    ("label", "who", "eku"),
    [
        (None, "alice", [ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("iot", "device", [ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("server", "alice", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_extended_key_usage_per_label(request_fixture, label, who, eku):
    enroller: Enroller = request_fixture(who)
    _, der = make_csr(enroller.name)
    cert = enroller.cert(der, label)
    extension = ext(cert, x509.ExtendedKeyUsage)
    assert not extension.critical
    assert list(extension.value) == eku


def test_csr_extensions_are_not_copied(alice):
    """Only the subject, the key and allowed SANs come from the CSR: a CA:TRUE request is not."""
    key = new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wants-ca")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert = alice.cert(csr.public_bytes(serialization.Encoding.DER))
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert not ext(cert, x509.KeyUsage).value.key_cert_sign
    assert not ext(cert, x509.KeyUsage).value.crl_sign


# --- serial numbers -------------------------------------------------------------------------


def test_serials_are_positive_random_and_distinct(alice):
    serials = []
    for index in range(8):
        _, der = make_csr(f"serial-{index}")
        serials.append(alice.cert(der).serial_number)
    assert len(set(serials)) == len(serials)
    for serial in serials:
        assert serial > 0
        assert serial.bit_length() > 64
        assert serial.bit_length() <= 159  # 20 octets, positive (RFC 5280 §4.1.2.2)
    # Not a counter or a timestamp: random serials spread over far more than 64 bits.
    assert max(serials) - min(serials) > 2**64


# --- subjectAltNames ------------------------------------------------------------------------


def test_server_label_copies_dns_and_ip_sans(alice):
    sans = [
        x509.DNSName("web.example.com"),
        x509.DNSName("*.api.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    _, der = make_csr("web.example.com", sans=sans)
    cert = alice.cert(der, "server")
    extension = ext(cert, x509.SubjectAlternativeName)
    assert not extension.critical
    assert list(extension.value) == sans


def test_server_label_refuses_other_san_types(alice):
    _, der = make_csr("mail", sans=[x509.RFC822Name("someone@example.com")])
    reply = alice.reply(der, "server")
    assert reply.status == 403
    assert "RFC822Name" in reply.text


def test_default_label_refuses_sans(alice):
    _, der = make_csr("sneaky", sans=[x509.DNSName("bank.example.com")])
    reply = alice.reply(der)
    assert reply.status == 403
    assert "DNS subjectAltNames are not allowed" in reply.text
    _, der = make_csr("sneaky", sans=[x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
    reply = alice.reply(der)
    assert reply.status == 403
    assert "IP address subjectAltNames are not allowed" in reply.text


def test_invalid_dns_name_is_400(alice):
    _, der = make_csr("bad-dns", sans=[x509.DNSName("not a host name")])
    reply = alice.reply(der, "server")
    assert reply.status == 400
    assert "not a valid DNS name" in reply.text


# --- subjects -------------------------------------------------------------------------------


def test_iot_cn_must_equal_the_user(device):
    _, der = make_csr("issuance-device-7")
    cert = device.cert(der, "iot")
    assert cert.subject.rfc4514_string() == "CN=issuance-device-7"
    _, der = make_csr("issuance-device-8")
    reply = device.reply(der, "iot")
    assert reply.status == 403
    assert "issuance-device-8" in reply.text
    assert "issuance-device-7" in reply.text


def test_subject_is_copied_exactly(alice):
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example GmbH"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Plant 4"),
            x509.NameAttribute(NameOID.COMMON_NAME, "line-controller-12"),
        ]
    )
    _, der = make_csr(subject=subject)
    assert alice.cert(der).subject == subject


def test_empty_subject_is_400(alice):
    _, der = make_csr(cn=None)
    reply = alice.reply(der)
    assert reply.status == 400
    assert "subject is empty" in reply.text


# --- key types ------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ec-p384", "ed25519"])
def test_key_types_accepted_on_default_label(alice, key_type):
    key = new_key(key_type)
    _, der = make_csr(f"kt-{key_type}", key=key)
    cert = alice.cert(der)
    assert cert.public_key() == key.public_key()
    kinds = {
        "rsa-2048": rsa.RSAPublicKey,
        "ec-p256": ec.EllipticCurvePublicKey,
        "ec-p384": ec.EllipticCurvePublicKey,
        "ed25519": ed25519.Ed25519PublicKey,
    }
    assert isinstance(cert.public_key(), kinds[key_type])


def test_key_type_refused_by_label(device, alice):
    _, der = make_csr("issuance-device-7", key=new_key("ec-p384"))
    reply = device.reply(der, "iot")
    assert reply.status == 400
    assert "secp384r1" in reply.text
    assert "ec-p256" in reply.text
    _, der = make_csr("small-rsa", key=new_key("rsa-2048"))
    reply = alice.reply(der, "rsa")
    assert reply.status == 400
    assert "2048 bits" in reply.text
    assert "3072" in reply.text


def test_unsupported_curve_is_400(alice):
    _, der = make_csr("p521", key=ec.generate_private_key(ec.SECP521R1()))
    reply = alice.reply(der)
    assert reply.status == 400
    assert "secp521r1" in reply.text


# --- chains ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "purpose"), [(None, "sslclient"), ("server", "sslserver")])
def test_chain_verifies_with_openssl(est_server, alice, tmp_path, label, purpose):
    sans = [x509.DNSName("chain.example.com")] if label == "server" else None
    _, der = make_csr("chain.example.com", sans=sans)
    cert = alice.cert(der, label)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    root = est_server.data_dir / "ca" / "root.pem"
    issuing = est_server.data_dir / "ca" / "issuing.pem"
    command = ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(issuing)]
    result = subprocess.run(
        [*command, "-purpose", purpose, str(leaf)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{leaf}: OK" in result.stdout
    # Without the issuing CA the chain cannot be built: the check above is a real one.
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), str(leaf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
