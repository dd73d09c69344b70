"""The plain-HTTP listener: CA certificates for AIA caIssuers, CRL URLs, and never EST."""

from __future__ import annotations

import base64
import http.client
import uuid
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.esthttp import PKCS10, Reply, b64, enroll_basic, issued, make_csr, request

# Helpers ----------------------------------------------------------------------------------------


def http_get(server, path: str, method: str = "GET", body: bytes | None = None, headers=None):
    """One plain-HTTP request to the instance's public listener."""
    parts = urlsplit(server.http_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def ski(cert: x509.Certificate) -> str:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def root_of(server) -> x509.Certificate:
    return x509.load_pem_x509_certificate(server.ca_file.read_bytes())


def issuing_of(server) -> x509.Certificate:
    reply = request(server.est_url() + "/cacerts", server.ca_file)
    assert reply.status == 200, reply.text
    [issuing] = [c for c in reply.certificates() if c.subject != c.issuer]
    return issuing


def issued_count(server) -> int:
    store = server.store()
    try:
        return len(store.certificates())
    finally:
        store.close()


def enrolled_certificate(server) -> x509.Certificate:
    user, password = server.shared_user()
    _, der = make_csr(f"aia-{uuid.uuid4().hex[:8]}")
    return issued(enroll_basic(server, der, None, user, password))


def assert_der_certificate(reply: Reply) -> x509.Certificate:
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "application/pkix-cert"
    assert reply.headers["Content-Length"] == str(len(reply.body))
    assert reply.body[0] == 0x30  # DER, not PEM or base64
    return x509.load_der_x509_certificate(reply.body)


# CA certificates --------------------------------------------------------------------------------


def test_root_certificate(est_server):
    cert = assert_der_certificate(http_get(est_server, "/ca/root.crt"))
    assert cert == root_of(est_server)
    assert cert.public_bytes(Encoding.DER) == http_get(est_server, "/ca/root.crt").body


def test_issuing_certificate(est_server):
    cert = assert_der_certificate(http_get(est_server, "/ca/issuing.crt"))
    assert cert == issuing_of(est_server)
    cert.verify_directly_issued_by(root_of(est_server))


def test_certificates_by_subject_key_identifier(est_server):
    issuing, root = issuing_of(est_server), root_of(est_server)
    by_ski = assert_der_certificate(http_get(est_server, f"/ca/{ski(issuing)}.crt"))
    assert by_ski == issuing
    assert assert_der_certificate(http_get(est_server, f"/ca/{ski(root)}.crt")) == root
    assert ski(issuing) != ski(root)


def test_head_of_ca_certificate(est_server):
    get = http_get(est_server, "/ca/issuing.crt")
    head = http_get(est_server, "/ca/issuing.crt", "HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Type"] == "application/pkix-cert"
    assert head.headers["Content-Length"] == get.headers["Content-Length"]


@pytest.mark.parametrize(
    "name", ["intermediate", "deadbeef", "ROOT", "root.pem", "..%2Froot", "%0aforged"]
)
def test_unknown_ca_certificate_is_404(est_server, name):
    reply = http_get(est_server, f"/ca/{name}.crt")
    assert reply.status == 404, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "CA certificate" in reply.text or "not found" in reply.text.lower()
    assert "\n" not in reply.text.rstrip("\n")


def test_wrong_method_on_ca_certificate(est_server):
    reply = http_get(est_server, "/ca/root.crt", "POST", b"x")
    assert reply.status == 405, reply.text
    assert "GET" in reply.headers["Allow"]
    assert reply.headers["Content-Type"].startswith("text/plain")


def test_nothing_else_is_served(est_server):
    for path in ("/", "/ca/", "/ca/root.der", "/admin", "/crl/"):
        reply = http_get(est_server, path)
        assert reply.status == 404, (path, reply.status, reply.text)


# URLs in issued certificates --------------------------------------------------------------------


def test_aia_ca_issuers_points_at_this_listener(est_server):
    cert = enrolled_certificate(est_server)
    issuing = issuing_of(est_server)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    assert len(urls) == 1
    port = urlsplit(est_server.http_url).port
    assert urls[0] == f"http://localhost:{port}/ca/{ski(issuing)}.crt"

    # public_host is "localhost"; the listener binds 127.0.0.1: fetch the same path there.
    fetched = assert_der_certificate(http_get(est_server, urlsplit(urls[0]).path))
    assert fetched == issuing
    cert.verify_directly_issued_by(fetched)
    fetched.verify_directly_issued_by(root_of(est_server))
    # The certificate's AKI names the key of the certificate the URL serves.
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier.hex() == ski(fetched)


def test_crl_distribution_point_points_at_this_listener(est_server):
    cert = enrolled_certificate(est_server)
    issuing = issuing_of(est_server)
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    urls = [name.value for point in points for name in point.full_name or []]
    port = urlsplit(est_server.http_url).port
    assert urls == [f"http://localhost:{port}/crl/{ski(issuing)}.crl"]

    reply = http_get(est_server, urlsplit(urls[0]).path)
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(reply.body)
    assert crl.is_signature_valid(issuing.public_key())


# EST is never served without TLS ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/.well-known/est/cacerts"),
        ("GET", "/.well-known/est/csrattrs"),
        ("GET", "/.well-known/est/iot/cacerts"),
        ("GET", "/.well-known/est/no-such-label/cacerts"),
        ("GET", "/.well-known/est"),
        ("GET", "/.well-known/est/"),
        ("GET", "/.well-known/est/%0aforged/cacerts"),
        ("POST", "/.well-known/est/simpleenroll"),
        ("POST", "/.well-known/est/iot/simplereenroll"),
        ("PUT", "/.well-known/est/serverkeygen"),
        ("HEAD", "/.well-known/est/cacerts"),
    ],
)
def test_est_over_plain_http_is_403(est_server, method, path):
    body = b"x" if method in ("POST", "PUT") else None
    reply = http_get(est_server, path, method, body, PKCS10 if body else None)
    assert reply.status == 403, (reply.status, reply.text)
    if method != "HEAD":
        assert reply.headers["Content-Type"].startswith("text/plain")
        assert "HTTPS only" in reply.text


def test_enrollment_over_plain_http_issues_nothing(est_server):
    name = f"plain-{uuid.uuid4().hex[:10]}"
    password = est_server.add_user(name)
    _, der = make_csr(name)
    headers = dict(PKCS10)
    headers["Authorization"] = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
    before = issued_count(est_server)
    reply = http_get(est_server, "/.well-known/est/simpleenroll", "POST", b64(der), headers)
    assert reply.status == 403, reply.text
    assert "HTTPS only" in reply.text
    assert issued_count(est_server) == before
    assert "Traceback" not in est_server.log()
