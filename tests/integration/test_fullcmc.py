"""Full CMC (RFC 7030 §4.3; RFC 5272, RFC 6402): enrollment with PKCS#10 requests, revocation
with revokeRequest, and failures answered as signed CMC responses.  Responses are checked with
openssl (a CMS implementation we did not write) as well as with our own decoder."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import uuid
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.config import load_config
from estkit.wire.cmc import (
    ID_CMC_QUERY_PENDING,
    ID_CMC_TRANSACTION_ID,
    CmcStatus,
    Control,
    FailInfo,
    encode_integer,
    encode_octets,
)
from tests.cmc import (
    key_id_of,
    openssl,
    openssl_verify_cms,
    pki_data,
    post_cmc,
    read_cmc,
    revoke_request_for,
    self_signed_request,
    sign,
)
from tests.esthttp import enroll_with_cert, make_csr, new_key, write_pair
from tests.estserver import init_instance, run_estkit, start_server

REVOKER_TOML = """
[labels.ops]
allow_anchors = ["estkit"]
cmc_revokers = ["ops-*"]

[labels.manual]
approval = "manual"
retry_after = 7
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cmc_as_user(server, body: bytes, label: str | None = None, **kwargs):
    user, password = server.shared_user()
    return post_cmc(server, body, label, user=user, password=password, **kwargs)


def record_of(server, cert: x509.Certificate):
    store = server.store()
    try:
        return store.certificate(format(cert.serial_number, "x"))
    finally:
        store.close()


def issued_count(server) -> int:
    store = server.store()
    try:
        return len(store.certificates())
    finally:
        store.close()


def audit_events(server, subject: str) -> list[dict]:
    db = load_config(server.data_dir).store_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT * FROM audit_events WHERE subject = ? ORDER BY id", (subject,)
        ).fetchall()
    return [dict(row) for row in rows]


def chain_verifies(server, cert: x509.Certificate, chain: tuple[x509.Certificate, ...]) -> None:
    """The issued certificate chains to the instance's root (checked by openssl verify)."""
    directory = server.data_dir
    leaf = directory / f"leaf-{cert.serial_number:x}.pem"
    untrusted = directory / f"chain-{cert.serial_number:x}.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    untrusted.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain if c != cert)
    )
    output = openssl(
        "verify", "-CAfile", str(server.ca_file), "-untrusted", str(untrusted), str(leaf)
    )
    assert output.strip().endswith(": OK")


def enroll_by_cmc(server, cn: str, label: str | None = None, user=None, password=None):
    """(key, certificate) from a self-signed Full PKI Request."""
    if user is None:
        user, password = server.shared_user()
    key, csr = make_csr(cn)
    reply = post_cmc(server, self_signed_request(key, csr), label, user=user, password=password)
    return key, read_cmc(reply, 200).issued()


@pytest.fixture(scope="module")
def revoker_server(tmp_path_factory):
    directory = init_instance(tmp_path_factory.mktemp("cmc") / "est-data", REVOKER_TOML)
    server = start_server(directory)
    yield server
    server.stop()


# --- enrollment -------------------------------------------------------------------------------


def test_self_signed_full_pki_request_issues_a_certificate(est_server, tmp_path):
    cn = unique("cmc-device")
    key, csr = make_csr(cn)
    nonce = os.urandom(16)
    body = self_signed_request(key, csr, body_part=7, transaction_id=4711, nonce=nonce)
    result = read_cmc(cmc_as_user(est_server, body), 200)

    status = result.status
    assert status.status == CmcStatus.SUCCESS
    assert status.body_parts == (7,)
    assert status.fail_info is None
    # RFC 5272 §6.6: transactionId comes back, the senderNonce as recipientNonce.
    assert result.response.transaction_id == 4711
    assert result.response.recipient_nonce == nonce
    assert result.response.sender_nonce and result.response.sender_nonce != nonce

    cert = result.issued()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert cert.public_key() == key.public_key()
    chain_verifies(est_server, cert, result.signed.certificates)

    # openssl checks the CA's signature over the response and extracts the same PKIResponse.
    assert openssl_verify_cms(result.der, tmp_path) == result.signed.content
    parsed = openssl("asn1parse", "-inform", "DER", stdin=result.signed.content)
    assert ":1.3.6.1.5.5.7.7.25" in parsed or "id-cmc-statusInfoV2" in parsed  # statusInfoV2
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", stdin=result.der)
    assert "1.3.6.1.5.5.7.12.3" in printed or "id-cct-PKIResponse" in printed

    record = record_of(est_server, cert)
    assert record is not None and record.kind == "enroll" and record.label == ""
    [event] = audit_events(est_server, record.serial)
    assert event["action"] == "certificate.enroll"
    assert json.loads(event["detail"])["operation"] == "fullcmc"


def test_response_signature_chains_to_the_root_for_openssl(est_server, tmp_path):
    key, csr = make_csr(unique("cmc-chain"))
    result = read_cmc(cmc_as_user(est_server, self_signed_request(key, csr)), 200)
    source = tmp_path / "response.der"
    source.write_bytes(result.der)
    # Full verification: signer is the issuing CA, which chains to the instance's root.
    output = openssl(
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        str(source),
        "-CAfile",
        str(est_server.ca_file),
        "-purpose",
        "any",
        "-binary",
        "-out",
        str(tmp_path / "out"),
    )
    assert (tmp_path / "out").read_bytes() == result.signed.content, output


def test_request_signed_with_an_existing_certificate(est_server, tmp_path):
    """RFC 5272 §3.2: signed by the requester's current certificate (issuerAndSerialNumber)."""
    old_key, old_cert = enroll_by_cmc(est_server, unique("cmc-holder"))
    new_key_, csr = make_csr(unique("cmc-holder-new"))
    body = sign(pki_data({1: csr}), old_key, cert=old_cert, certificates=(old_cert,))
    result = read_cmc(cmc_as_user(est_server, body), 200)
    assert result.status.status == CmcStatus.SUCCESS
    assert result.issued().public_key() == new_key_.public_key()


def test_signer_certificate_found_in_the_store_when_not_sent(est_server):
    old_key, old_cert = enroll_by_cmc(est_server, unique("cmc-nocert"))
    _, csr = make_csr(unique("cmc-nocert-new"))
    body = sign(pki_data({1: csr}), old_key, cert=old_cert)  # certificates field left empty
    assert read_cmc(cmc_as_user(est_server, body), 200).status.status == CmcStatus.SUCCESS


def test_tls_client_certificate_authenticates_fullcmc(est_server, tmp_path):
    key, cert = enroll_by_cmc(est_server, unique("cmc-mtls"))
    cert_path, key_path = write_pair(tmp_path, "mtls", key, cert)
    new, csr = make_csr(unique("cmc-mtls-new"))
    reply = post_cmc(
        est_server, self_signed_request(new, csr), "mtls", cert=cert_path, key=key_path
    )
    assert read_cmc(reply, 200).status.status == CmcStatus.SUCCESS


def test_two_requests_in_one_message(est_server):
    key1, csr1 = make_csr(unique("cmc-a"))
    key2, csr2 = make_csr(unique("cmc-b"), key=new_key("ec-p256"))
    body = sign(pki_data({1: csr1, 2: csr2}), key1, key_id=key_id_of(key1))
    result = read_cmc(cmc_as_user(est_server, body), 200)
    assert [(s.status, s.body_parts) for s in result.response.statuses] == [
        (CmcStatus.SUCCESS, (1,)),
        (CmcStatus.SUCCESS, (2,)),
    ]
    keys = [c.public_key() for c in result.signed.certificates]
    assert key1.public_key() in keys and key2.public_key() in keys


def test_partial_success_is_200_with_each_status(est_server):
    """One request the iot label grants (CN = the user) and one it refuses: the response
    carries the certificate, so it is a 200, and each body part has its own status."""
    user, _ = est_server.shared_user()
    key1, csr1 = make_csr(user)
    _, csr2 = make_csr("not-the-user")
    body = sign(pki_data({1: csr1, 2: csr2}), key1, key_id=key_id_of(key1))
    result = read_cmc(cmc_as_user(est_server, body, "iot"), 200)
    ok, refused = result.response.statuses
    assert (ok.status, ok.body_parts) == (CmcStatus.SUCCESS, (1,))
    assert (refused.status, refused.body_parts) == (CmcStatus.FAILED, (2,))
    assert refused.fail_info == FailInfo.badRequest
    assert result.issued().public_key() == key1.public_key()


def test_pop_linking_label_without_tls_unique_is_pop_required(est_server):
    """The pop label wants tls-unique in the PKCS#10's challengePassword (RFC 7030 §3.5)."""
    key, csr = make_csr(unique("cmc-pop"))
    result = read_cmc(cmc_as_user(est_server, self_signed_request(key, csr), "pop"), 400)
    assert result.status.fail_info == FailInfo.popRequired


def test_label_policy_applies_to_cmc(est_server):
    """The iot label issues only to CN = the user: same checks as simpleenroll (403)."""
    key, csr = make_csr("someone-else")
    result = read_cmc(cmc_as_user(est_server, self_signed_request(key, csr), "iot"), 403)
    assert result.status.status == CmcStatus.FAILED
    assert result.status.fail_info == FailInfo.badRequest
    assert "only issues to the authenticated identity" in result.status.text


def test_manual_approval_label_answers_pending(revoker_server):
    user = unique("cmc-manual")
    password = revoker_server.add_user(user)
    key, csr = make_csr(user)
    body = self_signed_request(key, csr, body_part=3)
    reply = post_cmc(revoker_server, body, "manual", user=user, password=password)
    result = read_cmc(reply, 202)
    assert reply.headers["Retry-After"] == "7"
    assert result.status.status == CmcStatus.PENDING
    assert result.status.body_parts == (3,)
    assert result.status.pend_token and result.status.pend_time > datetime.now(UTC)
    # Nothing issued: only the CA chain travels with the response.
    assert all(
        c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        for c in result.signed.certificates
    )

    # The pendToken is the request's ID: once an operator approves it, resending the same
    # PKCS#10 (in a new Full PKI Request) collects the certificate.
    request_id = result.status.pend_token.decode()
    run_estkit("request", "approve", request_id, "--dir", str(revoker_server.data_dir))
    body = self_signed_request(key, csr, body_part=3)
    reply = post_cmc(revoker_server, body, "manual", user=user, password=password)
    done = read_cmc(reply, 200)
    assert done.status.status == CmcStatus.SUCCESS
    assert done.issued().public_key() == key.public_key()
    [event] = audit_events(revoker_server, format(done.issued().serial_number, "x"))
    assert json.loads(event["detail"])["operation"] == "fullcmc"


def openssl_signed(tmp_path, content: bytes, key, cert: x509.Certificate, *flags: str) -> bytes:
    """A SignedData made by `openssl cms -sign` (not by our encoder) around ``content``."""
    key_file = tmp_path / "signer.key"
    cert_file = tmp_path / "signer.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "pkidata.der").write_bytes(content)
    openssl(
        "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-econtent_type",
        "1.3.6.1.5.5.7.12.2", "-in", str(tmp_path / "pkidata.der"), "-signer", str(cert_file),
        "-inkey", str(key_file), "-out", str(tmp_path / "request.der"), *flags,
    )  # fmt: skip
    return (tmp_path / "request.der").read_bytes()


def test_openssl_signed_self_signed_request(est_server, tmp_path):
    """openssl signs with the request's key (named by key identifier, RFC 5272 §3.2), carrying
    the throwaway self-signed certificate openssl needs for that."""
    key, csr = make_csr(unique("cmc-openssl-pop"), key=new_key("rsa-2048"))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throwaway")])
    now = datetime.now(UTC)
    throwaway = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    body = openssl_signed(tmp_path, pki_data({1: csr}), key, throwaway, "-keyid")
    result = read_cmc(cmc_as_user(est_server, body), 200)
    assert result.issued().public_key() == key.public_key()


def test_openssl_signed_with_existing_certificate(est_server, tmp_path):
    old_key, old_cert = enroll_by_cmc(est_server, unique("cmc-openssl-cert"))
    new, csr = make_csr(unique("cmc-openssl-cert-new"))
    body = openssl_signed(tmp_path, pki_data({1: csr}), old_key, old_cert)
    result = read_cmc(cmc_as_user(est_server, body), 200)
    assert result.issued().public_key() == new.public_key()


# --- revocation -------------------------------------------------------------------------------


def test_holder_revokes_its_certificate(est_server, tmp_path):
    key, cert = enroll_by_cmc(est_server, unique("cmc-revoke"))
    invalid_since = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    revoke = revoke_request_for(cert, reason=1, invalidity_date=invalid_since, comment="lost")
    body = sign(pki_data(revoke={5: revoke}), key, cert=cert, certificates=(cert,))
    result = read_cmc(cmc_as_user(est_server, body), 200)
    assert result.status.status == CmcStatus.SUCCESS
    assert result.status.body_parts == (5,)

    record = record_of(est_server, cert)
    assert record.status == "revoked"
    assert record.revocation_reason == "keyCompromise"
    [*_, event] = audit_events(est_server, record.serial)
    assert event["action"] == "certificate.revoke"
    detail = json.loads(event["detail"])
    assert detail["operation"] == "fullcmc" and detail["authorized_as"] == "holder"
    assert detail["invalidity_date"].startswith("2024-01-02T03:04:05")

    # The revoked certificate no longer renews (RFC 7030 §4.2.2 over mutual TLS).
    cert_path, key_path = write_pair(tmp_path, "revoked", key, cert)
    _, csr = make_csr(cert.subject.rfc4514_string().removeprefix("CN="), key=key)
    reply = enroll_with_cert(est_server, "simplereenroll", csr, cert_path, key_path)
    assert reply.status == 403, reply.text
    assert "revoked" in reply.text

    # Nor does it sign CMC any more, and revoking again says it already is.
    again = read_cmc(cmc_as_user(est_server, body), 403)
    assert again.status.fail_info == FailInfo.badMessageCheck
    assert "revoked" in again.status.text


def test_revoking_someone_elses_certificate_is_403(est_server):
    _, victim = enroll_by_cmc(est_server, unique("cmc-victim"))
    attacker_key, attacker = enroll_by_cmc(est_server, unique("cmc-attacker"))
    body = sign(
        pki_data(revoke={1: revoke_request_for(victim)}),
        attacker_key,
        cert=attacker,
        certificates=(attacker,),
    )
    result = read_cmc(cmc_as_user(est_server, body), 403)
    assert result.status.status == CmcStatus.FAILED
    assert result.status.fail_info == FailInfo.badRequest
    assert "may not revoke" in result.status.text
    assert record_of(est_server, victim).status == "valid"


def test_cmc_revoker_revokes_certificates_of_its_label(revoker_server):
    user = unique("ops-admin")
    password = revoker_server.add_user(user)
    admin_key, admin_cert = enroll_by_cmc(revoker_server, user, "ops", user, password)
    _, target = enroll_by_cmc(revoker_server, unique("ops-device"), "ops", user, password)
    _, elsewhere = enroll_by_cmc(revoker_server, unique("plain-device"), None, user, password)

    def revoke(cert, reason=4):
        body = sign(
            pki_data(revoke={9: revoke_request_for(cert, reason)}),
            admin_key,
            cert=admin_cert,
            certificates=(admin_cert,),
        )
        return post_cmc(revoker_server, body, "ops", user=user, password=password)

    result = read_cmc(revoke(target), 200)
    assert result.status.status == CmcStatus.SUCCESS
    record = record_of(revoker_server, target)
    assert (record.status, record.revocation_reason) == ("revoked", "superseded")
    detail = json.loads(audit_events(revoker_server, record.serial)[-1]["detail"])
    assert detail["authorized_as"] == "cmc_revokers"

    # Certificates of another label are out of reach of this label's revokers.
    refused = read_cmc(revoke(elsewhere), 403)
    assert refused.status.fail_info == FailInfo.badRequest
    assert "own label" in refused.status.text
    assert record_of(revoker_server, elsewhere).status == "valid"

    # Already revoked; removeFromCRL is no reason; an unknown serial is badCertId.
    assert "already revoked" in read_cmc(revoke(target), 400).status.text
    assert read_cmc(revoke(elsewhere, reason=8), 400).status.fail_info == FailInfo.badRequest
    fake = revoke_request_for(target)
    unknown = sign(
        pki_data(revoke={1: type(fake)(fake.issuer, 12345, 1)}), admin_key, cert=admin_cert
    )
    reply = post_cmc(revoker_server, unknown, "ops", user=user, password=password)
    assert read_cmc(reply, 400).status.fail_info == FailInfo.badCertId


def test_user_not_in_cmc_revokers_may_not_revoke(revoker_server):
    user = unique("dev")  # does not match ops-*
    password = revoker_server.add_user(user)
    key, cert = enroll_by_cmc(revoker_server, user, "ops", user, password)
    _, other = enroll_by_cmc(revoker_server, unique("ops-other"), "ops", user, password)
    body = sign(pki_data(revoke={1: revoke_request_for(other)}), key, cert=cert)
    reply = post_cmc(revoker_server, body, "ops", user=user, password=password)
    assert read_cmc(reply, 403).status.fail_info == FailInfo.badRequest
    assert record_of(revoker_server, other).status == "valid"


# --- failures ---------------------------------------------------------------------------------


def test_bad_signature_is_bad_message_check(est_server):
    key, csr = make_csr(unique("cmc-badsig"))
    body = bytearray(self_signed_request(key, csr, transaction_id=77))
    # The ECDSA signature is the last value of the message: flip a bit inside it.
    body[-5] ^= 0x01
    before = issued_count(est_server)
    result = read_cmc(cmc_as_user(est_server, bytes(body)), 400)
    assert result.status.status == CmcStatus.FAILED
    assert result.status.fail_info == FailInfo.badMessageCheck
    assert result.response.transaction_id == 77  # echoed even by a refusal
    assert issued_count(est_server) == before


def test_signature_by_another_key_is_bad_message_check(est_server):
    key, csr = make_csr(unique("cmc-otherkey"))
    intruder = ec.generate_private_key(ec.SECP256R1())
    body = sign(pki_data({1: csr}), intruder, key_id=key_id_of(key))
    result = read_cmc(cmc_as_user(est_server, body), 400)
    assert result.status.fail_info == FailInfo.badMessageCheck
    assert result.status.body_parts == (1,)


def test_content_altered_after_signing_is_bad_message_check(est_server):
    """The messageDigest signed attribute no longer matches the content."""
    key, csr = make_csr("cmc-digest-aaaa")
    signed = self_signed_request(key, csr)
    swapped = signed.replace(b"cmc-digest-aaaa", b"cmc-digest-bbbb")
    assert swapped != signed
    result = read_cmc(cmc_as_user(est_server, swapped), 400)
    assert result.status.fail_info == FailInfo.badMessageCheck
    assert "message-digest" in result.status.text


def test_wrong_content_type_attribute_is_bad_message_check(est_server):
    key, csr = make_csr(unique("cmc-ctype"))
    body = sign(
        pki_data({1: csr}),
        key,
        key_id=key_id_of(key),
        attribute_content_type="1.2.840.113549.1.7.1",
    )
    assert read_cmc(cmc_as_user(est_server, body), 400).status.fail_info == (
        FailInfo.badMessageCheck
    )


def test_signer_certificate_from_another_ca_is_refused(est_server):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = datetime.now(UTC)
    stranger = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .sign(key, hashes.SHA256())
    )
    _, csr = make_csr(unique("cmc-stranger"))
    body = sign(pki_data({1: csr}), key, cert=stranger, certificates=(stranger,))
    result = read_cmc(cmc_as_user(est_server, body), 403)
    assert result.status.fail_info == FailInfo.badMessageCheck
    assert "did not issue" in result.status.text


def test_tampered_pkcs10_is_pop_failed(est_server):
    """The PKCS#10 was altered after it was signed; the CMS signature over it is fine."""
    key, csr = make_csr("cmc-original")
    tampered = csr.replace(b"cmc-original", b"cmc-tampered")
    assert tampered != csr
    result = read_cmc(cmc_as_user(est_server, self_signed_request(key, tampered)), 400)
    assert result.status.status == CmcStatus.FAILED
    assert result.status.fail_info == FailInfo.popFailed
    assert result.status.body_parts == (1,)


@pytest.mark.parametrize(
    "body",
    [
        base64.b64encode(b"\x30\x03\x02\x01\x05"),  # DER, but not a ContentInfo
        base64.b64encode(os.urandom(64)),
        b"this is not base64 at all!",
    ],
    ids=["der-integer", "random-bytes", "not-base64"],
)
def test_garbage_is_bad_request_in_a_cmc_response(est_server, body):
    reply = cmc_as_user(est_server, body, encode=False)
    result = read_cmc(reply, 400)
    assert result.status.status == CmcStatus.FAILED
    assert result.status.fail_info == FailInfo.badRequest
    assert result.status.body_parts == (0,)


def test_signed_data_of_another_content_type_is_bad_request(est_server):
    key, csr = make_csr(unique("cmc-data"))
    body = sign(pki_data({1: csr}), key, key_id=key_id_of(key), content_type="1.2.840.113549.1.7.1")
    result = read_cmc(cmc_as_user(est_server, body), 400)
    assert result.status.fail_info == FailInfo.badRequest
    assert "not a PKIData" in result.status.text


def test_unsupported_control_fails_the_whole_request(est_server):
    key, csr = make_csr(unique("cmc-control"))
    query = Control(4, ID_CMC_QUERY_PENDING, (encode_octets(b"1"),))
    body = sign(pki_data({1: csr}, extra=(query,)), key, key_id=key_id_of(key))
    before = issued_count(est_server)
    result = read_cmc(cmc_as_user(est_server, body), 400)
    assert result.status.fail_info == FailInfo.badRequest
    assert result.status.body_parts == (4,)
    assert "queryPending" in result.status.text
    assert issued_count(est_server) == before


def test_duplicate_body_part_ids_are_bad_request(est_server):
    key, csr = make_csr(unique("cmc-dup"))
    clash = Control(1, ID_CMC_TRANSACTION_ID, (encode_integer(5),))
    body = sign(pki_data({1: csr}, extra=(clash,)), key, key_id=key_id_of(key))
    result = read_cmc(cmc_as_user(est_server, body), 400)
    assert result.status.fail_info == FailInfo.badRequest
    assert result.status.body_parts == (1,)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/pkcs10",
        "application/pkcs7-mime",
        "application/pkcs7-mime; smime-type=certs-only",
        None,
    ],
)
def test_wrong_content_type_is_415(est_server, content_type):
    key, csr = make_csr(unique("cmc-415"))
    headers = {} if content_type is None else {"Content-Type": content_type}
    reply = cmc_as_user(est_server, self_signed_request(key, csr), headers=headers)
    assert reply.status == 415
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "CMC-request" in reply.text


def test_content_type_parameter_is_case_insensitive(est_server):
    key, csr = make_csr(unique("cmc-case"))
    headers = {"Content-Type": 'application/pkcs7-mime; smime-type="cmc-request"'}
    reply = cmc_as_user(est_server, self_signed_request(key, csr), headers=headers)
    assert read_cmc(reply, 200).status.status == CmcStatus.SUCCESS


def test_unauthenticated_is_401(est_server):
    key, csr = make_csr(unique("cmc-anon"))
    reply = post_cmc(est_server, self_signed_request(key, csr))
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'
    reply = post_cmc(est_server, self_signed_request(key, csr), user="nobody", password="x")
    assert reply.status == 401
