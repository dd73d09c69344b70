"""OCSP encodings (wire/ocsp.py) and the GET path decoding, without a server."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_modules import rfc6960

from estkit.server.ocsp import request_from_path
from estkit.wire.ocsp import (
    MalformedOcspRequest,
    ResponseStatus,
    SingleStatus,
    encode_basic_response,
    encode_unsuccessful,
    issuer_hashes,
    parse_request,
)


def _ca(key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    now = datetime.now(UTC)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, algorithm)
    )


def _request(nonce: bytes | None = None, ca=None) -> bytes:
    ca = ca or _ca(ec.generate_private_key(ec.SECP256R1()))
    name_hash, key_hash = issuer_hashes(ca, "1.3.14.3.2.26")
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, 5, hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _with_requests(der: bytes, copies: int) -> bytes:
    """The same request with its one CertID repeated: cryptography builds only one."""
    request, _ = decoder.decode(der, asn1Spec=rfc6960.OCSPRequest())
    request_list = request["tbsRequest"]["requestList"]
    single = request_list[0]
    for index in range(copies):
        request_list[index] = single
    return encoder.encode(request)


def test_issuer_hashes_match_cryptography():
    ca = _ca(ec.generate_private_key(ec.SECP256R1()))
    for algorithm, oid in (
        (hashes.SHA1(), "1.3.14.3.2.26"),
        (hashes.SHA256(), "2.16.840.1.101.3.4.2.1"),
        (hashes.SHA512(), "2.16.840.1.101.3.4.2.3"),
    ):
        # cryptography hashes the issuer named by a certificate (here ca names itself).
        built = ocsp.OCSPRequestBuilder().add_certificate(ca, ca, algorithm).build()
        assert issuer_hashes(ca, oid) == (built.issuer_name_hash, built.issuer_key_hash)


def test_parse_keeps_order_serials_and_nonce():
    der = _with_requests(_request(nonce=b"\x01" * 16), 3)
    parsed = parse_request(der)
    assert [c.serial for c in parsed.cert_ids] == [5, 5, 5]
    assert parsed.nonce_length == 16
    assert parsed.nonce == encoder.encode(univ.OctetString(b"\x01" * 16))
    assert not parsed.signed
    assert parsed.critical_unknown == ()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x30\x00", b"\x30\x03\x30\x01\x00", b"garbage" * 10],
    ids=["empty", "zero", "empty-sequence", "truncated", "garbage"],
)
def test_malformed_requests(data):
    with pytest.raises(MalformedOcspRequest):
        parse_request(data)


def test_trailing_bytes_and_empty_request_list():
    der = _request()
    with pytest.raises(MalformedOcspRequest, match="follow"):
        parse_request(der + b"\x00")
    request, _ = decoder.decode(der, asn1Spec=rfc6960.OCSPRequest())
    request["tbsRequest"]["requestList"].clear()
    with pytest.raises(MalformedOcspRequest, match="no certificate"):
        parse_request(encoder.encode(request))


def test_response_answers_each_cert_id_in_order():
    key = ec.generate_private_key(ec.SECP384R1())
    ca = _ca(key)
    parsed = parse_request(_with_requests(_request(ca=ca), 3))
    now = datetime.now(UTC).replace(microsecond=0)
    singles = [
        SingleStatus(parsed.cert_ids[0], "good"),
        SingleStatus(parsed.cert_ids[1], "revoked", now, x509.ReasonFlags.superseded),
        SingleStatus(parsed.cert_ids[2], "unknown"),
    ]
    der = encode_basic_response(
        responder_key=key,
        responder_certificates=[ca],
        produced_at=now,
        this_update=now,
        next_update=now + timedelta(hours=1),
        singles=singles,
        nonce=None,
    )
    response = ocsp.load_der_ocsp_response(der)
    assert [s.certificate_status for s in response.responses] == [
        ocsp.OCSPCertStatus.GOOD,
        ocsp.OCSPCertStatus.REVOKED,
        ocsp.OCSPCertStatus.UNKNOWN,
    ]
    assert list(response.responses)[1].revocation_time_utc == now
    assert response.certificates == [ca]
    assert response.signature_hash_algorithm.name == "sha384"
    key.public_key().verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA384())
    )


@pytest.mark.parametrize(
    "key",
    [rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate()],
    ids=["rsa", "ed25519"],
)
def test_response_signatures_of_other_key_types(key):
    ca = _ca(key)
    parsed = parse_request(_request(ca=ca))
    now = datetime.now(UTC)
    der = encode_basic_response(
        responder_key=key,
        responder_certificates=[],
        produced_at=now,
        this_update=now,
        next_update=now + timedelta(hours=1),
        singles=[SingleStatus(parsed.cert_ids[0], "good")],
        nonce=parsed.nonce,
    )
    response = ocsp.load_der_ocsp_response(der)
    if isinstance(key, rsa.RSAPrivateKey):
        key.public_key().verify(
            response.signature, response.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
    else:
        key.public_key().verify(response.signature, response.tbs_response_bytes)


@pytest.mark.parametrize(
    "status",
    [ResponseStatus.MALFORMED_REQUEST, ResponseStatus.UNAUTHORIZED, ResponseStatus.TRY_LATER],
)
def test_unsuccessful_responses(status):
    response = ocsp.load_der_ocsp_response(encode_unsuccessful(status))
    assert response.response_status.value == int(status)
    with pytest.raises(ValueError):
        encode_unsuccessful(ResponseStatus.SUCCESSFUL)


# GET paths --------------------------------------------------------------------------------------


def test_request_from_path_variants():
    der = bytes(range(256))  # base64 with '+', '/' and '='
    encoded = base64.b64encode(der).decode()
    assert "+" in encoded and "/" in encoded and encoded.endswith("=")
    for path in (
        "/ocsp/" + encoded,
        "/ocsp/" + quote(encoded, safe=""),
        "/ocsp//" + quote(encoded, safe=""),
        "/ocsp///" + encoded + "?x=1",
        "/ocsp/" + encoded.rstrip("="),
        "/ocsp/" + encoded.replace("+", " "),
        "/ocsp/" + base64.urlsafe_b64encode(der).decode(),
        "/ocsp/"
        + quote(encoded, safe="").replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d"),
    ):
        assert request_from_path(path) == der, path


@pytest.mark.parametrize("path", ["/ocsp/", "/ocsp//", "/ocsp/!!", "/ocsp/a", "/other/AAAA"])
def test_request_from_path_refusals(path):
    with pytest.raises(ValueError):
        request_from_path(path)
