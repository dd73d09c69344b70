"""CMC encodings (wire.cmc) and CMS signatures (authority.cms), cross-checked with openssl."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from estkit.authority.cms import sign_signed_data, verify_signed_data
from estkit.errors import CmcFailure, MalformedDer
from estkit.wire.cmc import (
    ID_CCT_PKI_DATA,
    ID_CCT_PKI_RESPONSE,
    ID_CMC_REVOKE_REQUEST,
    CertificationRequest,
    CmcStatus,
    Control,
    FailInfo,
    PkiResponse,
    RevokeRequest,
    SignerInfo,
    StatusInfo,
    encode_pki_data,
    encode_pki_response,
    encode_revoke_request,
    load_pki_data,
    load_pki_response,
    load_revoke_request,
    load_signed_data,
)
from tests.cmc import key_id_of, sign
from tests.esthttp import make_csr

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def self_signed(key, cn: str = "signer") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
        .sign(key, algorithm)
    )


KEYS = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("key_type", KEYS)
def test_signed_response_verifies_with_openssl_and_ourselves(key_type, tmp_path):
    key = KEYS[key_type]()
    cert = self_signed(key)
    content = encode_pki_response(
        PkiResponse((StatusInfo(CmcStatus.SUCCESS, (1,), "ok"),), transaction_id=9)
    )
    der = sign_signed_data(key, cert, ID_CCT_PKI_RESPONSE, content, [cert])

    if key_type != "ed25519":
        # OpenSSL 3.0 implements no Ed25519 in CMS (RFC 8419): it can neither sign nor verify
        # one, so that key type is checked by our verifier alone.
        (tmp_path / "in.der").write_bytes(der)
        (tmp_path / "ca.pem").write_bytes(cert.public_bytes(Encoding.PEM))
        result = subprocess.run(
            ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "in.der"),
             "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "any", "-binary",
             "-out", str(tmp_path / "out.der")],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out.der").read_bytes() == content

    message = load_signed_data(der)
    assert message.content_type == ID_CCT_PKI_RESPONSE
    assert message.certificates == (cert,)
    [signer] = message.signers
    assert (signer.issuer, signer.serial) == (cert.issuer.public_bytes(), cert.serial_number)
    verify_signed_data(message, signer, cert.public_key())
    assert load_pki_response(message.content).transaction_id == 9


def test_openssl_signed_cms_verifies_with_ourselves(tmp_path):
    """A SignedData made by openssl (not by our encoder) passes our checks."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key)
    key_pem = tmp_path / "key.pem"
    key_pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    content = encode_pki_data(requests=[CertificationRequest(1, make_csr("x", key=key)[1])])
    (tmp_path / "content.der").write_bytes(content)
    subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
         "-econtent_type", ID_CCT_PKI_DATA, "-in", str(tmp_path / "content.der"),
         "-signer", str(tmp_path / "cert.pem"), "-inkey", str(key_pem),
         "-out", str(tmp_path / "signed.der")],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    message = load_signed_data((tmp_path / "signed.der").read_bytes())
    assert message.content_type == ID_CCT_PKI_DATA and message.content == content
    verify_signed_data(message, message.signers[0], cert.public_key())
    assert load_pki_data(message.content).requests[0].body_part_id == 1


def test_self_signed_request_round_trip():
    key, csr = make_csr("device")
    revoke = RevokeRequest(b"\x30\x00", 77, 1, NOW, "lost it")
    controls = [Control(2, ID_CMC_REVOKE_REQUEST, (encode_revoke_request(revoke),))]
    content = encode_pki_data(controls, [CertificationRequest(1, csr)])
    der = sign(content, key, key_id=key_id_of(key))

    message = load_signed_data(der)
    [signer] = message.signers
    assert signer.key_id == key_id_of(key) and signer.issuer is None
    verify_signed_data(message, signer, key.public_key())
    pki = load_pki_data(message.content)
    assert pki.requests == (CertificationRequest(1, csr),)
    assert pki.body_part_ids == (2, 1)
    assert load_revoke_request(pki.controls[0].values[0]) == revoke


def test_status_with_pend_info_round_trips():
    info = StatusInfo(CmcStatus.PENDING, (3,), "wait", pend_token=b"42", pend_time=NOW)
    failed = StatusInfo(CmcStatus.FAILED, (0,), "no", fail_info=FailInfo.popFailed)
    response = load_pki_response(encode_pki_response(PkiResponse((info, failed))))
    assert response.statuses == (info, failed)


def test_tampered_content_fails_the_digest_check():
    key, csr = make_csr("device-aaaa")
    der = sign(encode_pki_data(requests=[CertificationRequest(1, csr)]), key, key_id=b"k")
    message = load_signed_data(der.replace(b"device-aaaa", b"device-bbbb"))
    with pytest.raises(CmcFailure) as raised:
        verify_signed_data(message, message.signers[0], key.public_key())
    assert raised.value.fail_info == "badMessageCheck"


def test_weak_digest_is_bad_alg():
    key = ec.generate_private_key(ec.SECP256R1())
    message = load_signed_data(sign(b"\x30\x00", key, key_id=b"k"))
    weak = SignerInfo(**{**vars(message.signers[0]), "digest_algorithm": "1.3.14.3.2.26"})
    with pytest.raises(CmcFailure) as raised:
        verify_signed_data(message, weak, key.public_key())
    assert raised.value.fail_info == "badAlg"


def test_missing_signed_attributes_is_bad_message_check():
    key = ec.generate_private_key(ec.SECP256R1())
    message = load_signed_data(sign(b"\x30\x00", key, key_id=b"k"))
    bare = SignerInfo(**{**vars(message.signers[0]), "signed_attributes": None})
    with pytest.raises(CmcFailure) as raised:
        verify_signed_data(message, bare, key.public_key())
    assert raised.value.fail_info == "badMessageCheck"


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30\x00", b"\x04\x03abc", bytes(range(40))],
    ids=["empty", "empty-sequence", "octets", "noise"],
)
def test_malformed_messages_are_malformed_der(der):
    with pytest.raises(MalformedDer):
        load_signed_data(der)
    with pytest.raises(MalformedDer):
        load_pki_data(der)


def test_trailing_bytes_are_refused():
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(MalformedDer, match="trailing"):
        load_signed_data(sign(b"\x30\x00", key, key_id=b"k") + b"\x00")
