"""Many clients at once: every enrollment succeeds, gets its own serial, and is recorded."""

from __future__ import annotations

import base64
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.wire.pkcs7 import load_certs_only
from tests.esthttp import PKCS10, b64, connect, make_csr, send, tls_context

CLIENTS = 20
PER_CLIENT = 10


def test_200_enrollments_from_20_parallel_clients(est_server_factory):
    server = est_server_factory()
    passwords = {f"conc-{i:02d}": server.add_user(f"conc-{i:02d}") for i in range(CLIENTS)}
    url = server.est_url() + "/simpleenroll"
    start = threading.Barrier(CLIENTS)

    def client(user: str) -> list[tuple[int, str, bytes, str]]:
        """One client: its own TLS connections, PER_CLIENT enrollments in a row."""
        results = []
        context = tls_context(server.ca_file)
        start.wait(timeout=30)
        for index in range(PER_CLIENT):
            subject = f"{user}-dev-{index}"
            _, der = make_csr(subject)
            connection = connect(server.url, context)
            try:
                reply = send(connection, url, "POST", b64(der), PKCS10, user, passwords[user])
            finally:
                connection.close()
            results.append((reply.status, subject, reply.body, reply.text))
        return results

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        outcomes = [r for rs in pool.map(client, sorted(passwords)) for r in rs]

    assert len(outcomes) == CLIENTS * PER_CLIENT
    failures = [(status, subject, text) for status, subject, _, text in outcomes if status != 200]
    assert not failures, failures[:5]

    issued: dict[str, x509.Certificate] = {}
    for _, subject, body, _ in outcomes:
        [cert] = load_certs_only(base64.b64decode(b"".join(body.split())))
        assert cert.subject.rfc4514_string() == f"CN={subject}"
        issued[format(cert.serial_number, "x")] = cert
    assert len(issued) == CLIENTS * PER_CLIENT, "serial numbers must all be distinct"

    connection = sqlite3.connect(server.data_dir / "estkit.db")
    try:
        rows = connection.execute(
            "SELECT serial, subject, requester, der FROM certificates WHERE kind = 'enroll'"
        ).fetchall()
        events = connection.execute(
            "SELECT count(*) FROM audit_events WHERE action = 'certificate.enroll'"
        ).fetchone()[0]
    finally:
        connection.close()
    assert len(rows) == CLIENTS * PER_CLIENT
    assert {serial for serial, _, _, _ in rows} == set(issued)
    for serial, subject, requester, der in rows:
        cert = issued[serial]
        assert der == cert.public_bytes(serialization.Encoding.DER)
        assert subject == cert.subject.rfc4514_string()
        assert requester == "user:" + subject.removeprefix("CN=").rsplit("-dev-", 1)[0]
    assert events == CLIENTS * PER_CLIENT
