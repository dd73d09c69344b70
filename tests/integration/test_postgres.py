"""The store on a real PostgreSQL: ``estkit init --db postgresql://...``, then every flow of a
running server (enroll, reenroll, once-secrets, revocation, CRL, OCSP, manual approval) and
many enrollments at once, with the records read back from the database."""

from __future__ import annotations

import base64
import http.client
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from urllib.parse import urlsplit

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from estkit.store.migrate import head_revision
from estkit.wire.pkcs7 import load_certs_only
from tests.esthttp import (
    PKCS10,
    b64,
    connect,
    enroll_with_cert,
    make_csr,
    request,
    send,
    tls_context,
)
from tests.estserver import EstServer, run_estkit
from tests.revocation import crl_number, enroll, estkit, failed, fetch_crl, ok, serial_hex

MANUAL_TOML = """
[labels.manual]
approval = "manual"
retry_after = 1
"""


@pytest.fixture
def pg_server(est_server_factory, postgres_url) -> EstServer:
    return est_server_factory(MANUAL_TOML, "--db", postgres_url)


def rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute(sql, params).fetchall()


def test_init_writes_the_url_and_creates_no_sqlite_file(pg_server, postgres_url):
    text = (pg_server.data_dir / "estkit.toml").read_text()
    assert f'[store]\nurl = "{postgres_url}"\n' in text
    assert not (pg_server.data_dir / "estkit.db").exists()
    [(revision,)] = rows(postgres_url, "SELECT version_num FROM estkit_schema_version")
    assert revision == head_revision()
    # init recorded the server's TLS certificate and its audit event in PostgreSQL.
    kinds = {kind for (kind,) in rows(postgres_url, "SELECT kind FROM certificates")}
    assert "init" in kinds
    assert rows(postgres_url, "SELECT 1 FROM audit_events WHERE action = 'instance.init'")


def test_enroll_reenroll_revoke_crl_ocsp(pg_server, postgres_url, tmp_path):
    first = enroll(pg_server, tmp_path, cn="pg-device")
    store = pg_server.store()
    try:
        record = store.certificate(first.serial)
        assert record is not None
        assert record.der == first.cert.public_bytes(serialization.Encoding.DER)  # bytea
        assert record.issued_at.tzinfo == UTC and record.not_after == first.cert.not_valid_after_utc
    finally:
        store.close()

    # Re-enrollment over mutual TLS with the first certificate: linked to it in the store.
    _, der = make_csr("pg-device")
    reply = enroll_with_cert(pg_server, "simplereenroll", der, first.cert_path, first.key_path)
    assert reply.status == 200, reply.text
    [renewed] = reply.certificates()
    [(replaces,)] = rows(
        postgres_url,
        "SELECT replaces_serial FROM certificates WHERE serial = %s",
        serial_hex(renewed),
    )
    assert replaces == first.serial

    before = crl_number(fetch_crl(first.cert))
    ok(
        estkit(
            "cert",
            "revoke",
            "--dir",
            str(pg_server.data_dir),
            first.serial,
            "--reason",
            "keyCompromise",
        )
    )
    crl = fetch_crl(first.cert)
    assert crl_number(crl) > before
    assert crl.get_revoked_certificate_by_serial_number(first.cert.serial_number) is not None
    assert "already revoked" in failed(
        estkit(
            "cert",
            "revoke",
            "--dir",
            str(pg_server.data_dir),
            first.serial,
            "--reason",
            "superseded",
        )
    )

    issuer = x509.load_pem_x509_certificate(
        (pg_server.data_dir / "ca" / "issuing.pem").read_bytes()
    )
    for cert, expected in (
        (first.cert, ocsp.OCSPCertStatus.REVOKED),
        (renewed, ocsp.OCSPCertStatus.GOOD),
    ):
        query = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
        answer = ocsp_post(pg_server, query.public_bytes(serialization.Encoding.DER))
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status == expected


def ocsp_post(server: EstServer, der: bytes) -> ocsp.OCSPResponse:
    parts = urlsplit(server.http_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(
            "POST", "/ocsp", body=der, headers={"Content-Type": "application/ocsp-request"}
        )
        response = connection.getresponse()
        assert response.status == 200
        return ocsp.load_der_ocsp_response(response.read())
    finally:
        connection.close()


def test_once_secret_is_consumed_once(pg_server, postgres_url):
    password = pg_server.add_user("pg-once", once=True)
    url = pg_server.est_url() + "/simpleenroll"
    _, der = make_csr("pg-once")
    assert (
        request(url, pg_server.ca_file, "POST", b64(der), PKCS10, "pg-once", password).status == 200
    )
    again = request(url, pg_server.ca_file, "POST", b64(der), PKCS10, "pg-once", password)
    assert again.status == 401 and "already been used" in again.text
    [(consumed,)] = rows(postgres_url, "SELECT consumed_at FROM users WHERE name = 'pg-once'")
    assert consumed is not None


def test_once_secret_raced_from_many_connections_issues_one_certificate(pg_server, postgres_url):
    password = pg_server.add_user("pg-race", once=True)
    url = pg_server.est_url() + "/simpleenroll"
    start = threading.Barrier(8)

    def attempt(index: int) -> int:
        _, der = make_csr(f"pg-race-{index}")
        start.wait(timeout=30)
        return request(url, pg_server.ca_file, "POST", b64(der), PKCS10, "pg-race", password).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(8)))
    assert statuses.count(200) == 1, statuses
    assert set(statuses) == {200, 401}
    [(count,)] = rows(
        postgres_url, "SELECT count(*) FROM certificates WHERE requester = 'user:pg-race'"
    )
    assert count == 1


def test_manual_approval_flow(pg_server, postgres_url):
    password = pg_server.add_user("pg-manual")
    url = pg_server.est_url("manual") + "/simpleenroll"
    _, der = make_csr("pg-manual")
    first = request(url, pg_server.ca_file, "POST", b64(der), PKCS10, "pg-manual", password)
    assert first.status == 202, first.text
    # An identical resubmission does not queue a second request (partial unique index).
    assert (
        request(url, pg_server.ca_file, "POST", b64(der), PKCS10, "pg-manual", password).status
        == 202
    )
    [(request_id, status)] = rows(postgres_url, "SELECT id, status FROM requests")
    assert status == "pending"
    ok(
        run_estkit(
            "request", "approve", "--dir", str(pg_server.data_dir), str(request_id), check=False
        )
    )
    done = request(url, pg_server.ca_file, "POST", b64(der), PKCS10, "pg-manual", password)
    assert done.status == 200, done.text
    [cert] = done.certificates()
    [(status, serial)] = rows(
        postgres_url, "SELECT status, serial FROM requests WHERE id = %s", request_id
    )
    assert (status, serial) == ("issued", serial_hex(cert))


def test_100_enrollments_from_10_threads_all_distinct_and_recorded(pg_server, postgres_url):
    clients, per_client = 10, 10
    passwords = {f"pg-conc-{i}": pg_server.add_user(f"pg-conc-{i}") for i in range(clients)}
    url = pg_server.est_url() + "/simpleenroll"
    start = threading.Barrier(clients)

    def client(user: str) -> list[tuple[int, str, bytes]]:
        results = []
        context = tls_context(pg_server.ca_file)
        start.wait(timeout=30)
        for index in range(per_client):
            subject = f"{user}-{index}-{uuid.uuid4().hex[:6]}"
            _, der = make_csr(subject)
            connection = connect(pg_server.url, context)
            try:
                reply = send(connection, url, "POST", b64(der), PKCS10, user, passwords[user])
            finally:
                connection.close()
            results.append((reply.status, reply.text, reply.body))
        return results

    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = [r for rs in pool.map(client, sorted(passwords)) for r in rs]
    assert [(s, t) for s, t, _ in outcomes if s != 200] == []

    serials = set()
    for _, _, body in outcomes:
        [cert] = load_certs_only(base64.b64decode(b"".join(body.split())))
        serials.add(serial_hex(cert))
    assert len(serials) == clients * per_client
    stored = rows(postgres_url, "SELECT serial FROM certificates WHERE kind = 'enroll'")
    assert {serial for (serial,) in stored} == serials
    [(events,)] = rows(
        postgres_url, "SELECT count(*) FROM audit_events WHERE action = 'certificate.enroll'"
    )
    assert events == clients * per_client


def test_init_refuses_a_database_that_holds_a_store(pg_server, postgres_url, tmp_path):
    result = estkit("init", "--dir", str(tmp_path / "second"), "--db", postgres_url)
    assert "already holds an estkit store" in failed(result)
    assert not (tmp_path / "second").exists()  # refused before anything was created


def test_init_refuses_an_unreachable_database(tmp_path):
    result = estkit(
        "init", "--dir", str(tmp_path / "d"), "--db", "postgresql://postgres@127.0.0.1:1/none"
    )
    assert "unavailable" in failed(result)
    assert not (tmp_path / "d").exists()


def test_init_refuses_other_databases(tmp_path):
    result = estkit("init", "--dir", str(tmp_path / "d"), "--db", "mysql://x/y")
    assert "--db must be a postgresql:// or sqlite:/// URL" in failed(result)
