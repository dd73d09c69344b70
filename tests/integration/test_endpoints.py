"""Every EST endpoint's success path, byte for byte (RFC 7030, RFC 8951), and routing errors."""

from __future__ import annotations

import base64
import random
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc5652, rfc7030

from estkit.wire.csrattrs import CsrAttribute, decode_csrattrs, oid_value
from tests.esthttp import (
    PKCS10,
    Reply,
    b64,
    connect,
    enroll_basic,
    make_csr,
    request,
    tls_context,
    write_pair,
)

CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"

OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SECP256R1 = "1.2.840.10045.3.1.7"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
OID_SUBJECT_ALT_NAME = "2.5.29.17"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"


# Helpers ----------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def issued_count(server) -> int:
    store = server.store()
    try:
        return len(store.certificates())
    finally:
        store.close()


def strict_b64decode(body: bytes) -> bytes:
    """Decode a base64 response body: only the alphabet and line breaks are allowed."""
    compact = b"".join(body.split(b"\n"))
    return base64.b64decode(compact, validate=True)


def split_chain(certs: list[x509.Certificate]) -> tuple[x509.Certificate, x509.Certificate]:
    """(issuing, root) of a two-certificate cacerts answer, in whatever order DER's SET put them."""
    assert len(certs) == 2
    roots = [c for c in certs if c.subject == c.issuer]
    assert len(roots) == 1, "exactly one self-signed root expected"
    [root] = roots
    [issuing] = [c for c in certs if c is not root]
    return issuing, root


def ca_chain(server) -> tuple[x509.Certificate, x509.Certificate]:
    """(issuing, root) as the server's cacerts returns them."""
    reply = request(server.est_url() + "/cacerts", server.ca_file)
    assert reply.status == 200, reply.text
    return split_chain(reply.certificates())


def assert_certs_only(der: bytes, count: int) -> None:
    """A DER ContentInfo holding a degenerate SignedData: certificates and nothing else."""
    info, rest = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    assert rest == b""
    assert info["contentType"] == rfc5652.id_signedData
    signed, rest = decoder.decode(info["content"], asn1Spec=rfc5652.SignedData())
    assert rest == b""
    assert signed["encapContentInfo"]["eContentType"] == rfc5652.id_data
    assert not signed["encapContentInfo"]["eContent"].isValue
    assert len(signed["signerInfos"]) == 0
    assert len(signed["digestAlgorithms"]) == 0
    assert not signed["crls"].isValue or len(signed["crls"]) == 0
    assert len(signed["certificates"]) == count


def wrap(text: bytes, width: int, eol: bytes, final_eol: bool = True) -> bytes:
    lines = [text[i : i + width] for i in range(0, len(text), width)]
    return eol.join(lines) + (eol if final_eol else b"")


def sprinkle_whitespace(text: bytes, seed: int) -> bytes:
    """Insert spaces, tabs, CR and LF (mixed) at random places, including both ends."""
    rng = random.Random(seed)
    out = bytearray(b" \t\r\n")
    for byte in text:
        out.append(byte)
        if rng.random() < 0.3:
            out += bytes(rng.choice(b" \t\r\n") for _ in range(rng.randint(1, 3)))
    out += b"\r\n\t "
    return bytes(out)


def assert_single_issued(
    reply: Reply, server, cn: str, public_key, before: int
) -> x509.Certificate:
    """The success answer of simpleenroll/simplereenroll, checked header by header."""
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == CERTS_ONLY
    assert reply.headers["Content-Transfer-Encoding"] == "base64"
    assert reply.headers.get("Transfer-Encoding") is None
    assert reply.headers["Content-Length"] == str(len(reply.body))
    assert_certs_only(strict_b64decode(reply.body), 1)
    certs = reply.certificates()
    assert len(certs) == 1, "the response must hold only the issued certificate"
    [cert] = certs
    issuing, _root = ca_chain(server)
    cert.verify_directly_issued_by(issuing)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == public_key.public_bytes(serialization.Encoding.DER, spki)
    assert issued_count(server) == before + 1
    serials = {record.serial for record in _records(server)}
    assert format(cert.serial_number, "x") in serials
    return cert


def _records(server):
    store = server.store()
    try:
        return store.certificates()
    finally:
        store.close()


class Enrollment:
    """What one simpleenroll or simplereenroll request needs: URL, credentials, a CSR."""

    def __init__(self, server, operation: str, tmp_path) -> None:
        self.server = server
        self.operation = operation
        self.url = server.est_url() + "/" + operation
        self.cn = unique(operation)
        self.auth: dict[str, object] = {}
        user, password = server.shared_user()
        if operation == "simpleenroll":
            self.auth = {"user": user, "password": password}
        else:
            # Enroll first, then renew over mutual TLS with the certificate just issued.
            old_key, der = make_csr(self.cn)
            reply = enroll_basic(server, der, None, user, password)
            assert reply.status == 200, reply.text
            [cert] = reply.certificates()
            cert_path, key_path = write_pair(tmp_path, self.cn, old_key, cert)
            self.auth = {"cert": cert_path, "key": key_path}
        self.key, self.csr_der = make_csr(self.cn)

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> Reply:
        return request(
            self.url,
            self.server.ca_file,
            "POST",
            body,
            PKCS10 if headers is None else headers,
            **self.auth,
        )

    def post_chunked(self, chunks: list[bytes], headers: dict[str, str]) -> Reply:
        """Send the body with Transfer-Encoding: chunked, each element one chunk."""
        auth = self.auth
        context = tls_context(self.server.ca_file, auth.get("cert"), auth.get("key"))
        connection = connect(self.url, context)
        try:
            path = "/" + self.url.split("://", 1)[1].split("/", 1)[1]
            connection.putrequest("POST", path)
            for name, value in headers.items():
                connection.putheader(name, value)
            if "user" in auth:
                token = base64.b64encode(f"{auth['user']}:{auth['password']}".encode()).decode()
                connection.putheader("Authorization", f"Basic {token}")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for chunk in chunks:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()


@pytest.fixture(params=["simpleenroll", "simplereenroll"])
def enrollment(request, est_server, tmp_path) -> Enrollment:
    return Enrollment(est_server, request.param, tmp_path)


# cacerts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [None, "iot", "server", "pop", "rsa"])
def test_cacerts_returns_issuing_ca_and_root(est_server, label):
    reply = request(est_server.est_url(label) + "/cacerts", est_server.ca_file)
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "application/pkcs7-mime"
    assert reply.headers["Content-Transfer-Encoding"] == "base64"
    assert reply.headers["Content-Length"] == str(len(reply.body))
    der = strict_b64decode(reply.body)
    assert_certs_only(der, 2)
    issuing, root = split_chain(reply.certificates())
    anchor = x509.load_pem_x509_certificate(est_server.ca_file.read_bytes())
    assert root == anchor
    issuing.verify_directly_issued_by(root)
    assert issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issuing != root


def test_cacerts_needs_no_authentication_and_ignores_credentials(est_server):
    reply = request(
        est_server.est_url() + "/cacerts", est_server.ca_file, user="nobody", password="wrong"
    )
    assert reply.status == 200, reply.text
    assert len(reply.certificates()) == 2


def test_cacerts_same_for_every_label(est_server):
    bodies = {
        label: request(est_server.est_url(label) + "/cacerts", est_server.ca_file).body
        for label in (None, "iot", "rsa")
    }
    assert len(set(bodies.values())) == 1


# simpleenroll / simplereenroll --------------------------------------------------------------


BODY_LAYOUTS = {
    "one-line": lambda text: text,
    "one-line-trailing-lf": lambda text: text + b"\n",
    "lf-64": lambda text: wrap(text, 64, b"\n"),
    "crlf-64": lambda text: wrap(text, 64, b"\r\n"),
    "lf-76": lambda text: wrap(text, 76, b"\n"),
    "crlf-76": lambda text: wrap(text, 76, b"\r\n"),
    "crlf-76-no-final-eol": lambda text: wrap(text, 76, b"\r\n", final_eol=False),
    "whitespace-anywhere": lambda text: sprinkle_whitespace(text, 7),
    "whitespace-anywhere-2": lambda text: sprinkle_whitespace(text, 99),
}


@pytest.mark.parametrize("layout", sorted(BODY_LAYOUTS))
def test_enroll_body_layouts(enrollment, layout):
    body = BODY_LAYOUTS[layout](b64(enrollment.csr_der))
    before = issued_count(enrollment.server)
    reply = enrollment.post(body)
    assert_single_issued(
        reply, enrollment.server, enrollment.cn, enrollment.key.public_key(), before
    )


@pytest.mark.parametrize("cte", [None, "base64", "binary", "7bit", "BASE64", "quoted-printable"])
def test_enroll_content_transfer_encoding_is_ignored(enrollment, cte):
    headers = dict(PKCS10)
    if cte is not None:
        headers["Content-Transfer-Encoding"] = cte
    before = issued_count(enrollment.server)
    reply = enrollment.post(wrap(b64(enrollment.csr_der), 64, b"\n"), headers)
    assert_single_issued(
        reply, enrollment.server, enrollment.cn, enrollment.key.public_key(), before
    )


@pytest.mark.parametrize("split", ["one-chunk", "small-chunks", "byte-chunks"])
def test_enroll_chunked_request_body(enrollment, split):
    body = wrap(b64(enrollment.csr_der), 64, b"\r\n")
    size = {"one-chunk": len(body), "small-chunks": 7, "byte-chunks": 1}[split]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    before = issued_count(enrollment.server)
    reply = enrollment.post_chunked(chunks, dict(PKCS10))
    assert_single_issued(
        reply, enrollment.server, enrollment.cn, enrollment.key.public_key(), before
    )


def test_enroll_content_type_parameters_and_case_accepted(enrollment):
    headers = {"Content-Type": "Application/PKCS10; name=csr.p10"}
    before = issued_count(enrollment.server)
    reply = enrollment.post(b64(enrollment.csr_der), headers)
    assert_single_issued(
        reply, enrollment.server, enrollment.cn, enrollment.key.public_key(), before
    )


def test_enroll_response_body_is_strict_base64_lines(est_server):
    user, password = est_server.shared_user()
    _, der = make_csr(unique("lines"))
    reply = enroll_basic(est_server, der, None, user, password)
    assert reply.status == 200, reply.text
    lines = reply.body.split(b"\n")
    assert lines[-1] == b""  # LF-terminated
    assert all(0 < len(line) <= 76 for line in lines[:-1])
    assert b"\r" not in reply.body
    assert strict_b64decode(reply.body)


def test_enroll_on_label_issues_with_label_profile(est_server):
    user = unique("dev")
    password = est_server.add_user(user)
    key, der = make_csr(user)  # iot: CN must equal the user, EC P-256
    before = issued_count(est_server)
    reply = enroll_basic(est_server, der, "iot", user, password)
    cert = assert_single_issued(reply, est_server, user, key.public_key(), before)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days <= 31
    [record] = [r for r in _records(est_server) if r.serial == format(cert.serial_number, "x")]
    assert record.label == "iot"


def test_reenroll_records_renewal(est_server, tmp_path):
    enrollment = Enrollment(est_server, "simplereenroll", tmp_path)
    before = issued_count(est_server)
    reply = enrollment.post(b64(enrollment.csr_der))
    cert = assert_single_issued(
        reply, est_server, enrollment.cn, enrollment.key.public_key(), before
    )
    [record] = [r for r in _records(est_server) if r.serial == format(cert.serial_number, "x")]
    assert record.kind == "rekey"
    assert record.replaces_serial is not None


@pytest.mark.parametrize(("operation", "label"), [("cacerts", None), ("csrattrs", "iot")])
def test_head_is_get_without_body(est_server, operation, label):
    url = est_server.est_url(label) + "/" + operation
    got = request(url, est_server.ca_file)
    head = request(url, est_server.ca_file, "HEAD")
    assert got.status == head.status == 200
    assert head.body == b""
    for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Length"):
        assert head.headers[name] == got.headers[name]


# csrattrs ---------------------------------------------------------------------------------------


def csrattrs_of(server, label: str | None):
    reply = request(server.est_url(label) + "/csrattrs", server.ca_file)
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "application/csrattrs"
    assert reply.headers["Content-Transfer-Encoding"] == "base64"
    assert reply.headers["Content-Length"] == str(len(reply.body))
    der = strict_b64decode(reply.body)
    parsed, rest = decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    assert rest == b"", "CsrAttrs must not be followed by trailing bytes"
    assert len(parsed) > 0
    return decode_csrattrs(der)


def test_csrattrs_default_label_asks_nothing(est_server):
    reply = request(est_server.est_url() + "/csrattrs", est_server.ca_file)
    assert reply.status == 204, reply.text
    assert reply.body == b""
    assert reply.headers.get("Content-Length") in (None, "0")
    assert reply.headers.get("Content-Transfer-Encoding") is None


def test_csrattrs_iot_asks_for_p256_and_ecdsa_sha256(est_server):
    items = csrattrs_of(est_server, "iot")
    assert CsrAttribute(OID_EC_PUBLIC_KEY, (oid_value(OID_SECP256R1),)) in items
    assert OID_ECDSA_SHA256 in items
    assert OID_CHALLENGE_PASSWORD not in items


def test_csrattrs_pop_asks_for_challenge_password(est_server):
    items = csrattrs_of(est_server, "pop")
    assert OID_CHALLENGE_PASSWORD in items


def test_csrattrs_server_asks_for_subject_alt_name(est_server):
    items = csrattrs_of(est_server, "server")
    requests = [i for i in items if isinstance(i, CsrAttribute) and i.oid == OID_EXTENSION_REQUEST]
    assert requests == [CsrAttribute(OID_EXTENSION_REQUEST, (oid_value(OID_SUBJECT_ALT_NAME),))]


def test_csrattrs_rsa_asks_for_rsa_keys(est_server):
    items = csrattrs_of(est_server, "rsa")
    assert OID_RSA_ENCRYPTION in items or any(
        isinstance(i, CsrAttribute) and i.oid == OID_RSA_ENCRYPTION for i in items
    )
    assert OID_EC_PUBLIC_KEY not in items


def test_csrattrs_needs_no_authentication(est_server):
    reply = request(
        est_server.est_url("iot") + "/csrattrs", est_server.ca_file, user="x", password="y"
    )
    assert reply.status == 200, reply.text


# Routing errors ---------------------------------------------------------------------------------


def assert_plain_error(reply: Reply, status: int, *words: str) -> str:
    assert reply.status == status, (reply.status, reply.text)
    assert reply.headers["Content-Type"].startswith("text/plain")
    text = reply.text
    for word in words:
        assert word.lower() in text.lower(), (word, text)
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("operation", ["cacerts", "csrattrs", "simpleenroll"])
def test_unknown_label_is_404(est_server, operation):
    method = "POST" if operation == "simpleenroll" else "GET"
    before = issued_count(est_server)
    reply = request(
        est_server.est_url("no-such-label") + "/" + operation,
        est_server.ca_file,
        method,
        b"" if method == "POST" else None,
        PKCS10 if method == "POST" else None,
    )
    assert_plain_error(reply, 404, "no-such-label")
    assert issued_count(est_server) == before


@pytest.mark.parametrize("label", [None, "iot"])
@pytest.mark.parametrize("operation", ["frobnicate", "CACERTS", "cacerts.p7"])
def test_unknown_operation_is_404(est_server, label, operation):
    reply = request(est_server.est_url(label) + "/" + operation, est_server.ca_file)
    assert_plain_error(reply, 404, operation)


@pytest.mark.parametrize(
    "path",
    ["/.well-known/est/", "/.well-known/est/a/b/cacerts", "/.well-known/est//cacerts"],
)
def test_no_resource_is_404(est_server, path):
    reply = request(est_server.url + path, est_server.ca_file)
    assert_plain_error(reply, 404)


@pytest.mark.parametrize(
    ("operation", "method", "allowed"),
    [
        ("cacerts", "POST", "GET, HEAD"),
        ("cacerts", "PUT", "GET, HEAD"),
        ("cacerts", "DELETE", "GET, HEAD"),
        ("csrattrs", "POST", "GET, HEAD"),
        ("simpleenroll", "GET", "POST"),
        ("simpleenroll", "PUT", "POST"),
        ("simpleenroll", "HEAD", "POST"),
        ("simplereenroll", "GET", "POST"),
        ("serverkeygen", "GET", "POST"),
        ("fullcmc", "GET", "POST"),
    ],
)
@pytest.mark.parametrize("label", [None, "iot"])
def test_wrong_method_is_405_with_allow(est_server, operation, method, allowed, label):
    before = issued_count(est_server)
    reply = request(
        est_server.est_url(label) + "/" + operation,
        est_server.ca_file,
        method,
        b"" if method in ("POST", "PUT") else None,
    )
    if method != "HEAD":
        assert_plain_error(reply, 405, operation, method)
    assert reply.status == 405
    assert reply.headers["Allow"] == allowed
    assert issued_count(est_server) == before


def test_connection_reused_after_errors(est_server):
    """Keep-alive: an error answer does not poison the connection for the next request."""
    connection = connect(est_server.url, tls_context(est_server.ca_file))
    try:
        from tests.esthttp import send

        first = send(connection, est_server.est_url() + "/frobnicate")
        assert first.status == 404
        second = send(connection, est_server.est_url() + "/cacerts", "POST", b"x")
        assert second.status == 405
        third = send(connection, est_server.est_url() + "/cacerts")
        assert third.status == 200
        assert len(third.certificates()) == 2
    finally:
        connection.close()
