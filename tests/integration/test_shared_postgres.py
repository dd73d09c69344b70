"""Two hosts sharing one PostgreSQL store, as the README's "Several hosts" sets them up: one
``estkit init --db postgresql://...``, then a copy of the instance directory for the second
host (same CA keys, its own files and OCSP responder lock), each serving on its own loopback
ports.  Enrollments through both never collide, a revocation through one is refused by the
other at once, CRL numbers stay monotonic across both, and both OCSP responders agree."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.esthttp import (
    Reply,
    enroll_basic,
    enroll_with_cert,
    issued,
    make_csr,
    write_pair,
)
from tests.estserver import EstServer, init_instance, start_server
from tests.postgres import fresh_database, rows, unreachable_reason
from tests.revocation import cdp_url, crl_number, estkit, http_get, ocsp_get, ok, serial_hex


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """One fresh PostgreSQL database for the module's two hosts; skips without PostgreSQL."""
    reason = unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def hosts(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EstServer, EstServer]]:
    """Host A (``estkit init --db``) and host B (a copy of A's directory), both serving."""
    first = init_instance(tmp_path_factory.mktemp("host-a") / "est", "", "--db", database)
    second = tmp_path_factory.mktemp("host-b") / "est"
    shutil.copytree(first, second)
    assert (second / "ca" / "issuing.key").stat().st_mode & 0o777 == 0o600
    servers: list[EstServer] = []
    try:
        servers.extend(start_server(directory) for directory in (first, second))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@dataclass(frozen=True)
class User:
    name: str
    password: str


@pytest.fixture
def user(hosts: tuple[EstServer, EstServer]) -> User:
    """A Basic user of this test, added through host A's store."""
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    return User(name, hosts[0].add_user(name))


def enroll(server: EstServer, user: User, cn: str | None = None) -> x509.Certificate:
    _, der = make_csr(cn or f"fleet-{uuid.uuid4().hex[:10]}")
    return issued(enroll_basic(server, der, None, user.name, user.password))


def reenroll(server: EstServer, cert_path: Path, key_path: Path, cn: str) -> Reply:
    _, der = make_csr(cn)
    return enroll_with_cert(server, "simplereenroll", der, cert_path, key_path)


def revoke(server: EstServer, cert: x509.Certificate, reason: str = "keyCompromise") -> None:
    """``estkit cert revoke`` on the server's host (its instance directory)."""
    ok(
        estkit(
            "cert", "revoke", "--dir", str(server.data_dir), serial_hex(cert), "--reason", reason
        )
    )


def crl_from(server: EstServer, cert: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL at cert's CDP path, fetched from this server's plain-HTTP listener."""
    reply = http_get(server, urlsplit(cdp_url(cert)).path)
    assert reply.status == 200, reply.text
    return x509.load_der_x509_crl(reply.body)


def issuing(server: EstServer) -> x509.Certificate:
    return x509.load_pem_x509_certificate((server.data_dir / "ca" / "issuing.pem").read_bytes())


def ocsp_status(server: EstServer, cert: x509.Certificate) -> ocsp.OCSPResponse:
    """Ask server about cert and check the answer verifies: signed by a delegated responder
    certificate of the issuing CA."""
    answer = ocsp_get(server, cert)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    [responder] = answer.certificates
    responder.verify_directly_issued_by(issuing(server))
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    key = responder.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # init's default key type, ec-p256
    assert answer.signature_hash_algorithm is not None
    key.verify(
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )
    assert answer.serial_number == cert.serial_number
    return answer


def test_enrollments_through_both_hosts_never_collide(hosts, user, database):
    count = 50
    names = [f"parallel-{i}-{uuid.uuid4().hex[:6]}" for i in range(2 * count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        certs = list(pool.map(lambda i: enroll(hosts[i % 2], user, names[i]), range(2 * count)))
    serials = {serial_hex(cert) for cert in certs}
    assert len(serials) == 2 * count
    stored = rows(
        database,
        "SELECT serial, subject FROM certificates WHERE subject LIKE 'CN=parallel-%%'",
    )
    assert {serial for serial, _ in stored} == serials
    assert sorted(subject for _, subject in stored) == sorted(f"CN={name}" for name in names)
    # Each host put its own plain-HTTP port into the URLs of what it issued: both served.
    ports = {urlsplit(cdp_url(cert)).port for cert in certs}
    assert ports == {urlsplit(server.http_url).port for server in hosts}


def test_revocation_through_one_host_is_refused_by_the_other_at_once(
    hosts, user, tmp_path, database
):
    host_a, host_b = hosts
    key, der = make_csr("device")
    cert = issued(enroll_basic(host_a, der, None, user.name, user.password))
    cert_path, key_path = write_pair(tmp_path, "device", key, cert)
    assert reenroll(host_b, cert_path, key_path, "device").status == 200  # B trusts what A issued

    revoke(host_a, cert)
    revoked_at = time.monotonic()
    refused = reenroll(host_b, cert_path, key_path, "device")
    elapsed = time.monotonic() - revoked_at
    assert refused.status == 403
    assert refused.text.strip() == "certificate revoked"
    assert elapsed < 1.0, f"host B refused the revoked certificate only after {elapsed:.2f}s"

    # A user removed on one host stops authenticating on the other too, also where the
    # other recalls the account from memory: the issuing transaction finds it gone.
    for name in ("recalled-1", "recalled-2"):
        _, der = make_csr(name)
        assert enroll_basic(host_b, der, None, user.name, user.password).status == 200
    assert estkit("user", "remove", "--dir", str(host_a.data_dir), user.name).returncode == 0
    for name in ("after-removal-1", "after-removal-2"):
        _, der = make_csr(name)
        refused = enroll_basic(host_b, der, None, user.name, user.password)
        assert refused.status == 401
        assert refused.text.strip().endswith("wrong user name or password")
    query = "SELECT count(*) FROM certificates WHERE subject LIKE 'CN=after-removal-%%'"
    assert rows(database, query) == [(0,)]


def test_crl_numbers_stay_monotonic_across_hosts(hosts, user, database):
    host_a, host_b = hosts
    certs = [enroll(hosts[i % 2], user) for i in range(6)]
    numbers = [crl_number(crl_from(host, certs[0])) for host in hosts]

    # One at a time, alternating hosts: each revocation is on the next CRL either host serves.
    for i, cert in enumerate(certs[:2]):
        revoke(hosts[i % 2], cert)
        crl = crl_from(hosts[(i + 1) % 2], cert)
        assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        numbers.append(crl_number(crl))
    assert numbers[0] <= numbers[1] < numbers[2] < numbers[3], numbers

    # Then several at once through both hosts, while both servers' refresh tasks run too.
    # Revocations that land together may share one CRL; none is ever left off.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: revoke(hosts[i % 2], certs[i]), range(2, 6)))
    crl_a, crl_b = crl_from(host_a, certs[0]), crl_from(host_b, certs[0])
    assert crl_a.public_bytes(serialization.Encoding.DER) == crl_b.public_bytes(
        serialization.Encoding.DER
    )
    assert crl_number(crl_a) > numbers[-1]
    assert {entry.serial_number for entry in crl_a} >= {cert.serial_number for cert in certs}

    # Every CRL either host or command signed: numbers 1, 2, 3... in signing order, and each
    # lists at least what the one before it listed.
    stored = rows(database, "SELECT number, der FROM crls ORDER BY id")
    assert [number for number, _ in stored] == list(range(1, len(stored) + 1))
    listed: set[int] = set()
    for _, der in stored:
        entries = {entry.serial_number for entry in x509.load_der_x509_crl(bytes(der))}
        assert entries >= listed
        listed = entries


def test_both_ocsp_responders_agree(hosts, user):
    host_a, host_b = hosts
    good, revoked = enroll(host_a, user), enroll(host_b, user)
    # B answers "good" first (and keeps that signed answer for reuse)...
    assert ocsp_status(host_b, revoked).certificate_status == ocsp.OCSPCertStatus.GOOD
    revoke(host_a, revoked, "superseded")
    # ...and still reports the revocation made through A in its very next answer.
    answers = {host.url: ocsp_status(host, revoked) for host in hosts}
    for answer in answers.values():
        assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason == x509.ReasonFlags.superseded
    first, second = answers.values()
    assert first.revocation_time_utc == second.revocation_time_utc
    for host in hosts:
        assert ocsp_status(host, good).certificate_status == ocsp.OCSPCertStatus.GOOD
