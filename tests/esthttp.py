"""A deliberately low-level HTTPS client for tests: exact headers and bodies, nothing hidden."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import AttributeOID, NameOID

from estkit.wire.pkcs7 import load_certs_only

if TYPE_CHECKING:
    from tests.estserver import EstServer


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def certificates(self) -> list[x509.Certificate]:
        return load_certs_only(base64.b64decode(b"".join(self.body.split())))


def tls_context(
    ca_file: Path,
    cert: Path | None = None,
    key: Path | None = None,
    tls_version: str | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    if tls_version == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    elif tls_version == "1.3":
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def connect(url: str, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    connection.connect()
    return connection


def request(
    url: str,
    ca_file: Path,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    user: str | None = None,
    password: str | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    tls_version: str | None = None,
) -> Reply:
    """One request on a fresh connection."""
    connection = connect(url, tls_context(ca_file, cert, key, tls_version))
    try:
        return send(connection, url, method, body, headers, user, password)
    finally:
        connection.close()


def send(
    connection: http.client.HTTPSConnection,
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    user: str | None = None,
    password: str | None = None,
) -> Reply:
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    all_headers = dict(headers or {})
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    connection.request(method, path, body=body, headers=all_headers)
    response = connection.getresponse()
    return Reply(response.status, response.headers, response.read())


def raw_exchange(host: str, port: int, ca_file: Path, payload: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes over TLS and return everything the server answers until it closes."""
    context = tls_context(ca_file)
    with (
        socket.create_connection((host, port), timeout=timeout) as plain,
        context.wrap_socket(plain, server_hostname=host) as sock,
    ):
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (TimeoutError, ssl.SSLError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


KeyType = str


def new_key(key_type: KeyType = "ec-p256") -> CertificateIssuerPrivateKeyTypes:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(key_type)


def make_csr(
    cn: str | None = "device-1",
    key: CertificateIssuerPrivateKeyTypes | None = None,
    sans: list[x509.GeneralName] | None = None,
    challenge_password: str | None = None,
    subject: x509.Name | None = None,
) -> tuple[object, bytes]:
    """(private key, CSR DER)."""
    key = key or new_key()
    if subject is None:
        attributes = [] if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        subject = x509.Name(attributes)
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if challenge_password is not None:
        builder = builder.add_attribute(
            AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode()
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)
    return key, csr.public_bytes(serialization.Encoding.DER)


def b64(der: bytes) -> bytes:
    return base64.b64encode(der)


PKCS10 = {"Content-Type": "application/pkcs10"}


def write_pair(
    directory: Path, name: str, key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate
) -> tuple[Path, Path]:
    """Write key (PKCS#8 PEM) and certificate (PEM) files for a TLS client."""
    key_path = directory / f"{name}.key"
    cert_path = directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issued(reply: Reply) -> x509.Certificate:
    """The one certificate of a successful enrollment answer (fails with the server's reason)."""
    assert reply.status == 200, f"{reply.status}: {reply.text}"
    [cert] = reply.certificates()
    return cert


def enroll_with_cert(
    server: EstServer,
    operation: str,
    der: bytes,
    cert_path: Path,
    key_path: Path,
    label: str | None = None,
) -> Reply:
    """POST a CSR to simpleenroll or simplereenroll over mutual TLS on a fresh connection."""
    return request(
        f"{server.est_url(label)}/{operation}",
        server.ca_file,
        "POST",
        b64(der),
        PKCS10,
        cert=cert_path,
        key=key_path,
    )


def enroll_basic(
    server: EstServer, der: bytes, label: str | None, user: str, password: str
) -> Reply:
    """POST a CSR to simpleenroll with HTTP Basic on a fresh connection."""
    return request(
        f"{server.est_url(label)}/simpleenroll",
        server.ca_file,
        "POST",
        b64(der),
        PKCS10,
        user=user,
        password=password,
    )
