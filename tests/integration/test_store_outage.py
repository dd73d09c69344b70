"""The PostgreSQL store going away under a running server, and coming back.

The server reaches PostgreSQL through a TCP proxy the test controls (tests/tcpproxy.py), so
"the database is gone" means what it does in production: open connections are closed and new
ones refused, while the machine's PostgreSQL keeps serving the other tests.  The server must
answer 503 with Retry-After (not hang, not crash, no traceback), keep answering what needs no
database, and serve again by itself once the database is back; a transaction cut short must
leave nothing behind.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from sqlalchemy.exc import DisconnectionError

from estkit.store.pg_ping import ping
from tests.esthttp import (
    Reply,
    enroll_basic,
    enroll_with_cert,
    issued,
    make_csr,
    request,
    write_pair,
)
from tests.estserver import EstServer, init_instance, start_server
from tests.postgres import rows
from tests.revocation import cdp_url, http_get, ocsp_get
from tests.tcpproxy import TcpProxy

RETRY_AFTER = "5"  # [server] retry_after's default
BUSY_TIMEOUT = 2.0
MAX_ANSWER_SECONDS = BUSY_TIMEOUT
"""A refused connection fails at once: no request waits out a timeout."""
HUNG_ANSWER_SECONDS = 2 * BUSY_TIMEOUT + 1.5
"""A database that stopped answering: the pooled connection's check, then one connection
attempt, each bounded by busy_timeout."""
RECOVERY_SECONDS = 5.0


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(postgres_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied_url(postgres_url: str, proxy: TcpProxy) -> str:
    """The test database's URL through the proxy, unencrypted so that the proxy can find a
    transaction's COMMIT."""
    parts = urlsplit(postgres_url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc, query="sslmode=disable"))


@pytest.fixture
def server(proxied_url: str, tmp_path: Path) -> Iterator[EstServer]:
    """An instance whose store is reached through the proxy, ``[store] busy_timeout``
    shortened."""
    directory = init_instance(tmp_path / "est", "", "--db", proxied_url)
    config = directory / "estkit.toml"
    store_table = f"[store]\nbusy_timeout = {BUSY_TIMEOUT}\n"
    config.write_text(config.read_text().replace("[store]\n", store_table, 1))
    server = start_server(directory)
    yield server
    server.stop()


@pytest.fixture
def user(server: EstServer) -> tuple[str, str]:
    return "outage", server.add_user("outage")


def enroll(server: EstServer, user: tuple[str, str], cn: str = "outage-device") -> Reply:
    _, der = make_csr(cn)
    return enroll_basic(server, der, None, *user)


def timed(call, *args):
    started = time.monotonic()
    reply = call(*args)
    return reply, time.monotonic() - started


def assert_unavailable(
    reply: Reply, elapsed: float, cause: str = "OperationalError", bound: float = MAX_ANSWER_SECONDS
) -> None:
    assert reply.status == 503, (reply.status, reply.text)
    assert reply.headers["Retry-After"] == RETRY_AFTER
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert f"the certificate store is unavailable ({cause}); nothing was issued" in reply.text
    assert elapsed < bound, f"the 503 took {elapsed:.1f}s"


def wait_for_log(server: EstServer, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"no '{text}' in the log:\n{server.log()}"
        time.sleep(0.1)


def reenroll(server: EstServer, cert_path: Path, key_path: Path) -> Reply:
    _, der = make_csr("outage-device")
    return enroll_with_cert(server, "simplereenroll", der, cert_path, key_path)


def served_again(server: EstServer, user: tuple[str, str]) -> None:
    """Enrollment succeeds again within RECOVERY_SECONDS, without restarting the server."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while (reply := enroll(server, user)).status == 503:
        assert time.monotonic() < deadline, "enrollment did not resume after the outage"
        time.sleep(0.2)
    issued(reply)


def assert_recovered(server: EstServer, cert: x509.Certificate, crl_path: str) -> None:
    """Everything that reads the store answers again, the CRL task says so, and the log
    holds one line for the whole outage and no traceback."""
    assert http_get(server, crl_path).status == 200
    assert ocsp_get(server, cert).response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    wait_for_log(server, "refresh the CRL works again")

    log = server.log()
    assert "Traceback" not in log
    assert log.count("could not refresh the CRL") == 1, log


def test_outage_answers_503_and_service_resumes_by_itself(server, proxy, user, tmp_path):
    key, der = make_csr("outage-device")
    cert = issued(enroll_basic(server, der, None, *user))
    cert_path, key_path = write_pair(tmp_path, "device", key, cert)
    cacerts = request(server.est_url() + "/cacerts", server.ca_file)
    assert cacerts.status == 200

    proxy.stop()
    assert_unavailable(*timed(enroll, server, user))
    assert_unavailable(*timed(reenroll, server, cert_path, key_path))
    # What needs no database is still served: the CA certificates over EST and plain HTTP.
    assert request(server.est_url() + "/cacerts", server.ca_file).body == cacerts.body
    assert http_get(server, "/ca/issuing.crt").status == 200
    # The CRL is read from the store: 503 too; OCSP says tryLater (RFC 6960 §4.2.1), as an
    # OCSP response, rather than guess "good".
    crl_path = urlsplit(cdp_url(cert)).path
    assert_unavailable(*timed(http_get, server, crl_path))
    assert ocsp_get(server, cert).response_status == ocsp.OCSPResponseStatus.TRY_LATER
    # The background CRL refresh says so once, and keeps trying.
    wait_for_log(server, "could not refresh the CRL: the certificate store is unavailable")
    time.sleep(1.5)  # more failed refreshes (one per second): still one line in the log
    assert server.process.poll() is None

    proxy.start()
    served_again(server, user)
    assert reenroll(server, cert_path, key_path).status == 200
    assert_recovered(server, cert, crl_path)


def test_a_transaction_cut_before_commit_leaves_nothing(server, proxy, user, postgres_url):
    marker = f"cut-{uuid.uuid4().hex[:12]}"
    proxy.cut_before_commit(marker.encode())
    reply, elapsed = timed(enroll, server, user, marker)
    assert proxy.cut.is_set(), "the enrollment's transaction never reached its COMMIT"
    assert_unavailable(reply, elapsed, bound=HUNG_ANSWER_SECONDS)
    subject = f"CN={marker}"
    assert rows(postgres_url, "SELECT serial FROM certificates WHERE subject = %s", subject) == []
    assert (
        rows(postgres_url, "SELECT id FROM audit_events WHERE detail LIKE %s", f"%{marker}%") == []
    )

    # Only that connection was lost: the next attempt is served, and recorded once.
    cert = issued(enroll(server, user, marker))
    [(serial,)] = rows(postgres_url, "SELECT serial FROM certificates WHERE subject = %s", subject)
    assert serial == format(cert.serial_number, "x")
    assert "Traceback" not in server.log()


def test_a_database_that_stops_answering_gets_503_in_bounded_time(server, proxy, user):
    cert = issued(enroll(server, user))
    proxy.freeze()  # connections stay open, nothing comes back: a hung database
    try:
        reply, elapsed = timed(enroll, server, user)
        assert_unavailable(reply, elapsed, "ConnectionTimeout", HUNG_ANSWER_SECONDS)
        wait_for_log(server, "could not refresh the CRL: the certificate store is unavailable", 10)
        assert server.process.poll() is None
    finally:
        proxy.thaw()
    served_again(server, user)
    assert_recovered(server, cert, urlsplit(cdp_url(cert)).path)


def test_the_connection_check_is_bounded(proxied_url, proxy):
    """store/pg_ping.py on its own: a live connection passes, a dropped one fails at once, a
    silent one fails after the timeout instead of waiting for ever."""
    connect = psycopg.connect
    with closing(connect(proxied_url)) as live, closing(connect(proxied_url)) as dropped:
        ping(live, 1.0)
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(DisconnectionError, match="did not answer within 1 seconds"):
            ping(live, 1.0)
        assert 1.0 <= time.monotonic() - started < 2.0
        proxy.stop()
        with pytest.raises(DisconnectionError, match="the connection is broken"):
            ping(dropped, 1.0)
