"""estkit enroll against the real server: authentication, labels, PoP, failures, outputs."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from tests.client.conftest import basic_args, file_mode, server_args
from tests.client.estproxy import issue_tls_certificate


def load_pair(cert_path, key_path):
    certificates = x509.load_pem_x509_certificates(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    return certificates, key


def enroll_args(est_server, device, label=None, cn=None):
    return [
        "enroll",
        *server_args(est_server, label),
        *basic_args(device),
        "--subject",
        f"CN={cn or device.user}",
        "--out-cert",
        device.path("device.pem"),
        "--out-key",
        device.path("device.key"),
    ]


def test_enroll_with_basic_writes_key_certificate_and_chain(cli, device, est_server):
    result = cli(*enroll_args(est_server, device))
    assert result.code == 0, result.err
    certificates, key = load_pair(device.path("device.pem"), device.path("device.key"))
    leaf, *chain = certificates
    assert leaf.subject.rfc4514_string() == f"CN={device.user}"
    assert leaf.public_key() == key.public_key()
    issuing = x509.load_pem_x509_certificate(
        (est_server.data_dir / "ca" / "issuing.pem").read_bytes()
    )
    assert chain == [issuing]  # leaf -> issuing; the root is the relying party's anchor
    leaf.verify_directly_issued_by(issuing)
    assert file_mode(device.path("device.key")) == 0o600
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert device.user in result.out


@pytest.mark.parametrize(
    ("label", "check"),
    [
        (
            "iot",
            lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1",
        ),
        ("rsa", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 3072),
    ],
)
def test_enroll_picks_the_key_type_csrattrs_asks_for(cli, device, est_server, label, check):
    result = cli(*enroll_args(est_server, device, label))
    assert result.code == 0, result.err
    _, key = load_pair(device.path("device.pem"), device.path("device.key"))
    assert check(key)


def test_enroll_with_explicit_key_type_and_sans(cli, device, est_server):
    result = cli(
        "enroll",
        *server_args(est_server, "server"),
        *basic_args(device),
        "--subject",
        "CN=web-1,O=Example",
        "--san",
        "DNS:web-1.example",
        "--san",
        "IP:10.1.2.3",
        "--key-type",
        "ed25519",
        "--out-cert",
        device.path("web.pem"),
        "--out-key",
        device.path("web.key"),
    )
    assert result.code == 0, result.err
    [leaf, *_], key = load_pair(device.path("web.pem"), device.path("web.key"))
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["web-1.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example"


def test_enroll_with_an_existing_key(cli, device, est_server):
    key = ec.generate_private_key(ec.SECP384R1())
    key_file = device.path("existing.key")
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = cli(
        "enroll",
        *server_args(est_server, None),
        *basic_args(device),
        "--subject",
        f"CN={device.user}",
        "--key",
        key_file,
        "--out-cert",
        device.path("x.pem"),
    )
    assert result.code == 0, result.err
    [leaf, *_] = x509.load_pem_x509_certificates(device.path("x.pem").read_bytes())
    assert leaf.public_key() == key.public_key()


def test_enroll_with_a_client_certificate(cli, client_server, renewing_device):
    est_server, device = client_server, renewing_device
    assert cli(*enroll_args(est_server, device)).code == 0
    result = cli(
        "enroll",
        *server_args(est_server, "mtls"),
        "--cert",
        device.path("device.pem"),
        "--key",
        device.path("device.key"),
        "--subject",
        "CN=second",
        "--out-cert",
        device.path("second.pem"),
        "--out-key",
        device.path("second.key"),
    )
    assert result.code == 0, result.err
    [leaf, *_], key = load_pair(device.path("second.pem"), device.path("second.key"))
    assert leaf.subject.rfc4514_string() == "CN=second"
    assert leaf.public_key() == key.public_key()
    old, _ = load_pair(device.path("device.pem"), device.path("device.key"))
    assert key.public_key() != old[0].public_key()  # a new key, not the authenticating one


def test_enroll_links_proof_of_possession_on_the_pop_label(cli, device, est_server):
    result = cli(*enroll_args(est_server, device, "pop"))
    assert result.code == 0, result.err
    [line] = [line for line in est_server.log().splitlines() if f"user:{device.user}" in line]
    assert "/pop/simpleenroll" in line and "status=200" in line


def test_pop_label_refuses_an_unlinked_csr(est_server, device):
    """The server does enforce linking, so the success above shows the link was made."""
    from estkit.client import BasicAuth, CsrTemplate, EstClient, RequestRejected, generate_key

    client = EstClient(
        est_server.url, est_server.ca_file, BasicAuth(device.user, device.password), "pop"
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device.user)])
    with pytest.raises(RequestRejected, match=r"(?i)tls-unique|linking"):
        client.enroll(CsrTemplate(generate_key("ec-p256"), name))


def run_process(*args):
    return subprocess.run(
        [sys.executable, "-m", "estkit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wrong_password_is_one_line_and_exit_4(device, est_server):
    device.password_file.write_text("not-the-password\n")
    process = run_process(*enroll_args(est_server, device))
    assert process.returncode == 4
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("estkit: error: enroll:")
    assert "refused the user name or password" in lines[0] and "--password-file" in lines[0]
    assert not device.path("device.pem").exists() and not device.path("device.key").exists()


def test_no_credentials_is_a_clear_line(cli, device, est_server):
    result = cli(
        "enroll",
        *server_args(est_server, None),
        "--subject",
        "CN=x",
        "--out-cert",
        device.path("a.pem"),
        "--out-key",
        device.path("a.key"),
    )
    assert result.code == 4
    assert len(result.error_lines) == 1 and "--user" in result.error_lines[0]


@pytest.mark.parametrize(
    ("label", "extra", "reason"),
    [
        ("iot", ["--subject", "CN=someone-else"], "only issues to the authenticated identity"),
        ("rsa", ["--key-type", "rsa-2048"], "at least 3072"),
    ],
)
def test_a_rejected_request_prints_the_servers_reason(
    cli, device, est_server, label, extra, reason
):
    args = enroll_args(est_server, device, label)
    if extra[0] == "--subject":
        args[args.index("--subject") + 1] = extra[1]
    else:
        args += extra
    result = cli(*args)
    assert result.code == 5
    assert len(result.error_lines) == 1
    assert "rejected the request" in result.error_lines[0]
    assert reason in result.error_lines[0]
    assert not device.path("device.key").exists()


def test_an_over_long_common_name_is_refused_with_a_clear_line(cli, device, est_server):
    args = enroll_args(est_server, device, cn="x" * 65)
    result = cli(*args)
    assert result.code == 2
    assert len(result.error_lines) == 1 and "64" in result.error_lines[0]


def test_unreachable_server(cli, device, est_server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli(
        "enroll",
        "--server",
        f"https://127.0.0.1:{port}",
        "--ca-file",
        est_server.ca_file,
        *basic_args(device),
        "--subject",
        "CN=x",
        "--out-cert",
        device.path("a.pem"),
        "--out-key",
        device.path("a.key"),
    )
    assert result.code == 3
    assert len(result.error_lines) == 1
    assert f"127.0.0.1:{port}" in result.error_lines[0]
    assert "check --server" in result.error_lines[0]


def self_signed_ca(path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Someone Else's CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_tls_verification_fails_with_an_unknown_ca(cli, device, est_server):
    other = self_signed_ca(device.path("other-ca.pem"))
    result = cli(
        "enroll",
        "--server",
        est_server.url,
        "--ca-file",
        other,
        *basic_args(device),
        "--subject",
        "CN=x",
        "--out-cert",
        device.path("a.pem"),
        "--out-key",
        device.path("a.key"),
    )
    assert result.code == 3
    assert len(result.error_lines) == 1
    assert "TLS verification" in result.error_lines[0] and "--ca-file" in result.error_lines[0]
    assert f"user:{device.user}" not in est_server.log()


def test_tls_verification_fails_on_a_name_mismatch(cli, device, est_server, proxy_factory):
    cert_file, key_file = issue_tls_certificate(
        est_server.data_dir, device.directory, ["wrong.example"]
    )
    proxy = proxy_factory(cert_file=cert_file, key_file=key_file)
    result = cli(
        "enroll",
        "--server",
        proxy.url,
        "--ca-file",
        est_server.ca_file,
        *basic_args(device),
        "--subject",
        "CN=x",
        "--out-cert",
        device.path("a.pem"),
        "--out-key",
        device.path("a.key"),
    )
    assert result.code == 3
    assert len(result.error_lines) == 1
    assert "mismatch" in result.error_lines[0]
    assert proxy.requests == []  # nothing, credentials included, went over that connection


def test_existing_outputs_are_not_overwritten_without_force(cli, device, est_server):
    device.path("device.key").write_text("precious")
    result = cli(*enroll_args(est_server, device))
    assert result.code == 1
    assert "--force" in result.error_lines[0]
    assert device.path("device.key").read_text() == "precious"
    assert not device.path("device.pem").exists()
    assert f"user:{device.user}" not in est_server.log()  # refused before asking the server

    forced = cli(*enroll_args(est_server, device), "--force")
    assert forced.code == 0, forced.err
    assert device.path("device.key").read_text() != "precious"
    assert file_mode(device.path("device.key")) == 0o600


def test_server_url_may_carry_the_label(cli, device, est_server):
    result = cli(
        "enroll",
        "--server",
        est_server.est_url("iot"),
        "--ca-file",
        est_server.ca_file,
        *basic_args(device),
        "--subject",
        f"CN={device.user}",
        "--out-cert",
        device.path("a.pem"),
        "--out-key",
        device.path("a.key"),
    )
    assert result.code == 0, result.err
    assert f"/iot/simpleenroll label=iot status=200 identity=user:{device.user}" in est_server.log()
