"""Helpers for the revocation, CRL and audit tests: the operator CLI, enrollment, CDP fetches."""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from tests.esthttp import Reply, enroll_basic, make_csr, write_pair
from tests.estserver import EstServer

ESTKIT = [sys.executable, "-m", "estkit"]


def estkit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the estkit command; never raises on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k != "ESTKIT_DIR"}
    return subprocess.run(
        [*ESTKIT, *args], capture_output=True, text=True, check=False, timeout=timeout, env=env
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a failed command."""
    assert result.returncode == 1, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def openssl_serial(cert: x509.Certificate) -> str:
    """The serial as `openssl crl -text` prints it: upper-case hex, whole octets."""
    digits = format(cert.serial_number, "X")
    return digits.zfill(len(digits) + len(digits) % 2)


def http_get(server: EstServer, path: str, method: str = "GET", body: bytes | None = None) -> Reply:
    """One plain-HTTP request to the instance's public listener."""
    parts = urlsplit(server.http_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


@dataclass
class Enrolled:
    key: object
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def serial(self) -> str:
        return serial_hex(self.cert)


def enroll(
    server: EstServer, directory: Path, cn: str | None = None, label: str | None = None
) -> Enrolled:
    """Enroll a fresh key with a fresh Basic user; the pair is written under directory."""
    name = cn or f"rev-{uuid.uuid4().hex[:10]}"
    password = server.add_user(name)
    key, der = make_csr(name)
    reply = enroll_basic(server, der, label, name, password)
    assert reply.status == 200, reply.text
    [cert] = reply.certificates()
    cert_path, key_path = write_pair(directory, name, key, cert)
    return Enrolled(key, cert, cert_path, key_path)


def cdp_url(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    [url] = [name.value for point in points for name in point.full_name or []]
    return url


@dataclass
class Fetched:
    status: int
    content_type: str
    body: bytes


def fetch_cdp(cert: x509.Certificate) -> Fetched:
    """GET the CRL at the certificate's own CDP URL (localhost -> 127.0.0.1: the listener
    binds the loopback address only)."""
    parts = urlsplit(cdp_url(cert))
    assert parts.hostname == "localhost"
    url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port}"))
    with urllib.request.urlopen(url, timeout=10) as response:
        return Fetched(response.status, response.headers["Content-Type"], response.read())


def fetch_crl(cert: x509.Certificate) -> x509.CertificateRevocationList:
    fetched = fetch_cdp(cert)
    assert fetched.status == 200
    assert fetched.content_type == "application/pkix-crl"
    assert fetched.body[0] == 0x30  # DER
    return x509.load_der_x509_crl(fetched.body)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def chain_file(server: EstServer, directory: Path) -> Path:
    """issuing + root, PEM: what `openssl crl -CAfile` needs to verify the CRL."""
    issuing = x509.load_pem_x509_certificate((server.data_dir / "ca" / "issuing.pem").read_bytes())
    root = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    path = directory / "chain.pem"
    path.write_bytes(issuing.public_bytes(Encoding.PEM) + root.public_bytes(Encoding.PEM))
    return path


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, check=False, timeout=30
    )


def ocsp_get(server: EstServer, cert: x509.Certificate) -> ocsp.OCSPResponse:
    """Ask the instance's responder about cert: a GET without a nonce (RFC 6960 A.1)."""
    issuer = x509.load_pem_x509_certificate((server.data_dir / "ca" / "issuing.pem").read_bytes())
    query = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    path = base64.b64encode(query.public_bytes(Encoding.DER)).decode()
    reply = http_get(server, "/ocsp/" + quote(path, safe=""))
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(reply.body)
