"""Every certificate is durably recorded before it is returned; a store that cannot write
means 503 with Retry-After and no certificate."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.esthttp import Reply, enroll_basic, issued, make_csr
from tests.estserver import EstServer, init_instance, start_server

# --- helpers -------------------------------------------------------------------------------


def db_path(server: EstServer) -> Path:
    return server.data_dir / "estkit.db"


def raw_connection(server: EstServer) -> sqlite3.Connection:
    """A connection of our own, outside estkit: sees only what the server committed."""
    connection = sqlite3.connect(db_path(server), timeout=10, isolation_level=None)
    connection.row_factory = sqlite3.Row
    return connection


def raw_rows(server: EstServer, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    connection = raw_connection(server)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def stored_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def issuing_id(server: EstServer) -> str:
    issuing = x509.load_pem_x509_certificate((server.data_dir / "ca" / "issuing.pem").read_bytes())
    return issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def certificate_count(server: EstServer) -> int:
    return raw_rows(server, "SELECT count(*) AS n FROM certificates")[0]["n"]


# --- records --------------------------------------------------------------------------------


def test_enrollment_is_recorded_and_committed(est_server):
    password = est_server.add_user("store-alice")
    sans = [
        x509.DNSName("rec.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.44")),
    ]
    _, der = make_csr("rec.example.com", sans=sans)
    cert = issued(enroll_basic(est_server, der, "server", "store-alice", password))

    rows = raw_rows(est_server, "SELECT * FROM certificates WHERE serial = ?", (serial_hex(cert),))
    assert len(rows) == 1
    row = rows[0]
    assert row["der"] == cert.public_bytes(serialization.Encoding.DER)
    assert row["subject"] == "CN=rec.example.com"
    assert json.loads(row["sans"]) == ["DNS:rec.example.com", "IP:192.0.2.44"]
    assert stored_time(row["not_before"]) == cert.not_valid_before_utc
    assert stored_time(row["not_after"]) == cert.not_valid_after_utc
    assert row["key_fingerprint"] == spki_sha256(cert)
    assert row["requester"] == "user:store-alice"
    assert row["label"] == "server"
    assert row["kind"] == "enroll"
    assert row["replaces_serial"] is None
    assert row["status"] == "valid"
    assert row["issuer_id"] == issuing_id(est_server)

    events = raw_rows(
        est_server, "SELECT * FROM audit_events WHERE subject = ?", (serial_hex(cert),)
    )
    assert len(events) == 1
    event = events[0]
    assert event["action"] == "certificate.enroll"
    assert event["actor"] == "user:store-alice"
    assert event["source"] == "127.0.0.1"
    assert json.loads(event["detail"]) == {"label": "server", "subject": "CN=rec.example.com"}
    assert abs((stored_time(event["at"]) - stored_time(row["issued_at"])).total_seconds()) < 1


def test_default_label_record_and_store_api_agree(est_server):
    password = est_server.add_user("store-bob")
    _, der = make_csr("store-bob-device")
    cert = issued(enroll_basic(est_server, der, None, "store-bob", password))
    store = est_server.store()
    try:
        record = store.certificate(serial_hex(cert))
        events = [e for e in store.audit_events() if e.subject == serial_hex(cert)]
    finally:
        store.close()
    assert record is not None
    assert record.label == ""
    assert record.sans == ()
    assert record.der == cert.public_bytes(serialization.Encoding.DER)
    assert record.key_fingerprint == spki_sha256(cert)
    assert record.not_after == cert.not_valid_after_utc
    assert record.requester == "user:store-bob"
    assert [e.action for e in events] == ["certificate.enroll"]


def test_refused_request_records_nothing(est_server):
    password = est_server.add_user("store-refused")
    before = certificate_count(est_server)
    _, der = make_csr("refused", sans=[x509.DNSName("refused.example.com")])
    reply = enroll_basic(est_server, der, None, "store-refused", password)
    assert reply.status == 403
    assert not raw_rows(est_server, "SELECT 1 FROM certificates WHERE subject = 'CN=refused'")
    assert not raw_rows(est_server, "SELECT 1 FROM audit_events WHERE actor = 'user:store-refused'")
    assert certificate_count(est_server) == before


# --- a store that cannot write --------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory):
    """An instance whose store gives up on a locked database after half a second."""
    directory = init_instance(tmp_path_factory.mktemp("store-busy") / "est-data")
    config = directory / "estkit.toml"
    text = config.read_text()
    table = '[store]\nurl = "sqlite:///estkit.db"\n'
    assert table in text
    config.write_text(text.replace(table, table + "busy_timeout = 0.5\n"))
    server = start_server(directory)
    yield server
    server.stop()


def assert_unavailable(reply: Reply) -> None:
    assert reply.status == 503, f"{reply.status}: {reply.text}"
    assert reply.headers["Retry-After"] == "5"
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "unavailable" in reply.text or "refused the write" in reply.text
    assert "nothing was issued" in reply.text
    assert b"MII" not in reply.body


def test_write_lock_held_elsewhere_is_503_then_recovers(busy_server):
    password = busy_server.add_user("busy-locked")
    before = certificate_count(busy_server)
    blocker = raw_connection(busy_server)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        _, der = make_csr("while-locked")
        assert_unavailable(enroll_basic(busy_server, der, None, "busy-locked", password))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert certificate_count(busy_server) == before
    assert not raw_rows(busy_server, "SELECT 1 FROM certificates WHERE subject = 'CN=while-locked'")

    _, der = make_csr("after-lock")
    cert = issued(enroll_basic(busy_server, der, None, "busy-locked", password))
    rows = raw_rows(
        busy_server, "SELECT der FROM certificates WHERE serial = ?", (serial_hex(cert),)
    )
    assert [r["der"] for r in rows] == [cert.public_bytes(serialization.Encoding.DER)]


@pytest.mark.parametrize("message", ["certificates are read-only", "no serial numbers today"])
def test_insert_aborted_by_trigger_is_503_and_consumes_nothing(busy_server, message):
    user = f"busy-trigger-{len(message)}"
    password = busy_server.add_user(user, once=True)
    before = certificate_count(busy_server)
    trigger = (
        "CREATE TRIGGER refuse_certificates BEFORE INSERT ON certificates "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )
    connection = raw_connection(busy_server)
    try:
        connection.execute(trigger)
        _, der = make_csr("while-refused")
        reply = enroll_basic(busy_server, der, None, user, password)
        assert_unavailable(reply)
        # The store's refusal is reported as such, not as a serial-number collision.
        assert "refused the write" in reply.text
    finally:
        connection.execute("DROP TRIGGER IF EXISTS refuse_certificates")
        connection.close()
    assert certificate_count(busy_server) == before
    # The transaction was rolled back whole: the one-time secret is still unused.
    [row] = raw_rows(busy_server, "SELECT consumed_at FROM users WHERE name = ?", (user,))
    assert row["consumed_at"] is None
    assert not raw_rows(
        busy_server, "SELECT 1 FROM audit_events WHERE actor = ?", (f"user:{user}",)
    )

    _, der = make_csr("after-trigger")
    cert = issued(enroll_basic(busy_server, der, None, user, password))
    assert raw_rows(busy_server, "SELECT 1 FROM certificates WHERE serial = ?", (serial_hex(cert),))
    [row] = raw_rows(busy_server, "SELECT consumed_at FROM users WHERE name = ?", (user,))
    assert row["consumed_at"] is not None


def test_retry_after_follows_the_configuration(tmp_path):
    directory = init_instance(tmp_path / "est-data")
    config = directory / "estkit.toml"
    text = config.read_text()
    config.write_text(text.replace("[server]\n", "[server]\nretry_after = 17\n", 1))
    server = start_server(directory)
    try:
        password = server.add_user("retry-after")
        connection = raw_connection(server)
        try:
            connection.execute(
                "CREATE TRIGGER refuse_certificates BEFORE INSERT ON certificates "
                "BEGIN SELECT RAISE(ABORT, 'read-only'); END"
            )
        finally:
            connection.close()
        _, der = make_csr("retry-after")
        reply = enroll_basic(server, der, None, "retry-after", password)
        assert reply.status == 503
        assert reply.headers["Retry-After"] == "17"
    finally:
        server.stop()
