"""The serverkeygen multipart/mixed parser (RFC 7030 §4.4.2), on bodies built here by hand."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.message import Message

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from estkit.client.client import server_generated_key
from estkit.client.errors import BadResponse
from estkit.client.transport import Response
from estkit.wire.multipart import MalformedMultipart, encode_serverkeygen, parse_serverkeygen

KEY_DER = b"\x30\x82\x01\x00" + bytes(range(256))
CERTS_DER = b"\x30\x82\x02\x00" + bytes(reversed(range(256))) * 2

KEY_PART = ("application/pkcs8", KEY_DER)
CERT_PART = ("application/pkcs7-mime; smime-type=certs-only", CERTS_DER)


def b64_lines(der: bytes, end: str, width: int = 64) -> str:
    text = base64.b64encode(der).decode()
    return "".join(text[i : i + width] + end for i in range(0, len(text), width))


def body(parts, end="\r\n", boundary="est", preamble="", epilogue="", close=True) -> bytes:
    out = preamble
    for content_type, der in parts:
        out += f"--{boundary}{end}Content-Type: {content_type}{end}"
        out += f"Content-Transfer-Encoding: base64{end}{end}"
        out += b64_lines(der, end)
    if close:
        out += f"--{boundary}--{end}" + epilogue
    return out.encode()


@pytest.mark.parametrize("end", ["\r\n", "\n"])
@pytest.mark.parametrize("order", [(KEY_PART, CERT_PART), (CERT_PART, KEY_PART)])
def test_both_parts_in_either_order_with_crlf_or_lf(end, order):
    parts = parse_serverkeygen("multipart/mixed; boundary=est", body(order, end))
    assert parts.private_key_der == KEY_DER
    assert parts.certs_only_der == CERTS_DER


def test_quoted_boundary_preamble_epilogue_and_76_column_lines():
    text = body(
        [KEY_PART, CERT_PART],
        boundary="a'b(c)",
        preamble="ignore me\r\n",
        epilogue="trailing words\r\n",
    )
    parts = parse_serverkeygen('multipart/mixed; boundary="a\'b(c)"', text)
    assert (parts.private_key_der, parts.certs_only_der) == (KEY_DER, CERTS_DER)


def test_certs_only_part_without_smime_type_is_accepted():
    text = body([KEY_PART, ("application/pkcs7-mime", CERTS_DER)])
    assert parse_serverkeygen("multipart/mixed; boundary=est", text).certs_only_der == CERTS_DER


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([CERT_PART], "no application/pkcs8"),
        ([KEY_PART], "no application/pkcs7-mime"),
        ([], "cannot be split|no application/pkcs8"),
        ([KEY_PART, KEY_PART, CERT_PART], "two application/pkcs8"),
        ([KEY_PART, CERT_PART, CERT_PART], "two certs-only"),
        (
            [("application/pkcs7-mime; smime-type=server-generated-key", KEY_DER), CERT_PART],
            "encrypted",
        ),
        ([KEY_PART, ("text/plain", b"hello")], "no application/pkcs7-mime"),
    ],
)
def test_missing_duplicate_or_unsupported_parts(parts, message):
    with pytest.raises(MalformedMultipart, match=message):
        parse_serverkeygen("multipart/mixed; boundary=est", body(parts))


def test_not_multipart_or_no_boundary_or_truncated():
    good = body([KEY_PART, CERT_PART])
    with pytest.raises(MalformedMultipart, match="expected multipart/mixed"):
        parse_serverkeygen("application/pkcs7-mime", good)
    with pytest.raises(MalformedMultipart, match="cannot be split"):
        parse_serverkeygen("multipart/mixed", good)
    with pytest.raises(MalformedMultipart, match="cannot be split"):
        parse_serverkeygen("multipart/mixed; boundary=other", good)
    with pytest.raises(MalformedMultipart, match="cannot be split"):
        parse_serverkeygen(
            "multipart/mixed; boundary=est", body([KEY_PART, CERT_PART], close=False)
        )
    with pytest.raises(MalformedMultipart, match="line break"):
        parse_serverkeygen("multipart/mixed; boundary=est\r\nX-Evil: 1", good)


def test_a_part_that_is_not_base64():
    good = body([KEY_PART, CERT_PART])
    text = good.replace(b"MIIBA", b"MI*BA", 1)
    assert text != good
    with pytest.raises(MalformedMultipart, match="not base64"):
        parse_serverkeygen("multipart/mixed; boundary=est", text)


def test_encoder_round_trip_uses_crlf_and_key_first():
    content_type, encoded = encode_serverkeygen(KEY_DER, CERTS_DER, boundary="b1")
    assert content_type == "multipart/mixed; boundary=b1"
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    assert encoded.index(b"application/pkcs8") < encoded.index(b"application/pkcs7-mime")
    parts = parse_serverkeygen(content_type, encoded)
    assert (parts.private_key_der, parts.certs_only_der) == (KEY_DER, CERTS_DER)


def _response(content_type: str, data: bytes) -> Response:
    headers = Message()
    headers["Content-Type"] = content_type
    return Response(200, headers, data, "TLSv1.3")


def _key_and_cert():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "generated")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, cert, key_der, pkcs7.serialize_certificates([cert], serialization.Encoding.DER)


def test_client_turns_the_answer_into_a_key_and_certificate():
    key, cert, key_der, certs_der = _key_and_cert()
    text = body(
        [
            ("application/pkcs7-mime; smime-type=certs-only", certs_der),
            ("application/pkcs8", key_der),
        ],
        end="\n",
    )
    result = server_generated_key(_response("multipart/mixed; boundary=est", text))
    assert result.certificate == cert
    assert result.private_key.private_numbers() == key.private_numbers()


def test_client_reports_a_missing_part_as_bad_response():
    _, _, key_der, _ = _key_and_cert()
    text = body([("application/pkcs8", key_der)])
    with pytest.raises(BadResponse, match="no application/pkcs7-mime"):
        server_generated_key(_response("multipart/mixed; boundary=est", text))


def test_client_refuses_a_certificate_for_another_key():
    _, _, key_der, _ = _key_and_cert()
    _, _, _, other_certs = _key_and_cert()
    text = body([("application/pkcs8", key_der), ("application/pkcs7-mime", other_certs)])
    with pytest.raises(BadResponse, match="no certificate for its key"):
        server_generated_key(_response("multipart/mixed; boundary=est", text))


def test_client_refuses_a_key_part_that_is_not_a_key():
    _, _, _, certs_der = _key_and_cert()
    text = body(
        [("application/pkcs8", b"\x30\x03\x02\x01\x00"), ("application/pkcs7-mime", certs_der)]
    )
    with pytest.raises(BadResponse, match="PrivateKeyInfo"):
        server_generated_key(_response("multipart/mixed; boundary=est", text))
