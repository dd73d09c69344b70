"""The OCSP responder on the plain-HTTP listener (RFC 6960), checked with `openssl ocsp`."""

from __future__ import annotations

import base64
import http.client
import os
import re
import stat
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
)

from estkit.authority.keys import load_private_key
from estkit.config import ConfigError, load_config
from tests.esthttp import Reply, enroll_basic, issued, make_csr
from tests.estserver import init_instance, run_estkit, start_server

OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}

# Helpers ----------------------------------------------------------------------------------------


def fetch(server, path: str, method: str = "GET", body: bytes | None = None, headers=None) -> Reply:
    parts = urlsplit(server.http_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def ocsp_reply(reply: Reply) -> ocsp.OCSPResponse:
    assert reply.status == 200, (reply.status, reply.text)
    assert reply.headers["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(reply.body)


def post(server, der: bytes, headers=OCSP_REQUEST) -> ocsp.OCSPResponse:
    return ocsp_reply(fetch(server, "/ocsp", "POST", der, headers))


def issuing_pem(server) -> Path:
    return server.data_dir / "ca" / "issuing.pem"


def issuing_cert(server) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issuing_pem(server).read_bytes())


def responder_pem(server) -> Path:
    return server.data_dir / "ca" / "ocsp-responder.pem"


def enroll(server) -> x509.Certificate:
    user, password = server.shared_user()
    _, der = make_csr(f"ocsp-{uuid.uuid4().hex[:8]}")
    return issued(enroll_basic(server, der, None, user, password))


def write_pem(tmp_path: Path, cert: x509.Certificate, name: str = "leaf.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def revoke(server, cert: x509.Certificate, reason: str, at: datetime) -> None:
    store = server.store()
    try:
        store.revoke_certificate(format(cert.serial_number, "x"), reason, at)
    finally:
        store.close()


def openssl_ocsp(server, *args: str, issuer: Path | None = None) -> subprocess.CompletedProcess:
    """`openssl ocsp` against the instance; the response is verified against the root only."""
    command = [
        "openssl",
        "ocsp",
        "-issuer",
        str(issuer or issuing_pem(server)),
        *args,
        "-url",
        f"{server.http_url}/ocsp",
        "-CAfile",
        str(server.ca_file),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def request_der(*certs: tuple[x509.Certificate, x509.Certificate], nonce: bytes | None = None):
    """A one-CertID request built by cryptography (which builds no more than one)."""
    [(cert, issuer)] = certs
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def self_signed_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def assert_no_traceback(server) -> None:
    """No OCSP request ended in a bug (the shared server's log also holds other tests')."""
    log = server.log()
    assert "OCSP request failed" not in log  # what an unexpected exception is logged as
    assert not [line for line in log.splitlines() if "/ocsp" in line and "status=500" in line]


# Status with openssl ----------------------------------------------------------------------------


def test_good_status_verified_by_openssl_with_nonce(est_server, tmp_path):
    leaf = write_pem(tmp_path, enroll(est_server))
    result = openssl_ocsp(
        est_server,
        "-cert",
        str(leaf),
        "-reqout",
        str(tmp_path / "req.der"),
        "-respout",
        str(tmp_path / "resp.der"),
    )
    text = output(result)
    assert result.returncode == 0, text
    assert "Response verify OK" in text
    assert f"{leaf}: good" in text
    assert "WARNING" not in text  # openssl warns when the nonce is missing or differs
    sent = ocsp.load_der_ocsp_request((tmp_path / "req.der").read_bytes())
    answer = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    sent_nonce = sent.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == sent_nonce
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.hash_algorithm.name == "sha1"


def test_revoked_status_carries_time_and_reason(est_server, tmp_path):
    cert = enroll(est_server)
    revoked_at = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    revoke(est_server, cert, "keyCompromise", revoked_at)
    leaf = write_pem(tmp_path, cert)
    result = openssl_ocsp(est_server, "-cert", str(leaf), "-respout", str(tmp_path / "resp.der"))
    text = output(result)
    assert "Response verify OK" in text, text
    assert f"{leaf}: revoked" in text
    assert "Reason: keyCompromise" in text
    assert f"Revocation Time: {revoked_at:%b %e %H:%M:%S %Y} GMT" in text
    answer = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_time_utc == revoked_at
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise


def test_revoked_unspecified_sends_no_reason(est_server):
    cert = enroll(est_server)
    revoke(est_server, cert, "unspecified", datetime.now(UTC))
    answer = post(est_server, request_der((cert, issuing_cert(est_server))))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is None


def test_revocation_shows_at_once_even_after_a_cached_good_answer(est_server):
    cert = enroll(est_server)
    der = request_der((cert, issuing_cert(est_server)))
    first, second = post(est_server, der), post(est_server, der)
    assert first.certificate_status == ocsp.OCSPCertStatus.GOOD
    # Without a nonce the signed response is reused while it has most of its life left.
    assert first.public_bytes(serialization.Encoding.DER) == second.public_bytes(
        serialization.Encoding.DER
    )
    revoke(est_server, cert, "superseded", datetime.now(UTC))
    third = post(est_server, der)
    assert third.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert third.revocation_reason == x509.ReasonFlags.superseded


def test_unknown_serial(est_server):
    serial = int.from_bytes(os.urandom(16), "big") | 1
    result = openssl_ocsp(est_server, "-serial", hex(serial))
    text = output(result)
    assert "Response verify OK" in text, text
    assert f"{hex(serial)}: unknown" in text


def test_sha256_cert_id(est_server, tmp_path):
    leaf = write_pem(tmp_path, enroll(est_server))
    result = openssl_ocsp(
        est_server, "-sha256", "-cert", str(leaf), "-respout", str(tmp_path / "resp.der")
    )
    text = output(result)
    assert "Response verify OK" in text, text
    assert f"{leaf}: good" in text
    answer = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    assert answer.hash_algorithm.name == "sha256"
    issuing = issuing_cert(est_server)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(issuing.subject.public_bytes())
    assert answer.issuer_name_hash == digest.finalize()


def test_no_nonce(est_server, tmp_path):
    leaf = write_pem(tmp_path, enroll(est_server))
    result = openssl_ocsp(
        est_server, "-no_nonce", "-cert", str(leaf), "-respout", str(tmp_path / "resp.der")
    )
    text = output(result)
    assert "Response verify OK" in text, text
    assert f"{leaf}: good" in text
    answer = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    with pytest.raises(x509.ExtensionNotFound):
        answer.extensions.get_extension_for_class(x509.OCSPNonce)


def test_several_certificates_in_one_request(est_server, tmp_path):
    good, revoked = enroll(est_server), enroll(est_server)
    revoke(est_server, revoked, "cessationOfOperation", datetime.now(UTC))
    unknown = int.from_bytes(os.urandom(16), "big") | 1
    good_pem, revoked_pem = (
        write_pem(tmp_path, good, "a.pem"),
        write_pem(tmp_path, revoked, "b.pem"),
    )
    result = openssl_ocsp(
        est_server,
        "-cert",
        str(good_pem),
        "-serial",
        hex(unknown),
        "-cert",
        str(revoked_pem),
        "-respout",
        str(tmp_path / "resp.der"),
    )
    text = output(result)
    assert "Response verify OK" in text, text
    assert f"{good_pem}: good" in text
    assert f"{hex(unknown)}: unknown" in text
    assert f"{revoked_pem}: revoked" in text
    answer = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    singles = list(answer.responses)
    assert [s.serial_number for s in singles] == [
        good.serial_number,
        unknown,
        revoked.serial_number,
    ]
    assert [s.certificate_status for s in singles] == [
        ocsp.OCSPCertStatus.GOOD,
        ocsp.OCSPCertStatus.UNKNOWN,
        ocsp.OCSPCertStatus.REVOKED,
    ]
    assert singles[2].revocation_reason == x509.ReasonFlags.cessation_of_operation


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-2048", "ed25519"])
def test_other_ca_key_types(est_server_factory, tmp_path, key_type):
    server = est_server_factory("", "--key-type", key_type)
    leaf = write_pem(tmp_path, enroll(server))
    result = openssl_ocsp(server, "-cert", str(leaf))
    assert "Response verify OK" in output(result), output(result)
    assert f"{leaf}: good" in output(result)


# The delegated responder certificate ------------------------------------------------------------


def test_responder_certificate_is_a_delegate_of_the_issuing_ca(est_server, tmp_path):
    cert = enroll(est_server)
    answer = post(est_server, request_der((cert, issuing_cert(est_server))))
    [responder] = answer.certificates
    assert responder == x509.load_pem_x509_certificate(responder_pem(est_server).read_bytes())
    responder.verify_directly_issued_by(issuing_cert(est_server))
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    basic = responder.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    lifetime = responder.not_valid_after_utc - responder.not_valid_before_utc
    assert timedelta(days=30) <= lifetime <= timedelta(days=30, minutes=6)
    # ResponderID byKey is the SHA-1 of the responder's key, here equal to its SKI.
    ski = responder.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert answer.responder_key_hash == ski.digest
    assert answer.responder_name is None
    # thisUpdate/nextUpdate: one hour by default; producedAt is now.
    assert answer.next_update_utc - answer.this_update_utc == timedelta(hours=1)
    assert abs(answer.produced_at_utc - datetime.now(UTC)) < timedelta(minutes=1)
    assert answer.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.2"


def test_responder_key_file_is_private_and_recorded(est_server):
    key_path = est_server.data_dir / "ca" / "ocsp-responder.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    responder = x509.load_pem_x509_certificate(responder_pem(est_server).read_bytes())
    assert load_private_key(key_path).public_key() == responder.public_key()
    store = est_server.store()
    try:
        record = store.certificate(format(responder.serial_number, "x"))
        events = [e for e in store.audit_events() if e.action == "certificate.ocsp-responder"]
    finally:
        store.close()
    assert record is not None and record.kind == "ocsp-responder"
    assert events[0].subject == record.serial
    assert events[0].detail["reason"] == "first start"


def test_responder_certificate_renewed_when_near_expiry(est_server_factory, tmp_path):
    server = est_server_factory('[ocsp]\nresponder_validity = "6s"\nresponse_validity = "1h"\n')
    leaf = enroll(server)
    der = request_der((leaf, issuing_cert(server)))
    [first] = post(server, der).certificates
    assert first.not_valid_after_utc - datetime.now(UTC) <= timedelta(seconds=6)
    first_key = (server.data_dir / "ca" / "ocsp-responder.key").read_bytes()
    # Renewed once less than a third (2 s) is left, by the periodic check (every second).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = post(server, der)
        [current] = answer.certificates
        if current.serial_number != first.serial_number:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the responder certificate was not renewed")
    assert current.not_valid_after_utc > first.not_valid_after_utc
    assert current.public_key() != first.public_key()  # a new key with every certificate
    # nextUpdate never outlives the responder certificate.
    assert answer.next_update_utc <= current.not_valid_after_utc
    key_path = server.data_dir / "ca" / "ocsp-responder.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes() != first_key
    leaf_pem = write_pem(tmp_path, leaf)
    result = openssl_ocsp(server, "-cert", str(leaf_pem))
    assert "Response verify OK" in output(result), output(result)
    assert not list((server.data_dir / "ca").glob("*.new"))
    store = server.store()
    try:
        reasons = [
            e.detail["reason"]
            for e in store.audit_events()
            if e.action == "certificate.ocsp-responder"
        ]
    finally:
        store.close()
    assert reasons[0] == "first start"
    assert "renewal" in reasons[1:]


def test_restart_keeps_a_sound_responder_and_renews_a_due_one(est_server_factory):
    server = est_server_factory()
    first = x509.load_pem_x509_certificate(responder_pem(server).read_bytes())
    server.stop()
    again = start_server(server.data_dir)
    try:
        assert x509.load_pem_x509_certificate(responder_pem(server).read_bytes()) == first
    finally:
        again.stop()
    # A shorter responder_validity makes the current certificate due at start.
    config = server.data_dir / "estkit.toml"
    config.write_text(config.read_text() + '\n[ocsp]\nresponder_validity = "1d"\n')
    again = start_server(server.data_dir)
    try:
        renewed = x509.load_pem_x509_certificate(responder_pem(server).read_bytes())
        assert renewed.serial_number != first.serial_number
        assert renewed.not_valid_after_utc - datetime.now(UTC) <= timedelta(days=1)
        der = (
            ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(*_issuer_hashes(issuing_cert(again)), 7, hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        assert post(again, der).certificates == [renewed]
    finally:
        again.stop()


def test_responder_key_readable_by_others_stops_the_start(est_server_factory):
    server = est_server_factory()
    server.stop()
    key_path = server.data_dir / "ca" / "ocsp-responder.key"
    key_path.chmod(0o644)
    result = run_estkit("serve", "--dir", str(server.data_dir), "--port", "0", check=False)
    assert result.returncode == 1
    assert "ocsp-responder.key" in result.stderr
    assert "0600" in result.stderr


# GET requests (RFC 6960 Appendix A.1) ----------------------------------------------------------


def _get_paths(der: bytes) -> list[str]:
    encoded = base64.b64encode(der).decode()
    return [
        "/ocsp/" + quote(encoded, safe=""),  # '+', '/' and '=' percent-encoded
        "/ocsp/" + encoded,  # as many clients send it
        "/ocsp//" + quote(encoded, safe=""),  # a responder URL that ended in '/'
        "/ocsp/" + encoded.rstrip("="),  # without padding
    ]


def test_get_requests(est_server, tmp_path):
    cert = enroll(est_server)
    leaf = write_pem(tmp_path, cert)
    made = openssl_ocsp(est_server, "-no_nonce", "-cert", str(leaf), "-reqout", str(tmp_path / "r"))
    assert made.returncode == 0, output(made)
    der = (tmp_path / "r").read_bytes()
    for path in _get_paths(der):
        reply = fetch(est_server, path)
        answer = ocsp_reply(reply)
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, path
        assert answer.serial_number == cert.serial_number
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        # RFC 5019 §6.2: HTTP caches may keep it until nextUpdate, no longer.
        max_age = int(re.search(r"max-age=(\d+)", reply.headers["Cache-Control"]).group(1))
        assert 0 < max_age <= 3600
        assert "Expires" in reply.headers and "Last-Modified" in reply.headers


def test_get_request_whose_base64_has_plus_and_slash(est_server):
    issuing = issuing_cert(est_server)
    for _attempt in range(200):
        serial = int.from_bytes(os.urandom(16), "big") | 1
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            *_issuer_hashes(issuing), serial, hashes.SHA1()
        )
        der = builder.build().public_bytes(serialization.Encoding.DER)
        encoded = base64.b64encode(der).decode()
        if "+" in encoded and "/" in encoded:
            break
    else:
        pytest.fail("no request with '+' and '/' in its base64 after 200 tries")
    for path in ("/ocsp/" + encoded, "/ocsp/" + quote(encoded, safe="")):
        answer = ocsp_reply(fetch(est_server, path))
        assert answer.serial_number == serial
        assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def _issuer_hashes(issuing: x509.Certificate) -> tuple[bytes, bytes]:
    name = hashes.Hash(hashes.SHA1())
    name.update(issuing.subject.public_bytes())
    ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return name.finalize(), ski  # the SKI here is the SHA-1 of the key (RFC 5280 method 1)


def test_get_with_nonce_is_not_marked_cacheable(est_server):
    cert = enroll(est_server)
    der = request_der((cert, issuing_cert(est_server)), nonce=os.urandom(32))
    reply = fetch(est_server, "/ocsp/" + quote(base64.b64encode(der).decode(), safe=""))
    answer = ocsp_reply(reply)
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    assert "Cache-Control" not in reply.headers


def test_head_of_get(est_server):
    cert = enroll(est_server)
    der = request_der((cert, issuing_cert(est_server)))
    reply = fetch(est_server, "/ocsp/" + quote(base64.b64encode(der).decode(), safe=""), "HEAD")
    assert reply.status == 200
    assert reply.body == b""


# Refusals ---------------------------------------------------------------------------------------


def assert_refused(answer: ocsp.OCSPResponse, status: ocsp.OCSPResponseStatus) -> None:
    assert answer.response_status == status
    with pytest.raises(ValueError):
        answer.certificates  # noqa: B018 - an unsuccessful response carries nothing else


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"garbage", OCSP_REQUEST),
        (b"", OCSP_REQUEST),
        (b"\x30\x03\x02\x01\x01", OCSP_REQUEST),  # DER, but not an OCSPRequest
        (b"\x30\x80\x00\x00", OCSP_REQUEST),
        (b"\xff" * 70, OCSP_REQUEST),
    ],
    ids=["garbage", "empty", "not-ocsp", "indefinite", "junk"],
)
def test_malformed_post_bodies(est_server, body, headers):
    assert_refused(post(est_server, body, headers), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    assert_no_traceback(est_server)


def test_valid_request_with_wrong_or_missing_content_type(est_server):
    cert = enroll(est_server)
    der = request_der((cert, issuing_cert(est_server)))
    for headers in (
        {"Content-Type": "application/octet-stream"},
        {"Content-Type": "text/plain"},
        {},
    ):
        answer = post(est_server, der, headers)
        assert_refused(answer, ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    assert post(est_server, der).response_status == ocsp.OCSPResponseStatus.SUCCESSFUL


def test_trailing_bytes_after_the_request(est_server):
    cert = enroll(est_server)
    der = request_der((cert, issuing_cert(est_server))) + b"\x00"
    assert_refused(post(est_server, der), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


@pytest.mark.parametrize(
    "path", ["/ocsp/", "/ocsp/!!!!", "/ocsp/%ZZ", "/ocsp/bm90IGEgcmVxdWVzdA==", "/ocsp/%0aforged"]
)
def test_malformed_get_requests(est_server, path):
    assert_refused(ocsp_reply(fetch(est_server, path)), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    assert not any(line.startswith("forged") for line in est_server.log().splitlines())
    assert_no_traceback(est_server)


def test_nonce_lengths(est_server):
    cert = enroll(est_server)
    issuing = issuing_cert(est_server)
    for good in (1, 16, 32, 128):
        answer = post(est_server, request_der((cert, issuing), nonce=os.urandom(good)))
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, good
        assert len(answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce) == good
    # RFC 9654 §2.1: an empty or over-128-octet nonce is refused with malformedRequest.
    for bad in (0, 129):
        answer = post(est_server, request_der((cert, issuing), nonce=os.urandom(bad)))
        assert_refused(answer, ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


def test_unknown_critical_extension_is_refused(est_server):
    cert = enroll(est_server)
    builder = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuing_cert(est_server), hashes.SHA1())
        .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True)
    )
    der = builder.build().public_bytes(serialization.Encoding.DER)
    assert_refused(post(est_server, der), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    # The same extension marked non-critical is ignored (RFC 6960 §4.4).
    builder = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuing_cert(est_server), hashes.SHA1())
        .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.2.3.4"), b"\x05\x00"), False)
    )
    der = builder.build().public_bytes(serialization.Encoding.DER)
    assert post(est_server, der).certificate_status == ocsp.OCSPCertStatus.GOOD


def test_cert_id_for_another_issuer_is_unauthorized(est_server, tmp_path):
    # The root issued the issuing CA; the delegate speaks for the issuing CA only.
    result = openssl_ocsp(
        est_server, "-cert", str(issuing_pem(est_server)), issuer=est_server.ca_file
    )
    assert "Responder Error: unauthorized (6)" in output(result), output(result)
    # A CA this server has never heard of.
    other, other_key = self_signed_ca("Someone Else's CA")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")]))
        .issuer_name(other.subject)
        .public_key(leaf_key.public_key())
        .serial_number(enroll(est_server).serial_number)  # a serial this server did issue
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(other_key, hashes.SHA256())
    )
    assert_refused(
        post(est_server, request_der((leaf, other))), ocsp.OCSPResponseStatus.UNAUTHORIZED
    )


def test_unsupported_cert_id_hash_is_unauthorized(est_server):
    cert = enroll(est_server)
    der = request_der((cert, issuing_cert(est_server)))
    sha1 = bytes.fromhex("06052b0e03021a")  # OID 1.3.14.3.2.26, SHA-1
    other = bytes.fromhex("06052b0e03021d")  # OID 1.3.14.3.2.29, not a hash algorithm
    assert der.count(sha1) == 1
    assert_refused(post(est_server, der.replace(sha1, other)), ocsp.OCSPResponseStatus.UNAUTHORIZED)


def test_http_level_refusals(est_server):
    reply = fetch(est_server, "/ocsp", "PUT", b"x", OCSP_REQUEST)
    assert reply.status == 405 and "POST" in reply.headers["Allow"]
    reply = fetch(est_server, "/ocsp", "GET")
    assert reply.status == 405
    reply = fetch(est_server, "/ocsp", "POST", b"\x30" * (64 * 1024 + 1), OCSP_REQUEST)
    assert reply.status == 413, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert_no_traceback(est_server)


# URLs in issued certificates --------------------------------------------------------------------


def test_issued_certificates_name_the_responder(est_server):
    cert = enroll(est_server)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    port = urlsplit(est_server.http_url).port
    assert urls == [f"http://localhost:{port}/ocsp"]
    answer = post(est_server, request_der((cert, issuing_cert(est_server))))
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD


# Settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('responder_validity = "soon"', "ocsp.responder_validity"),
        ("response_validity = 3600", "ocsp.response_validity"),
        ('cache = "yes"', "ocsp.cache"),
    ],
)
def test_bad_ocsp_settings_are_refused(tmp_path, toml, key):
    directory = init_instance(tmp_path / "est", f"[ocsp]\n{toml}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    assert caught.value.key == key


def test_response_validity_setting(est_server_factory):
    server = est_server_factory('[ocsp]\nresponse_validity = "10m"\n')
    cert = enroll(server)
    answer = post(server, request_der((cert, issuing_cert(server))))
    assert answer.next_update_utc - answer.this_update_utc == timedelta(minutes=10)
