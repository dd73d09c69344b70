"""The whole flow driven by tools we did not write: openssl req/pkcs7/verify and curl."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("openssl") is None or shutil.which("curl") is None,
        reason="openssl and curl are needed (apt-get install openssl curl)",
    ),
]


def run(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, timeout=60, check=False)


def curl(server, cwd: Path, path: str, *extra: str) -> tuple[int, bytes]:
    """(HTTP status, body) of a curl request to the EST server."""
    result = run(
        "curl",
        "-sS",
        "--cacert",
        str(server.ca_file),
        "-o",
        "body.out",
        "-w",
        "%{http_code}",
        *extra,
        f"{server.est_url()}{path}",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr.decode()
    return int(result.stdout), (cwd / "body.out").read_bytes()


def openssl_csr(cwd: Path, name: str, subject: str) -> Path:
    """A P-256 key and a base64 DER CSR made by `openssl req`, as the README recipe does."""
    result = run(
        "openssl",
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        subject,
        "-outform",
        "DER",
        "-out",
        f"{name}.der",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr.decode()
    csr = cwd / f"{name}.csr"
    csr.write_bytes(base64.encodebytes((cwd / f"{name}.der").read_bytes()))
    return csr


def print_certs(cwd: Path, body: bytes, out: str) -> list[x509.Certificate]:
    """Decode an EST base64 body with `openssl base64` and list it with `openssl pkcs7`."""
    (cwd / "p7.b64").write_bytes(body)
    decoded = run("openssl", "base64", "-d", "-in", "p7.b64", "-out", "p7.der", cwd=cwd)
    assert decoded.returncode == 0, decoded.stderr.decode()
    listed = run(
        "openssl",
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        "p7.der",
        "-print_certs",
        "-out",
        out,
        cwd=cwd,
    )
    assert listed.returncode == 0, listed.stderr.decode()
    return x509.load_pem_x509_certificates((cwd / out).read_bytes())


def openssl_verify(cwd: Path, server, cert: str) -> str:
    result = run(
        "openssl",
        "verify",
        "-CAfile",
        str(server.ca_file),
        "-untrusted",
        "cacerts.pem",
        cert,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return result.stdout.decode()


def test_cacerts_enroll_reenroll_verify(est_server, tmp_path):
    status, body = curl(est_server, tmp_path, "/cacerts")
    assert status == 200
    ca_certs = print_certs(tmp_path, body, "cacerts.pem")
    subjects = {c.subject.rfc4514_string() for c in ca_certs}
    assert subjects == {"CN=estkit Root CA,O=estkit", "CN=estkit Issuing CA,O=estkit"}

    password = est_server.add_user("curl-user")
    csr = openssl_csr(tmp_path, "device", "/CN=curl-device/O=Example")
    status, body = curl(
        est_server,
        tmp_path,
        "/simpleenroll",
        "--user",
        f"curl-user:{password}",
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        f"@{csr.name}",
    )
    assert status == 200, body
    [cert] = print_certs(tmp_path, body, "device.pem")
    assert cert.subject.rfc4514_string() == "O=Example,CN=curl-device"
    assert "device.pem: OK" in openssl_verify(tmp_path, est_server, "device.pem")

    # Renew over mutual TLS with the certificate just issued (same key, same subject).
    renew_csr = run(
        "openssl",
        "req",
        "-new",
        "-key",
        "device.key",
        "-subj",
        "/CN=curl-device/O=Example",
        "-outform",
        "DER",
        "-out",
        "renew.der",
        cwd=tmp_path,
    )
    assert renew_csr.returncode == 0
    (tmp_path / "renew.csr").write_bytes(base64.b64encode((tmp_path / "renew.der").read_bytes()))
    status, body = curl(
        est_server,
        tmp_path,
        "/simplereenroll",
        "--cert",
        "device.pem",
        "--key",
        "device.key",
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        "@renew.csr",
    )
    assert status == 200, body
    [renewed] = print_certs(tmp_path, body, "renewed.pem")
    assert renewed.subject == cert.subject
    assert renewed.serial_number != cert.serial_number
    assert renewed.public_key() == cert.public_key()
    assert "renewed.pem: OK" in openssl_verify(tmp_path, est_server, "renewed.pem")
    record = est_server.store().certificate(format(renewed.serial_number, "x"))
    assert record is not None
    assert (record.kind, record.replaces_serial) == ("renew", format(cert.serial_number, "x"))


def test_curl_without_credentials_gets_basic_challenge(est_server, tmp_path):
    csr = openssl_csr(tmp_path, "anon", "/CN=anon")
    result = run(
        "curl",
        "-sS",
        "-i",
        "--cacert",
        str(est_server.ca_file),
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        f"@{csr.name}",
        f"{est_server.est_url()}/simpleenroll",
        cwd=tmp_path,
    )
    head = result.stdout.decode()
    assert head.startswith("HTTP/1.1 401")
    assert 'WWW-Authenticate: Basic realm="estkit"' in head


def test_openssl_s_client_tls12_and_tls13(est_server, tmp_path):
    host, port = est_server.url.split("://")[1].rsplit(":", 1)
    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        result = run(
            "openssl",
            "s_client",
            flag,
            "-connect",
            f"{host}:{port}",
            "-CAfile",
            str(est_server.ca_file),
            "-verify_return_error",
            "-brief",
            cwd=tmp_path,
            stdin=b"",
        )
        output = result.stderr.decode() + result.stdout.decode()
        assert f"Protocol version: {version}" in output, output
        assert "Verification: OK" in output, output
