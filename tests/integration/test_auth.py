"""Who may enroll: TLS client certificates, third-party anchors, HTTP Basic, one-time secrets,
simplereenroll rules and proof-of-possession linking (RFC 7030 §3.2.3, §3.3, §3.5, §4.2.2)."""

from __future__ import annotations

import base64
import http.client
import sqlite3
import ssl
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.esthttp import (
    PKCS10,
    Reply,
    b64,
    connect,
    issued,
    make_csr,
    new_key,
    request,
    send,
    tls_context,
    write_pair,
)
from tests.estserver import EstServer, init_instance, start_server
from tests.pki import make_ca, make_leaf

# --- helpers -------------------------------------------------------------------------------


def post(
    server: EstServer,
    der: bytes,
    label: str | None = None,
    op: str = "simpleenroll",
    **kwargs,
) -> Reply:
    """POST a CSR to an enrollment operation on a fresh connection."""
    headers = {**PKCS10, **kwargs.pop("headers", {})}
    return request(
        f"{server.est_url(label)}/{op}", server.ca_file, "POST", b64(der), headers, **kwargs
    )


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def enroll_pair(
    server: EstServer, directory: Path, name: str, label: str | None = None, sans=None
) -> tuple[object, x509.Certificate, Path, Path]:
    """Enroll with a fresh Basic user; returns (key, cert, cert file, key file)."""
    password = server.add_user(name)
    key, der = make_csr(name, sans=sans)
    cert = issued(post(server, der, label, user=name, password=password))
    cert_path, key_path = write_pair(directory, name, key, cert)
    return key, cert, cert_path, key_path


def db_execute(server: EstServer, sql: str, params: tuple = ()) -> None:
    """Change the instance's database directly, as another process would."""
    connection = sqlite3.connect(server.data_dir / "estkit.db", timeout=10)
    try:
        connection.execute(sql, params)
        connection.commit()
    finally:
        connection.close()


def tls_unique_of_new_connection(server: EstServer) -> bytes:
    connection = connect(server.url, tls_context(server.ca_file, tls_version="1.2"))
    try:
        binding = connection.sock.get_channel_binding("tls-unique")
    finally:
        connection.close()
    assert binding
    return binding


# --- an instance with a third-party anchor and restricted labels ----------------------------

CUSTOM_TOML = """
[anchors.idevid]
certificates = "idevid.pem"

[labels.mfg]
allow_anchors = ["idevid"]
cn_must_equal_identity = true

[labels.ops]
allow_users = ["ops-*"]

[labels.dev]
extended_key_usage = ["clientAuth", "serverAuth"]
san_types = ["dns"]
"""


class Custom:
    def __init__(self, server: EstServer, idevid_key, idevid_ca: x509.Certificate) -> None:
        self.server = server
        self.idevid_key = idevid_key
        self.idevid_ca = idevid_ca


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("auth-custom") / "est-data"
    init_instance(directory)
    idevid_key, idevid_ca = make_ca("Example Manufacturer IDevID CA")
    (directory / "idevid.pem").write_bytes(idevid_ca.public_bytes(serialization.Encoding.PEM))
    with (directory / "estkit.toml").open("a") as handle:
        handle.write(CUSTOM_TOML)
    server = start_server(directory)
    yield Custom(server, idevid_key, idevid_ca)
    server.stop()


# --- TLS client certificates ----------------------------------------------------------------


def test_own_client_certificate_authenticates_simpleenroll(est_server, tmp_path):
    _, first, cert_path, key_path = enroll_pair(est_server, tmp_path, "tls-holder")
    _, der = make_csr("tls-holder-second")
    # Initial enrollment by certificate is opt-in per label (allow_anchors, empty by default).
    refused = post(est_server, der, cert=cert_path, key=key_path)
    assert refused.status == 403
    assert "allow_anchors" in refused.text
    reply = post(est_server, der, "mtls", cert=cert_path, key=key_path)
    cert = issued(reply)
    assert cert.subject.rfc4514_string() == "CN=tls-holder-second"
    store = est_server.store()
    try:
        record = store.certificate(serial_hex(cert))
    finally:
        store.close()
    assert record is not None
    assert record.kind == "enroll"
    assert record.requester == f"cert:estkit:{serial_hex(first)}:tls-holder"


def test_no_credentials_at_all_is_401_with_challenge(est_server):
    _, der = make_csr("nobody")
    reply = post(est_server, der)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'
    # A bare challenge: clients that authenticate only when challenged read no body.
    assert reply.body == b""


def test_certificate_from_unknown_ca_is_refused(est_server, tmp_path):
    ca_key, ca_cert = make_ca("Stranger CA")
    key, cert = make_leaf(ca_key, ca_cert, "stranger")
    cert_path, key_path = write_pair(tmp_path, "stranger", key, cert)
    _, der = make_csr("stranger")
    for version in ("1.2", "1.3"):
        # The server's TLS layer refuses the certificate: the handshake (or, in TLS 1.3, the
        # first read after it) fails; should it ever get through, the answer must be 403.
        try:
            reply = post(est_server, der, cert=cert_path, key=key_path, tls_version=version)
        except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
            continue
        assert reply.status == 403, reply.text
        assert "trust anchor" in reply.text
    store = est_server.store()
    try:
        assert not [r for r in store.certificates() if r.subject == "CN=stranger"]
    finally:
        store.close()


def test_certificate_signed_with_ca_key_but_not_recorded_is_refused(est_server, tmp_path):
    """A certificate the store does not know was never issued by this server: 403."""
    issuing_key = serialization.load_pem_private_key(
        (est_server.data_dir / "ca" / "issuing.key").read_bytes(), None
    )
    issuing_cert = x509.load_pem_x509_certificate(
        (est_server.data_dir / "ca" / "issuing.pem").read_bytes()
    )
    key, cert = make_leaf(issuing_key, issuing_cert, "forged")
    cert_path, key_path = write_pair(tmp_path, "forged", key, cert)
    _, der = make_csr("forged")
    reply = post(est_server, der, cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "not in this CA's records" in reply.text


# --- third-party anchor (IDevID) ------------------------------------------------------------


def idevid_pair(custom: Custom, directory: Path, cn: str) -> tuple[Path, Path, x509.Certificate]:
    key, cert = make_leaf(custom.idevid_key, custom.idevid_ca, cn)
    cert_path, key_path = write_pair(directory, cn, key, cert)
    return cert_path, key_path, cert


def test_idevid_authenticates_initial_enrollment_on_allowing_label(custom, tmp_path):
    cert_path, key_path, idevid = idevid_pair(custom, tmp_path, "sn-0001")
    _, der = make_csr("sn-0001")
    cert = issued(post(custom.server, der, "mfg", cert=cert_path, key=key_path))
    assert cert.subject.rfc4514_string() == "CN=sn-0001"
    store = custom.server.store()
    try:
        record = store.certificate(serial_hex(cert))
    finally:
        store.close()
    assert record is not None
    assert record.label == "mfg"
    assert record.requester == f"cert:idevid:{serial_hex(idevid)}:sn-0001"


def test_idevid_identity_is_its_cn_on_cn_bound_label(custom, tmp_path):
    cert_path, key_path, _ = idevid_pair(custom, tmp_path, "sn-0002")
    _, der = make_csr("someone-else")
    reply = post(custom.server, der, "mfg", cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "someone-else" in reply.text
    assert "sn-0002" in reply.text


def test_idevid_refused_on_label_not_allowing_it(custom, tmp_path):
    cert_path, key_path, _ = idevid_pair(custom, tmp_path, "sn-0003")
    _, der = make_csr("sn-0003")
    reply = post(custom.server, der, cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "anchor 'idevid'" in reply.text
    assert "default label" in reply.text
    reply = post(custom.server, der, "ops", cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "label 'ops'" in reply.text


def test_idevid_cannot_simplereenroll(custom, tmp_path):
    cert_path, key_path, _ = idevid_pair(custom, tmp_path, "sn-0004")
    _, der = make_csr("sn-0004")
    for label in ("mfg", None):
        reply = post(custom.server, der, label, "simplereenroll", cert=cert_path, key=key_path)
        assert reply.status == 403, reply.text
        assert "issued by this CA" in reply.text


def test_own_certificate_refused_on_idevid_only_label(custom, tmp_path):
    _, _, cert_path, key_path = enroll_pair(custom.server, tmp_path, "own-on-mfg")
    _, der = make_csr("own-on-mfg")
    reply = post(custom.server, der, "mfg", cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "anchor 'estkit'" in reply.text


# --- HTTP Basic -----------------------------------------------------------------------------


def test_basic_right_password(est_server):
    password = est_server.add_user("basic-right")
    _, der = make_csr("basic-right")
    cert = issued(post(est_server, der, user="basic-right", password=password))
    assert cert.subject.rfc4514_string() == "CN=basic-right"


@pytest.mark.parametrize("user", ["basic-wrong", "basic-no-such-user"])
def test_basic_wrong_password_or_user_is_401(est_server, user):
    if user == "basic-wrong":
        est_server.add_user(user)
    _, der = make_csr(user)
    reply = post(est_server, der, user=user, password="not-the-password")
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'
    assert "wrong user name or password" in reply.text
    assert not reply.body.startswith(b"MII")


def test_user_limited_to_iot_is_refused_on_default_label(est_server):
    password = est_server.add_user("iot-only", labels=["iot"])
    _, der = make_csr("iot-only")
    reply = post(est_server, der, user="iot-only", password=password)
    assert reply.status == 403
    assert "user 'iot-only' may not enroll on the default label" in reply.text
    reply = post(est_server, der, "server", user="iot-only", password=password)
    assert reply.status == 403
    assert "label 'server'" in reply.text
    issued(post(est_server, der, "iot", user="iot-only", password=password))


def test_label_allow_users_restricts(custom):
    server = custom.server
    password = server.add_user("ops-alice")
    other = server.add_user("dev-bob")
    _, der = make_csr("x")
    issued(post(server, der, "ops", user="ops-alice", password=password))
    reply = post(server, der, "ops", user="dev-bob", password=other)
    assert reply.status == 403
    assert "user 'dev-bob' is not in allow_users of label 'ops'" in reply.text
    issued(post(server, der, user="dev-bob", password=other))


def test_empty_basic_with_client_certificate_uses_the_certificate(est_server, tmp_path):
    """libest sends ``Authorization: Basic Og==`` on a certificate-only reenroll."""
    key, old, cert_path, key_path = enroll_pair(est_server, tmp_path, "libest-like")
    _, der = make_csr("libest-like", key=key)
    headers = {"Authorization": "Basic Og=="}
    new = issued(
        post(est_server, der, None, "simplereenroll", cert=cert_path, key=key_path, headers=headers)
    )
    assert new.public_key() == old.public_key()
    _, der = make_csr("libest-like-2")
    cert = issued(post(est_server, der, "mtls", cert=cert_path, key=key_path, headers=headers))
    assert cert.subject.rfc4514_string() == "CN=libest-like-2"


def test_empty_basic_without_certificate_is_401(est_server):
    _, der = make_csr("empty-basic")
    reply = post(est_server, der, headers={"Authorization": "Basic Og=="})
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'
    assert reply.body == b""


# --- one-time bootstrap secrets -------------------------------------------------------------


def test_once_secret_works_once(est_server):
    password = est_server.add_user("boot-once", once=True)
    _, der = make_csr("boot-once")
    issued(post(est_server, der, user="boot-once", password=password))
    reply = post(est_server, der, user="boot-once", password=password)
    assert reply.status == 401
    assert "already been used" in reply.text
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'
    store = est_server.store()
    try:
        user = store.user("boot-once")
        assert user is not None
        assert user.consumed_at is not None
        assert len([r for r in store.certificates() if r.requester == "user:boot-once"]) == 1
    finally:
        store.close()


def test_consumed_once_secret_with_wrong_password_does_not_reveal_use(est_server):
    password = est_server.add_user("boot-once-2", once=True)
    _, der = make_csr("boot-once-2")
    issued(post(est_server, der, user="boot-once-2", password=password))
    reply = post(est_server, der, user="boot-once-2", password="guess")
    assert reply.status == 401
    assert "wrong user name or password" in reply.text


def test_once_secret_concurrent_use_issues_exactly_one(est_server):
    password = est_server.add_user("boot-race", once=True)

    def attempt(index: int) -> Reply:
        _, der = make_csr(f"boot-race-{index}")
        return post(est_server, der, user="boot-race", password=password)

    with ThreadPoolExecutor(max_workers=5) as pool:
        replies = list(pool.map(attempt, range(5)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [200, 401, 401, 401, 401], [(r.status, r.text) for r in replies]
    for reply in replies:
        if reply.status == 401:
            assert "already been used" in reply.text
    store = est_server.store()
    try:
        records = [r for r in store.certificates() if r.requester == "user:boot-race"]
    finally:
        store.close()
    assert len(records) == 1


# --- simplereenroll -------------------------------------------------------------------------


def test_reenroll_without_client_certificate_is_403(est_server):
    password = est_server.add_user("re-nocert")
    _, der = make_csr("re-nocert")
    for kwargs in ({}, {"user": "re-nocert", "password": password}):
        reply = post(est_server, der, None, "simplereenroll", **kwargs)
        assert reply.status == 403
        assert "requires the TLS client certificate" in reply.text


def test_reenroll_same_key_is_renewal(est_server, tmp_path):
    key, old, cert_path, key_path = enroll_pair(est_server, tmp_path, "re-renew")
    _, der = make_csr("re-renew", key=key)
    new = issued(post(est_server, der, None, "simplereenroll", cert=cert_path, key=key_path))
    assert new.serial_number != old.serial_number
    assert new.subject == old.subject
    assert new.public_key() == old.public_key()
    store = est_server.store()
    try:
        record = store.certificate(serial_hex(new))
    finally:
        store.close()
    assert record is not None
    assert record.kind == "renew"
    assert record.replaces_serial == serial_hex(old)
    assert record.requester == f"cert:estkit:{serial_hex(old)}:re-renew"


def test_reenroll_new_key_is_rekey(est_server, tmp_path):
    _, old, cert_path, key_path = enroll_pair(est_server, tmp_path, "re-rekey")
    new_private = new_key("ec-p384")
    _, der = make_csr("re-rekey", key=new_private)
    new = issued(post(est_server, der, None, "simplereenroll", cert=cert_path, key=key_path))
    assert new.public_key() == new_private.public_key()
    store = est_server.store()
    try:
        record = store.certificate(serial_hex(new))
    finally:
        store.close()
    assert record is not None
    assert record.kind == "rekey"
    assert record.replaces_serial == serial_hex(old)


def test_reenroll_with_different_subject_is_400(est_server, tmp_path):
    key, _, cert_path, key_path = enroll_pair(est_server, tmp_path, "re-subject")
    _, der = make_csr("re-subject-changed", key=key)
    reply = post(est_server, der, None, "simplereenroll", cert=cert_path, key=key_path)
    assert reply.status == 400
    assert "subject" in reply.text
    assert "CN=re-subject-changed" in reply.text
    assert "CN=re-subject'" in reply.text


def test_reenroll_with_different_san_is_400(custom, tmp_path):
    server = custom.server
    key, _, cert_path, key_path = enroll_pair(
        server, tmp_path, "re-san", "dev", sans=[x509.DNSName("a.example.com")]
    )
    _, der = make_csr("re-san", key=key, sans=[x509.DNSName("b.example.com")])
    reply = post(server, der, "dev", "simplereenroll", cert=cert_path, key=key_path)
    assert reply.status == 400
    assert "subjectAltName" in reply.text
    assert "b.example.com" in reply.text
    assert "a.example.com" in reply.text
    _, der = make_csr("re-san", key=key)
    reply = post(server, der, "dev", "simplereenroll", cert=cert_path, key=key_path)
    assert reply.status == 400
    assert "subjectAltName" in reply.text
    _, der = make_csr("re-san", key=key, sans=[x509.DNSName("a.example.com")])
    issued(post(server, der, "dev", "simplereenroll", cert=cert_path, key=key_path))


def test_reenroll_adding_a_san_is_400(est_server, tmp_path):
    key, _, cert_path, key_path = enroll_pair(est_server, tmp_path, "re-addsan")
    _, der = make_csr("re-addsan", key=key, sans=[x509.DNSName("added.example.com")])
    reply = post(est_server, der, None, "simplereenroll", cert=cert_path, key=key_path)
    assert reply.status == 400
    assert "subjectAltName" in reply.text
    assert "added.example.com" in reply.text


def test_reenroll_only_on_the_label_the_certificate_came_from(est_server, tmp_path):
    """A 30-day iot certificate cannot be turned into a 365-day default-label one."""
    key, old, cert_path, key_path = enroll_pair(est_server, tmp_path, "re-label", "iot")
    _, der = make_csr("re-label", key=key)
    reply = post(est_server, der, None, "simplereenroll", cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "issued on label 'iot'" in reply.text
    assert "default label" in reply.text
    new = issued(post(est_server, der, "iot", "simplereenroll", cert=cert_path, key=key_path))
    assert new.not_valid_after_utc - new.not_valid_before_utc == (
        old.not_valid_after_utc - old.not_valid_before_utc
    )
    store = est_server.store()
    try:
        record = store.certificate(serial_hex(new))
    finally:
        store.close()
    assert record is not None
    assert (record.label, record.kind) == ("iot", "renew")


def test_reenroll_with_revoked_certificate_is_403(est_server, tmp_path):
    key, old, cert_path, key_path = enroll_pair(est_server, tmp_path, "re-revoked")
    store = est_server.store()
    try:
        store.revoke_certificate(serial_hex(old), "keyCompromise", datetime.now(UTC))
    finally:
        store.close()
    _, der = make_csr("re-revoked", key=key)
    reply = post(est_server, der, None, "simplereenroll", cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "certificate revoked" in reply.text
    # A revoked certificate does not authenticate an initial enrollment either.
    reply = post(est_server, der, cert=cert_path, key=key_path)
    assert reply.status == 403
    assert "certificate revoked" in reply.text


# --- proof-of-possession linking (RFC 7030 §3.5) --------------------------------------------


def pop_enroll(server: EstServer, password_for: str, password: str, challenge) -> Reply:
    """Enroll on `pop` over one TLS 1.2 connection; challenge(binding) gives the CSR's value."""
    url = server.est_url("pop") + "/simpleenroll"
    connection = connect(server.url, tls_context(server.ca_file, tls_version="1.2"))
    try:
        assert connection.sock.version() == "TLSv1.2"
        binding = connection.sock.get_channel_binding("tls-unique")
        _, der = make_csr(password_for, challenge_password=challenge(binding))
        return send(connection, url, "POST", b64(der), PKCS10, password_for, password)
    finally:
        connection.close()


def test_pop_linking_with_correct_tls_unique(est_server):
    password = est_server.add_user("pop-ok")
    reply = pop_enroll(est_server, "pop-ok", password, lambda b: base64.b64encode(b).decode())
    cert = issued(reply)
    assert cert.subject.rfc4514_string() == "CN=pop-ok"


def test_pop_linking_missing_challenge_password(est_server):
    password = est_server.add_user("pop-missing")
    reply = pop_enroll(est_server, "pop-missing", password, lambda b: None)
    assert reply.status == 400
    assert "linking" in reply.text
    assert "challengePassword" in reply.text


def test_pop_linking_tls_unique_of_another_connection(est_server):
    password = est_server.add_user("pop-other")
    other = tls_unique_of_new_connection(est_server)
    reply = pop_enroll(
        est_server, "pop-other", password, lambda b: base64.b64encode(other).decode()
    )
    assert reply.status == 400
    assert "linking failed" in reply.text


def test_pop_linking_over_tls13_explains_tls12_is_needed(est_server):
    password = est_server.add_user("pop-tls13")
    url = est_server.est_url("pop") + "/simpleenroll"
    connection = connect(est_server.url, tls_context(est_server.ca_file, tls_version="1.3"))
    try:
        assert connection.sock.version() == "TLSv1.3"
        _, der = make_csr("pop-tls13", challenge_password="AAAA")
        reply = send(connection, url, "POST", b64(der), PKCS10, "pop-tls13", password)
    finally:
        connection.close()
    assert reply.status == 400
    assert "TLS 1.2" in reply.text
    assert "TLSv1.3" in reply.text


def test_server_label_certificate_renews_over_mutual_tls(est_server, tmp_path):
    """A server certificate is also a TLS client certificate, so the server can renew it."""
    sans = [x509.DNSName("web-1.example")]
    key, old, cert_path, key_path = enroll_pair(est_server, tmp_path, "web-1", "server", sans)
    _, der = make_csr("web-1", key=key, sans=sans)
    new = issued(post(est_server, der, "server", "simplereenroll", cert=cert_path, key=key_path))
    assert new.public_key() == old.public_key()
    assert new.serial_number != old.serial_number
