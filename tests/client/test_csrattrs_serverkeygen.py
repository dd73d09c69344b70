"""estkit csrattrs on several labels; estkit serverkeygen (the estkit server, a scripted answer)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.client.conftest import basic_args, file_mode, server_args


@pytest.mark.parametrize(
    ("label", "expected", "absent"),
    [
        (None, ["nothing in particular"], ["PoP linking"]),
        ("iot", ["EC P-256", "PoP linking:        not required", "ecdsa-with-SHA256"], []),
        ("pop", ["PoP linking:        required", "tls-unique"], ["EC P-256"]),
        ("rsa", ["key type:           RSA", "sha256WithRSAEncryption"], []),
        ("server", ["subjectAltName (2.5.29.17)", "key type:           not specified"], []),
    ],
)
def test_csrattrs_describes_what_each_label_asks_for(cli, est_server, label, expected, absent):
    result = cli("csrattrs", *server_args(est_server, label))
    assert result.code == 0, result.err
    for text in expected:
        assert text in result.out
    for text in absent:
        assert text not in result.out


def test_serverkeygen_against_the_estkit_server(cli, est_server, device):
    """The estkit server's own answer (server/serverkeygen.py), end to end."""
    result = cli(
        "serverkeygen",
        *server_args(est_server),
        *basic_args(device),
        "--subject",
        f"CN={device.user}",
        "--out-cert",
        device.path("k.pem"),
        "--out-key",
        device.path("k.key"),
    )
    assert result.code == 0, result.err
    key = serialization.load_pem_private_key(device.path("k.key").read_bytes(), None)
    assert file_mode(device.path("k.key")) == 0o600
    leaf, *chain = x509.load_pem_x509_certificates(device.path("k.pem").read_bytes())
    assert leaf.public_key() == key.public_key()
    assert leaf.subject.rfc4514_string() == f"CN={device.user}"
    issuing = x509.load_pem_x509_certificate(
        (est_server.data_dir / "ca" / "issuing.pem").read_bytes()
    )
    assert chain == [issuing]


def _b64_lines(der: bytes, end: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"".join(text[i : i + 76] + end for i in range(0, len(text), 76))


def test_serverkeygen_saves_the_servers_key_and_certificate(cli, est_server, device, proxy_factory):
    """A scripted server answers serverkeygen (certificate part first, LF line ends)."""
    ca_dir = est_server.data_dir / "ca"
    issuing = x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes())
    issuing_key = serialization.load_pem_private_key((ca_dir / "issuing.key").read_bytes(), None)
    made: dict[str, object] = {}

    def script(record):
        if not record.path.endswith("/serverkeygen"):
            return None
        csr = x509.load_der_x509_csr(base64.b64decode(record.body))
        key = ec.generate_private_key(ec.SECP384R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(issuing.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .sign(issuing_key, hashes.SHA256())
        )
        made["key"] = key
        made["cert"] = cert
        key_der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        certs_der = pkcs7.serialize_certificates([cert], serialization.Encoding.DER)
        body = (
            b"--xyz\nContent-Type: application/pkcs7-mime; smime-type=certs-only\n"
            b"Content-Transfer-Encoding: base64\n\n"
            + _b64_lines(certs_der, b"\n")
            + b"--xyz\nContent-Type: application/pkcs8\nContent-Transfer-Encoding: base64\n\n"
            + _b64_lines(key_der, b"\n")
            + b"--xyz--\n"
        )
        return web.Response(body=body, headers={"Content-Type": 'multipart/mixed; boundary="xyz"'})

    proxy = proxy_factory(script)
    result = cli(
        "serverkeygen",
        "--server",
        proxy.url,
        "--ca-file",
        est_server.ca_file,
        *basic_args(device),
        "--subject",
        "CN=made-by-server",
        "--out-cert",
        device.path("k.pem"),
        "--out-key",
        device.path("k.key"),
    )
    assert result.code == 0, result.err
    [request] = proxy.paths("/serverkeygen")
    assert request.headers["Content-Type"] == "application/pkcs10"
    assert request.headers["Authorization"].startswith("Basic ")
    key = serialization.load_pem_private_key(device.path("k.key").read_bytes(), None)
    assert key.private_numbers() == made["key"].private_numbers()
    assert file_mode(device.path("k.key")) == 0o600
    leaf, *chain = x509.load_pem_x509_certificates(device.path("k.pem").read_bytes())
    assert leaf == made["cert"]
    assert chain == [issuing]
