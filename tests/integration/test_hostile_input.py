"""Hostile and broken input: every bad request gets a 4xx naming the problem, nothing is issued,
the server never answers 500, never logs a traceback, and keeps serving."""

from __future__ import annotations

import base64
import random
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.x509.oid import NameOID

from estkit.server.tls import server_context
from tests.esthttp import (
    PKCS10,
    Reply,
    b64,
    connect,
    make_csr,
    raw_exchange,
    request,
    tls_context,
)
from tests.estserver import init_instance, start_server

# Helpers ----------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def issued_count(server) -> int:
    store = server.store()
    try:
        return len(store.certificates())
    finally:
        store.close()


def enroll(
    server,
    body: bytes,
    label: str | None = None,
    headers: dict[str, str] | None = None,
    operation: str = "simpleenroll",
    **auth,
) -> Reply:
    if not auth:
        user, password = server.shared_user()
        auth = {"user": user, "password": password}
    return request(
        server.est_url(label) + "/" + operation,
        server.ca_file,
        "POST",
        body,
        PKCS10 if headers is None else headers,
        **auth,
    )


def assert_refused(
    server, reply: Reply, status: int, *words: str, before: int | None = None
) -> str:
    """A plain-text error with this status whose reason names every word; nothing issued."""
    assert reply.status == status, (reply.status, reply.text)
    assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers["Content-Type"]
    text = reply.text
    assert text.strip(), "the error must carry a reason"
    for word in words:
        assert word.lower() in text.lower(), (word, text)
    assert "Traceback" not in text
    if before is not None:
        assert issued_count(server) == before
    return text


def refused_enrollment(
    server, der_or_body: bytes, status: int, *words: str, label=None, encode=True
) -> str:
    before = issued_count(server)
    body = b64(der_or_body) if encode else der_or_body
    reply = enroll(server, body, label)
    return assert_refused(server, reply, status, *words, before=before)


@pytest.fixture(autouse=True)
def no_traceback_in_server_log(est_server):
    """Whatever a test sent, the shared server logged no traceback and answered no 500."""
    start = len(est_server.log())
    yield
    time.sleep(0.05)  # let the server flush its log line
    new = est_server.log()[start:]
    assert "Traceback" not in new, new
    assert "status=500" not in new, new


def cacerts_works(server) -> None:
    reply = request(server.est_url() + "/cacerts", server.ca_file)
    assert reply.status == 200, reply.text
    assert len(reply.certificates()) == 2


# DER surgery ------------------------------------------------------------------------------------


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, end) of the DER value at pos."""
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        length, header = int.from_bytes(data[pos + 2 : pos + 2 + count], "big"), 2 + count
    return tag, data[pos + header : pos + header + length], pos + header + length


def children(content: bytes) -> list[bytes]:
    """The complete TLVs inside a constructed value's content."""
    out, pos = [], 0
    while pos < len(content):
        _, _, end = read_tlv(content, pos)
        out.append(content[pos:end])
        pos = end
    return out


OID_ECDSA_SHA256 = tlv(0x30, tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
OID_SHA256_RSA = tlv(0x30, tlv(0x06, bytes.fromhex("2a864886f70d01010b")) + b"\x05\x00")


def split_csr(der: bytes) -> tuple[bytes, bytes, bytes]:
    """(CertificationRequestInfo, signatureAlgorithm, signature) TLVs of a DER CSR."""
    _, content, end = read_tlv(der)
    assert end == len(der)
    cri, algorithm, signature = children(content)
    return cri, algorithm, signature


def cri_parts(cri: bytes) -> list[bytes]:
    """version, subject, subjectPKInfo, attributes of a CertificationRequestInfo."""
    _, content, _ = read_tlv(cri)
    return children(content)


def signed_csr(key: ec.EllipticCurvePrivateKey, cri: bytes, algorithm: bytes = OID_ECDSA_SHA256):
    """A CSR whose signature is valid over exactly these CRI bytes (whatever their encoding)."""
    signature = key.sign(cri, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, cri + algorithm + tlv(0x03, b"\x00" + signature))


def openssl_csr(tmp_path: Path, key_args: list[str], digest: str = "sha256") -> bytes:
    """A DER CSR made by `openssl req` (for what cryptography refuses to produce)."""
    out = tmp_path / f"{uuid.uuid4().hex}.der"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            *key_args,
            "-nodes",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-subj",
            "/CN=hostile",
            f"-{digest}",
            "-outform",
            "DER",
            "-out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.read_bytes()


def signed_with(key, subject: x509.Name, algorithm=None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


# Control: the helpers themselves produce acceptable requests -----------------------------------


def test_control_resigned_der_csr_is_accepted(est_server):
    """signed_csr() re-signs faithfully, so the BER variants below fail for their encoding."""
    key = ec.generate_private_key(ec.SECP256R1())
    _, der = make_csr(unique("control"), key=key)
    cri, _, _ = split_csr(der)
    before = issued_count(est_server)
    reply = enroll(est_server, b64(signed_csr(key, cri)))
    assert reply.status == 200, reply.text
    assert issued_count(est_server) == before + 1


# Base64 -----------------------------------------------------------------------------------------


def _csr_b64() -> bytes:
    return b64(make_csr(unique("b64"))[1])


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:40] + b"!" + t[40:], id="bang"),
        pytest.param(lambda t: t.replace(b"+", b"-").replace(b"/", b"_") + b"-_", id="urlsafe"),
        pytest.param(lambda t: t[:40] + b"." + t[40:], id="dot"),
        pytest.param(lambda t: t[:40] + b"\x00" + t[40:], id="nul"),
        pytest.param(lambda t: t[:40] + b"\xc3\xa9" + t[40:], id="non-ascii"),
        pytest.param(lambda t: t[:40] + b"\x0b" + t[40:], id="vertical-tab"),
        pytest.param(lambda t: t[:40] + b"=" + t[40:], id="padding-inside"),
        pytest.param(lambda t: t.rstrip(b"=") + b"===", id="three-pads"),
        pytest.param(
            lambda t: b"-----BEGIN CERTIFICATE REQUEST-----\n" + t + b"\n", id="pem-armour"
        ),
    ],
)
def test_bad_base64_characters(est_server, mangle):
    text = refused_enrollment(est_server, mangle(_csr_b64()), 400, "base64", encode=False)
    assert "\x00" not in text


def test_truncated_base64_quantum(est_server):
    text = _csr_b64().rstrip(b"=")
    while len(text) % 4 != 1:
        text = text[:-1]
    refused_enrollment(est_server, text, 400, "base64", encode=False)


@pytest.mark.parametrize("body", [b"", b"   \r\n\t  "], ids=["empty", "only-whitespace"])
def test_empty_body(est_server, body):
    refused_enrollment(est_server, body, 400, "empty", encode=False)


# DER --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes_are_not_a_csr(est_server, seed):
    junk = random.Random(seed).randbytes(300)
    refused_enrollment(est_server, junk, 400, "PKCS#10")


def test_certificate_instead_of_csr(est_server):
    root = x509.load_pem_x509_certificate(est_server.ca_file.read_bytes())
    refused_enrollment(est_server, root.public_bytes(serialization.Encoding.DER), 400, "PKCS#10")


def test_pkcs7_instead_of_csr(est_server):
    cacerts = request(est_server.est_url() + "/cacerts", est_server.ca_file)
    der = base64.b64decode(b"".join(cacerts.body.split()))
    refused_enrollment(est_server, der, 400, "PKCS#10")


def test_truncated_der(est_server):
    _, der = make_csr(unique("cut"))
    refused_enrollment(est_server, der[:-10], 400, "PKCS#10")


@pytest.mark.parametrize(
    "tail", [b"\x00", b"\x00\x00", b"\x05\x00", b"again"], ids=["nul", "eoc", "null", "junk"]
)
def test_der_with_trailing_bytes(est_server, tail):
    _, der = make_csr(unique("tail"))
    refused_enrollment(est_server, der + tail, 400, "PKCS#10", "trailing")


def test_two_csrs_in_one_body(est_server):
    _, first = make_csr(unique("one"))
    _, second = make_csr(unique("two"))
    refused_enrollment(est_server, first + second, 400, "PKCS#10")


def _ber_variants():
    """BER encodings of a CSR whose signature is valid over the BER bytes themselves."""

    def long_form_version(parts):
        version, *rest = parts
        assert version == b"\x02\x01\x00"
        content = b"\x02\x81\x01\x00" + b"".join(rest)
        return tlv(0x30, content)

    def padded_integer(parts):
        _version, *rest = parts
        return tlv(0x30, b"\x02\x02\x00\x00" + b"".join(rest))

    def non_minimal_cri_length(parts):
        content = b"".join(parts)
        raw = len(content).to_bytes(4, "big")
        return b"\x30\x84" + raw + content

    def indefinite_cri(parts):
        return b"\x30\x80" + b"".join(parts) + b"\x00\x00"

    def indefinite_subject(parts):
        version, subject, *rest = parts
        _, content, _ = read_tlv(subject)
        return tlv(0x30, version + b"\x30\x80" + content + b"\x00\x00" + b"".join(rest))

    def long_form_subject_length(parts):
        version, subject, *rest = parts
        _, content, _ = read_tlv(subject)
        assert len(content) < 0x80
        return tlv(0x30, version + b"\x30\x81" + bytes([len(content)]) + content + b"".join(rest))

    return {
        "long-form-length": long_form_version,
        "non-minimal-integer": padded_integer,
        "non-minimal-long-form": non_minimal_cri_length,
        "indefinite-length-cri": indefinite_cri,
        "indefinite-length-subject": indefinite_subject,
        "long-form-subject-length": long_form_subject_length,
    }


@pytest.mark.parametrize("variant", sorted(_ber_variants()))
def test_ber_only_encodings_inside_signed_part(est_server, variant):
    key = ec.generate_private_key(ec.SECP256R1())
    _, der = make_csr(unique("ber"), key=key)
    cri, _, _ = split_csr(der)
    ber_cri = _ber_variants()[variant](cri_parts(cri))
    assert ber_cri != cri
    text = refused_enrollment(est_server, signed_csr(key, ber_cri), 400, "DER")
    assert "signature" not in text.lower()


@pytest.mark.parametrize("variant", ["indefinite", "non-minimal-long-form"])
def test_ber_only_encodings_of_outer_sequence(est_server, variant):
    _, der = make_csr(unique("outer"))
    _, content, _ = read_tlv(der)
    if variant == "indefinite":
        ber = b"\x30\x80" + content + b"\x00\x00"
    else:
        ber = b"\x30\x84" + len(content).to_bytes(4, "big") + content
    refused_enrollment(est_server, ber, 400, "DER")


# Signatures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_bad_csr_signature(est_server, key_type):
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _, der = make_csr(unique("badsig"), key=key)
    flipped = bytearray(der)
    flipped[-1] ^= 0x01
    refused_enrollment(est_server, bytes(flipped), 400, "signature")


def test_signature_algorithm_not_matching_key(est_server):
    """An EC key with the signature labelled sha256WithRSAEncryption."""
    key = ec.generate_private_key(ec.SECP256R1())
    _, der = make_csr(unique("mismatch"), key=key)
    cri, _, _ = split_csr(der)
    refused_enrollment(est_server, signed_csr(key, cri, OID_SHA256_RSA), 400, "signature")


@pytest.mark.parametrize(("digest", "name"), [("sha1", "sha1"), ("md5", "md5")])
def test_weak_signature_hash(est_server, tmp_path, digest, name):
    der = openssl_csr(tmp_path, ["-newkey", "rsa:2048"], digest)
    text = refused_enrollment(est_server, der, 400, name)
    assert "sha-256" in text.lower() or "sha256" in text.lower()


# Keys -------------------------------------------------------------------------------------------


def test_rsa_1024_refused(est_server, tmp_path):
    der = openssl_csr(tmp_path, ["-newkey", "rsa:1024"])
    refused_enrollment(est_server, der, 400, "1024", "2048")


@pytest.mark.parametrize("curve", ["secp521r1", "secp224r1", "secp256k1", "brainpoolP256r1"])
def test_unaccepted_curves(est_server, tmp_path, curve):
    der = openssl_csr(tmp_path, ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{curve}"])
    refused_enrollment(est_server, der, 400, curve)


def test_dsa_refused(est_server):
    key = dsa.generate_private_key(key_size=2048)
    text = refused_enrollment(est_server, signed_with(key, cn("dsa"), hashes.SHA256()), 400)
    assert "dsa" in text.lower()


def test_ed448_refused(est_server):
    key = ed448.Ed448PrivateKey.generate()
    text = refused_enrollment(est_server, signed_with(key, cn("ed448")), 400)
    assert "ed448" in text.lower()


def test_explicit_curve_parameters_refused(est_server, tmp_path):
    params = tmp_path / "explicit.pem"
    subprocess.run(
        [
            "openssl",
            "ecparam",
            "-name",
            "prime256v1",
            "-param_enc",
            "explicit",
            "-genkey",
            "-noout",
            "-out",
            str(params),
        ],
        check=True,
        capture_output=True,
    )
    der = openssl_csr(tmp_path, ["-key", str(params)])
    refused_enrollment(est_server, der, 400, "named curve")


@pytest.mark.parametrize(
    ("spki", "words"),
    [
        pytest.param(
            tlv(
                0x30,
                tlv(0x30, tlv(0x06, bytes.fromhex("2b0601040183e95f01")))
                + tlv(0x03, b"\x00" + b"\x11" * 32),
            ),
            "not support",
            id="unknown-oid",
        ),
        pytest.param(
            bytes.fromhex("302a300506032b656e032100") + b"\x09" * 32,
            "X25519 keys are not accepted",
            id="x25519",
        ),
        pytest.param(
            tlv(
                0x30,
                tlv(
                    0x30,
                    tlv(0x06, bytes.fromhex("2a8648ce3d0201"))
                    + tlv(0x06, bytes.fromhex("2a8648ce3d030107")),
                )
                + tlv(0x03, b"\x00\x04" + b"\x01" * 64),
            ),
            "not a valid key",
            id="ec-point-off-curve",
        ),
        pytest.param(
            tlv(
                0x30,
                tlv(0x30, tlv(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
                + tlv(0x03, b"\x00" + b"\x30\x03\x02\x01\x03"),
            ),
            "not a valid key",
            id="rsa-garbage",
        ),
    ],
)
def test_unknown_or_broken_public_key(est_server, spki, words):
    """A CSR whose key the server cannot use at all: a 400, never an unexpected exception."""
    signer = ec.generate_private_key(ec.SECP256R1())
    _, der = make_csr(unique("spki"), key=signer)
    cri, _, _ = split_csr(der)
    version, subject, _spki, attributes = cri_parts(cri)
    forged = tlv(0x30, version + subject + spki + attributes)
    refused_enrollment(est_server, signed_csr(signer, forged), 400, words)


def test_rsa_2048_on_rsa_label_refused(est_server):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _, der = make_csr(unique("rsa2048"), key=key)
    refused_enrollment(est_server, der, 400, "2048", "3072", label="rsa")


def test_ec_key_on_rsa_label_refused(est_server):
    _, der = make_csr(unique("ec-on-rsa"))
    refused_enrollment(est_server, der, 400, "secp256r1", label="rsa")


def test_rsa_3072_on_rsa_label_accepted(est_server):
    """Control for the refusals above: the label does issue when the key is big enough."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    _, der = make_csr(unique("rsa3072"), key=key)
    before = issued_count(est_server)
    reply = enroll(est_server, b64(der), "rsa")
    assert reply.status == 200, reply.text
    assert issued_count(est_server) == before + 1


# Names ------------------------------------------------------------------------------------------


def _name(*attributes: tuple) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in attributes])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("attributes", "words"),
    [
        (((NameOID.COMMON_NAME, "a" * 65),), ("CN", "65", "64")),
        (((NameOID.COMMON_NAME, "ok"), (NameOID.COUNTRY_NAME, "USA")), ("C", "3", "2")),
        (((NameOID.COMMON_NAME, "ok"), (NameOID.ORGANIZATION_NAME, "o" * 65)), ("O", "65")),
        (((NameOID.COMMON_NAME, "ok"), (NameOID.LOCALITY_NAME, "l" * 129)), ("L", "129")),
        (((NameOID.COMMON_NAME, "bad\x00nul"),), ("CN", "control")),
        (((NameOID.COMMON_NAME, "bad\nline"),), ("CN", "control")),
        (((NameOID.COMMON_NAME, "one"), (NameOID.COMMON_NAME, "two")), ("more than one CN",)),
    ],
    ids=["cn-65", "c-3", "o-65", "l-129", "cn-nul", "cn-newline", "two-cns"],
)
def test_subject_names_beyond_bounds(est_server, attributes, words):
    key = ec.generate_private_key(ec.SECP256R1())
    der = signed_with(key, _name(*attributes), hashes.SHA256())
    refused_enrollment(est_server, der, 400, *words)


def test_cn_of_64_characters_accepted(est_server):
    """Control: the bound is 64, inclusive."""
    _, der = make_csr("b" * 54 + uuid.uuid4().hex[:10])
    before = issued_count(est_server)
    assert enroll(est_server, b64(der)).status == 200
    assert issued_count(est_server) == before + 1


def test_empty_subject_refused(est_server):
    _, der = make_csr(None)
    refused_enrollment(est_server, der, 400, "subject", "empty")


SAN_OID = x509.ObjectIdentifier("2.5.29.17")


@pytest.mark.parametrize(
    "raw_san",
    [
        bytes.fromhex("30078705010203040 5".replace(" ", "")),
        bytes.fromhex("30058203 61ff62".replace(" ", "")),
        bytes.fromhex("3005820361 0062".replace(" ", "")),
        bytes.fromhex("3003820561"),
        bytes.fromhex("300282"),
        bytes.fromhex("0500"),
    ],
    ids=["ip-5-bytes", "dns-non-ascii", "dns-nul", "dns-overlong", "truncated", "not-a-sequence"],
)
def test_malformed_subject_alt_name(est_server, raw_san):
    """SAN values that are not what RFC 5280 allows, requested on the label that takes SANs."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(cn(unique("san")))
        .add_extension(x509.UnrecognizedExtension(SAN_OID, raw_san), critical=False)
    )
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    before = issued_count(est_server)
    reply = enroll(est_server, b64(der), "server")
    assert reply.status == 400, (reply.status, reply.text)
    assert_refused(est_server, reply, 400, before=before)


# Authentication ---------------------------------------------------------------------------------


def _auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("who", ["missing", "wrong-password", "unknown-user", "empty"])
@pytest.mark.parametrize("operation", ["simpleenroll", "simplereenroll"])
def test_401_with_basic_challenge(est_server, who, operation):
    user, password = est_server.shared_user()
    headers = dict(PKCS10)
    if who == "wrong-password":
        headers["Authorization"] = _auth_header(user, password + "x")
    elif who == "unknown-user":
        headers["Authorization"] = _auth_header(unique("nobody"), password)
    elif who == "empty":
        headers["Authorization"] = _auth_header("", "")
    _, der = make_csr(unique("noauth"))
    before = issued_count(est_server)
    reply = request(
        est_server.est_url() + "/" + operation, est_server.ca_file, "POST", b64(der), headers
    )
    if operation == "simplereenroll":
        # Renewal needs the certificate being renewed; Basic alone never suffices.
        assert reply.status in (401, 403), reply.text
        assert_refused(est_server, reply, reply.status, "certificate", before=before)
        return
    assert reply.status == 401, reply.text
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'
    assert issued_count(est_server) == before
    if who in ("wrong-password", "unknown-user"):
        text = assert_refused(est_server, reply, 401, "user name or password", before=before)
        assert password not in text
    else:
        # No credentials at all: a bare challenge (see errors.ChallengeRequired: Bouncy Castle
        # and libest fail on a challenge with a body); the header says what to do.
        assert reply.body == b""
        assert reply.headers["Content-Length"] == "0"


def test_wrong_and_unknown_user_are_indistinguishable(est_server):
    user, password = est_server.shared_user()
    _, der = make_csr(unique("same"))
    wrong = enroll(est_server, b64(der), user=user, password=password + "x")
    unknown = enroll(est_server, b64(der), user=unique("ghost"), password=password)
    assert wrong.status == unknown.status == 401
    assert wrong.text == unknown.text


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"user:pass\x00word", ("NUL",)),
        (b"us\x00er:password", ("NUL",)),
        (b"user:pass\x1bword", ("control",)),
        (b"no-colon-here", (":",)),
    ],
    ids=["nul-in-password", "nul-in-user", "escape-in-password", "no-colon"],
)
def test_malformed_basic_credentials(est_server, raw, words):
    headers = dict(PKCS10)
    headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    _, der = make_csr(unique("nul"))
    before = issued_count(est_server)
    reply = request(
        est_server.est_url() + "/simpleenroll", est_server.ca_file, "POST", b64(der), headers
    )
    assert 400 <= reply.status < 500
    assert_refused(est_server, reply, reply.status, *words, before=before)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("Basic !!!notbase64", ("base64",)),
        ("Bearer abc.def", ("Bearer", "Basic")),
        ("Digest username=x", ("Digest", "Basic")),
    ],
)
def test_unusable_authorization_header(est_server, value, words):
    headers = dict(PKCS10)
    headers["Authorization"] = value
    _, der = make_csr(unique("authz"))
    before = issued_count(est_server)
    reply = request(
        est_server.est_url() + "/simpleenroll", est_server.ca_file, "POST", b64(der), headers
    )
    assert 400 <= reply.status < 500
    assert_refused(est_server, reply, reply.status, *words, before=before)


@pytest.mark.parametrize("order", ["valid-first", "wrong-first"])
def test_duplicate_authorization_headers(est_server, order):
    """Two Authorization headers are ambiguous (a proxy may honour the other): refused."""
    user, password = est_server.shared_user()
    valid = b"Authorization: " + _auth_header(user, password).encode() + b"\r\n"
    wrong = b"Authorization: " + _auth_header(unique("other"), "x").encode() + b"\r\n"
    _, der = make_csr(unique("dupauth"))
    body = b64(der)
    auth = valid + wrong if order == "valid-first" else wrong + valid
    payload = (
        _POST
        + b"Content-Type: application/pkcs10\r\n"
        + auth
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    before = issued_count(est_server)
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, payload)
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"more than one Authorization" in text
    assert issued_count(est_server) == before


@pytest.mark.parametrize("header", [b"Content-Type", b"Host"])
def test_duplicate_singleton_headers(est_server, header):
    user, password = est_server.shared_user()
    _, der = make_csr(unique("dup"))
    body = b64(der)
    payload = (
        _POST
        + b"Content-Type: application/pkcs10\r\n"
        + (b"%s: text/plain\r\n" % header)
        + b"Authorization: "
        + _auth_header(user, password).encode()
        + b"\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    before = issued_count(est_server)
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, payload)
    head, _, text = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", head), answer[:300]
    assert b"Duplicate" in text and header in text
    assert issued_count(est_server) == before


def test_malformed_authorization_is_not_logged(est_server):
    secret = "s3cret-" + uuid.uuid4().hex
    token = base64.b64encode(f"user:{secret}".encode())
    payload = (
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Basic " + token + b"\x01\r\nContent-Length: 0\r\n\r\n"
    )
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, payload)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
    time.sleep(0.05)
    log = est_server.log()
    assert token.decode() not in log
    assert secret not in log


# Body size and type -----------------------------------------------------------------------------


def _oversized_body() -> bytes:
    return b64(make_csr(unique("big"))[1]) + b"\n" + b"A" * (64 * 1024)


def test_413_with_content_length(est_server):
    body = _oversized_body()
    assert len(body) > 64 * 1024
    before = issued_count(est_server)
    reply = enroll(est_server, body)
    assert_refused(est_server, reply, 413, "65536", before=before)
    cacerts_works(est_server)


def test_413_chunked(est_server):
    body = _oversized_body()
    user, password = est_server.shared_user()
    before = issued_count(est_server)
    payload = (
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: " + _auth_header(user, password).encode() + b"\r\n\r\n"
    )
    for i in range(0, len(body), 4096):
        chunk = body[i : i + 4096]
        payload += b"%x\r\n%s\r\n" % (len(chunk), chunk)
    payload += b"0\r\n\r\n"
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, payload)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"65536" in rest
    assert issued_count(est_server) == before
    cacerts_works(est_server)


def test_413_announced_before_any_body_arrives(est_server):
    """A huge Content-Length is refused at once: the server does not wait for the body."""
    user, password = est_server.shared_user()
    payload = (
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\nContent-Length: 99999999999\r\n"
        b"Authorization: " + _auth_header(user, password).encode() + b"\r\n\r\n"
    )
    started = time.monotonic()
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, payload, timeout=5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "content_type",
    [None, "application/pkcs7-mime", "text/plain", "application/x-pem-file", "application/json"],
)
def test_415_wrong_or_missing_content_type(est_server, content_type):
    _, der = make_csr(unique("ctype"))
    headers = {} if content_type is None else {"Content-Type": content_type}
    before = issued_count(est_server)
    reply = enroll(est_server, b64(der), headers=headers)
    text = assert_refused(est_server, reply, 415, "application/pkcs10", before=before)
    if content_type is not None:
        assert content_type in text


# Raw HTTP framing -------------------------------------------------------------------------------

_POST = b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
_GET = b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n"

FRAMING_CASES = {
    "duplicate-content-length": (
        _POST + b"Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        "Content-Length",
    ),
    "conflicting-content-length": (
        _POST + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "Content-Length",
    ),
    "content-length-list": (_POST + b"Content-Length: 4, 4\r\n\r\nabcd", "Content-Length"),
    "negative-content-length": (_POST + b"Content-Length: -1\r\n\r\n", "Content-Length"),
    "signed-content-length": (_POST + b"Content-Length: +4\r\n\r\nabcd", "Content-Length"),
    "content-length-and-chunked": (
        _POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding",
    ),
    "unknown-transfer-coding": (_POST + b"Transfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
    "nul-in-header-value": (_GET + b"X-Note: a\x00b\r\n\r\n", "header value"),
    "escape-in-header-value": (_GET + b"X-Note: a\x1bb\r\n\r\n", "header value"),
    "del-in-header-value": (_GET + b"X-Note: a\x7fb\r\n\r\n", "header value"),
    "bare-cr-in-header-value": (_GET + b"X-Note: a\rb\r\n\r\n", "LF"),
    "control-in-content-type": (
        _POST + b"Content-Type: application/pkcs10\x01\r\nContent-Length: 0\r\n\r\n",
        "header value",
    ),
    "obsolete-line-folding": (_GET + b"X-Note: a\r\n folded\r\n\r\n", "whitespace"),
    "space-before-colon": (_GET + b"X-Note : a\r\n\r\n", "header"),
    "control-in-path": (b"GET /.well-known/est/ca\x01certs HTTP/1.1\r\nHost: x\r\n\r\n", "url"),
}


@pytest.mark.parametrize("case", sorted(FRAMING_CASES))
def test_malformed_http_framing(est_server, case):
    payload, word = FRAMING_CASES[case]
    before = issued_count(est_server)
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, payload)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert re.fullmatch(rb"HTTP/1\.[01] 400 .*", status_line), answer[:300]
    assert word.lower().encode() in body.lower(), body
    assert issued_count(est_server) == before
    cacerts_works(est_server)


def _authorized_post_head(server, framing: bytes) -> bytes:
    user, password = server.shared_user()
    return (
        _POST + b"Content-Type: application/pkcs10\r\n"
        b"Authorization: " + _auth_header(user, password).encode() + b"\r\n" + framing + b"\r\n"
    )


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\nMIIB\r\n0\r\n\r\n",
        b"4\r\nMIIBxxxxxxxx\r\n0\r\n\r\n",
        b"-4\r\nMIIB\r\n0\r\n\r\n",
        b"4\r\nMIIB0\r\n\r\n",
        b"4;\x01ext\r\nMIIB\r\n0\r\n\r\n",
    ],
    ids=["size-not-hex", "data-longer-than-size", "negative-size", "missing-crlf", "ctl-ext"],
)
def test_malformed_chunked_body(est_server, chunks):
    """Broken chunk framing arriving with the headers: the parser refuses it with a 400."""
    before = issued_count(est_server)
    head = _authorized_post_head(est_server, b"Transfer-Encoding: chunked\r\n")
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, head + chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", head), answer[:300]
    assert b"chunk" in body.lower(), body
    assert issued_count(est_server) == before
    cacerts_works(est_server)


@pytest.mark.parametrize("chunks", [b"zz\r\nMIIB\r\n", b"4\r\nMIIBxxxxxxxx\r\n"])
def test_malformed_chunk_after_headers(slow_server, chunks):
    """Broken framing while the handler already waits for the body: a 4xx, never a hang.

    aiohttp's C parser drops such a body without telling the reader, so the answer is the 408
    of the body timeout (the pure-Python parser reports it and the answer is a 400).
    """
    before = issued_count(slow_server)
    log_start = len(slow_server.log())
    with tls_socket(slow_server) as sock:
        sock.sendall(_authorized_post_head(slow_server, b"Transfer-Encoding: chunked\r\n"))
        time.sleep(0.15)  # the handler is now waiting for the body
        sock.sendall(chunks)
        answer, waited, closed = read_until_closed(sock, 6)
    assert re.match(rb"HTTP/1\.1 (400|408) ", answer), answer[:300]
    assert closed and waited < 4
    assert issued_count(slow_server) == before
    new_log = slow_server.log()[log_start:]
    assert "Traceback" not in new_log and "status=500" not in new_log


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_client_vanishing_mid_body(est_server, framing):
    """A client that drops the connection halfway is not a server error (no 500, no traceback)."""
    before = issued_count(est_server)
    if framing == "content-length":
        payload = _authorized_post_head(est_server, b"Content-Length: 900\r\n") + b"MIIB"
    else:
        payload = _authorized_post_head(est_server, b"Transfer-Encoding: chunked\r\n") + (
            b"4\r\nMIIB\r\n"
        )
    for _ in range(3):
        sock = tls_socket(est_server)
        sock.sendall(payload)
        time.sleep(0.1)  # let the server start reading the body
        sock.close()
    time.sleep(0.2)
    assert issued_count(est_server) == before
    cacerts_works(est_server)


def test_control_characters_in_path_are_not_echoed_raw(est_server):
    """A percent-encoded newline must not forge a line in the log or the reason."""
    payload = b"GET /.well-known/est/%0aFORGED%0d/cacerts HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = raw_exchange("127.0.0.1", est_server.port, est_server.ca_file, payload)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), answer[:300]
    assert b"FORGED" in body
    assert b"\nFORGED" not in body and b"\r" not in body.rstrip(b"\n")
    time.sleep(0.05)
    assert not any(line.startswith("FORGED") for line in est_server.log().splitlines())


# Slow clients -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """An instance with 1-second header, body and TLS handshake timeouts."""
    directory = init_instance(tmp_path_factory.mktemp("slow") / "est-data")
    config = directory / "estkit.toml"
    text = config.read_text()
    for old, new in (
        ("header_timeout = 15", "header_timeout = 1"),
        ("body_timeout = 30", "body_timeout = 1\ntls_handshake_timeout = 1"),
    ):
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    server = start_server(directory)
    yield server
    server.stop()


def tls_socket(server) -> ssl.SSLSocket:
    context = tls_context(server.ca_file)
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return context.wrap_socket(plain, server_hostname="127.0.0.1")


def read_until_closed(sock, limit: float) -> tuple[bytes, float, bool]:
    """(data, seconds waited, closed by the server) reading until EOF or `limit` seconds."""
    started = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return data, time.monotonic() - started, True
        if not chunk:
            return data, time.monotonic() - started, True
        data += chunk
    return data, time.monotonic() - started, False


def still_open(sock: socket.socket) -> bool:
    """True when the server has neither closed the connection nor sent application data."""
    sock.setblocking(False)
    try:
        if isinstance(sock, ssl.SSLSocket):
            return sock.recv(1) != b""  # TLS 1.3 session tickets are not application data
        return sock.recv(1, socket.MSG_PEEK) != b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except (ssl.SSLError, OSError):
        return False
    finally:
        sock.setblocking(True)


def test_half_headers_then_stall_is_disconnected(slow_server):
    with tls_socket(slow_server) as sock:
        sock.sendall(_POST + b"Content-Type: applic")
        data, waited, closed = read_until_closed(sock, 6)
    assert closed, "the server kept a stalled half-request open"
    assert waited < 4
    assert data == b"" or data.startswith(b"HTTP/1.1 408")


def test_idle_connection_after_handshake_is_disconnected(slow_server):
    with tls_socket(slow_server) as sock:
        _, waited, closed = read_until_closed(sock, 6)
    assert closed
    assert waited < 4


def test_idle_keep_alive_connection_is_disconnected(slow_server):
    """After a complete exchange, an idle kept-alive connection is closed at the header timeout."""
    with tls_socket(slow_server) as sock:
        sock.sendall(_GET + b"\r\n")
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        _rest, waited, closed = read_until_closed(sock, 6)
    assert closed
    assert waited < 4


def test_headers_trickled_slowly_are_disconnected(slow_server):
    """Sending a byte now and then does not extend the header deadline."""
    started = time.monotonic()
    closed = False
    with tls_socket(slow_server) as sock:
        sock.settimeout(0.25)
        for byte in _POST + b"X-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if time.monotonic() - started > 8:
                break
    assert closed
    assert time.monotonic() - started < 4


def test_tcp_without_tls_handshake_is_disconnected(slow_server):
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=10) as sock:
        _, waited, closed = read_until_closed(sock, 6)
    assert closed
    assert waited < 4


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_partial_body_then_stall_gets_408(slow_server, framing):
    user, password = slow_server.shared_user()
    before = issued_count(slow_server)
    _, der = make_csr(unique("slow"))
    body = b64(der)
    head = (
        _POST + b"Content-Type: application/pkcs10\r\n"
        b"Authorization: " + _auth_header(user, password).encode() + b"\r\n"
    )
    if framing == "content-length":
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        partial = body[:50]
    else:
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        partial = b"%x\r\n%s\r\n" % (50, body[:50])
    with tls_socket(slow_server) as sock:
        sock.sendall(head + partial)
        data, waited, _closed = read_until_closed(sock, 6)
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert b"1 second" in data or b"within 1" in data
    assert waited < 4
    assert issued_count(slow_server) == before
    assert "Traceback" not in slow_server.log()


def test_stalled_connections_do_not_starve_others(est_server):
    """With 30 connections stalled in every phase, cacerts and an enrollment are still fast."""
    user, password = est_server.shared_user()
    stalled: list[socket.socket] = []
    try:
        for _ in range(10):
            stalled.append(socket.create_connection(("127.0.0.1", est_server.port), timeout=10))
        for _ in range(10):
            sock = tls_socket(est_server)
            sock.sendall(_POST + b"Content-Type: appl")
            stalled.append(sock)
        for _ in range(10):
            sock = tls_socket(est_server)
            sock.sendall(
                _POST + b"Content-Type: application/pkcs10\r\nContent-Length: 900\r\n"
                b"Authorization: " + _auth_header(user, password).encode() + b"\r\n\r\nMIIB"
            )
            stalled.append(sock)
        time.sleep(0.2)  # let the server reach its reads on all of them

        started = time.monotonic()
        cacerts_works(est_server)
        _key, der = make_csr(unique("unstarved"))
        before = issued_count(est_server)
        reply = enroll(est_server, b64(der))
        elapsed = time.monotonic() - started
        assert reply.status == 200, reply.text
        assert issued_count(est_server) == before + 1
        assert elapsed < 3, f"normal requests took {elapsed:.1f}s behind stalled ones"

        # The stalled connections really were still open while this ran.
        assert all(still_open(sock) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


# TLS --------------------------------------------------------------------------------------------


def _client_context(max_version: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = max_version
    context.set_ciphers(ciphers)
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as sock,
    ):
        return sock.version() or ""


@pytest.fixture(scope="module")
def permissive_tls_port(est_server):
    """A local TLS server accepting every version and suite this OpenSSL has: the control that
    shows a client really offers what estkit must refuse (else the refusal proves nothing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    tls = est_server.data_dir / "tls"
    context.load_cert_chain(tls / "server.pem", tls / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as sock:
                    sock.recv(1)  # wait for the client to close
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


def _control_handshake(port: int, context: ssl.SSLContext, what: str) -> str:
    try:
        return _handshake(port, context)
    except (ssl.SSLError, OSError) as exc:
        pytest.skip(f"this OpenSSL cannot negotiate {what} even with a permissive peer: {exc}")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_refused(est_server, permissive_tls_port, version):
    context = _client_context(getattr(ssl.TLSVersion, version), "ALL:@SECLEVEL=0")
    negotiated = _control_handshake(permissive_tls_port, context, version)
    assert negotiated == version.replace("_", "."), negotiated
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(est_server.port, context)
    cacerts_works(est_server)


def _s_client(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"",
        capture_output=True,
        timeout=30,
    )


def test_tls_1_1_refused_by_openssl_s_client(est_server, permissive_tls_port):
    args = ("-tls1_1", "-cipher", "ALL:@SECLEVEL=0")
    control = _s_client(permissive_tls_port, *args)
    if control.returncode != 0:
        pytest.skip("this openssl s_client cannot speak TLS 1.1 at all")
    assert b"TLSv1.1" in control.stdout
    result = _s_client(est_server.port, *args)
    assert result.returncode != 0
    assert b"Cipher is (NONE)" in result.stdout or b"alert" in result.stderr.lower()


# EXPORT and single DES left OpenSSL in 1.1, and OpenSSL 3 cannot offer 3DES or RC4 at all:
# the server list is checked for those by test_server_cipher_list_has_only_forward_secret_aead.
WEAK_SUITES = ["aNULL", "eNULL"]


@pytest.mark.parametrize("suite", WEAK_SUITES)
def test_weak_cipher_suites_not_negotiable(est_server, permissive_tls_port, suite):
    try:
        context = _client_context(ssl.TLSVersion.TLSv1_2, f"{suite}:!TLSv1.3:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip(f"this OpenSSL cannot offer {suite} suites (the server list is checked below)")
    _control_handshake(permissive_tls_port, context, f"{suite} suites")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(est_server.port, context)


def test_strong_tls12_suite_negotiable(est_server):
    """Control for the weak-suite refusals: the same client shape does connect with AEAD."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM")
    assert _handshake(est_server.port, context) == "TLSv1.2"


def test_server_cipher_list_has_only_forward_secret_aead(est_server):
    """The suites the server would ever pick (covers those this OpenSSL cannot even offer)."""
    tls = est_server.data_dir / "tls"
    root = x509.load_pem_x509_certificate(est_server.ca_file.read_bytes())
    context = server_context(tls / "server.pem", tls / "server.key", [root])
    for cipher in context.get_ciphers():
        name, description = cipher["name"], cipher["description"]
        assert not re.search(r"NULL|ADH|AECDH|EXP|DES|RC4|MD5|PSK|SRP|CBC", name), name
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["aead"], name
            assert "Kx=ECDH" in description or "Kx=DH" in description, description
            assert "Au=None" not in description, description


@pytest.mark.parametrize("spec", ["ECDHE-ECDSA-NULL-SHA", "AECDH-NULL-SHA", "AECDH-AES256-SHA"])
def test_weak_cipher_refused_by_openssl_s_client(est_server, permissive_tls_port, spec):
    args = ("-tls1_2", "-cipher", f"{spec}:@SECLEVEL=0")
    control = _s_client(permissive_tls_port, *args)
    if control.returncode != 0:
        pytest.skip(f"this openssl cannot negotiate {spec} even with a permissive peer")
    assert spec.encode() in control.stdout
    result = _s_client(est_server.port, *args)
    assert result.returncode != 0
    assert b"Cipher is (NONE)" in result.stdout or b"handshake failure" in result.stderr


def test_no_tls13_session_tickets_and_no_resumption(est_server):
    """TLS 1.3 tickets are off (README, TLS): none arrives, even after a whole exchange (they
    are sent after the handshake), and offering the session again resumes nothing."""
    version = "1.3"
    context = tls_context(est_server.ca_file, tls_version=version)
    first = connect(est_server.url, context)
    first.request("GET", "/.well-known/est/cacerts")
    assert first.getresponse().read()
    session = first.sock.session
    assert session is not None and not session.has_ticket
    host, port = est_server.url.split("://")[1].rsplit(":", 1)
    with (
        socket.create_connection((host, int(port))) as raw,
        context.wrap_socket(raw, server_hostname=host, session=session) as again,
    ):
        assert again.version() == f"TLSv{version}"
        assert not again.session_reused
    first.close()
