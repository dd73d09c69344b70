"""`estkit serve --workers N`: one supervisor, N worker processes on the same two ports."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.authority.ca import CertificateAuthority
from estkit.authority.ocsp_settings import OcspSettings
from estkit.authority.pki import create_pki
from estkit.server.responder_lock import SharedResponderKeeper
from estkit.store import Store
from tests.esthttp import PKCS10, b64, connect, make_csr, send, tls_context
from tests.estserver import EstServer, init_instance, run_estkit, start_server
from tests.revocation import http_get

ENROLL_LINE = re.compile(
    r"\[(\d+)\] estkit\.access POST /\.well-known/est/simpleenroll .*status=200"
)
CRL_LINE = re.compile(r"\[(\d+)\] estkit\.access GET /crl/\S+ .*status=200")


def children(pid: int) -> set[int]:
    """Live child processes of pid, from /proc (zombies count as gone)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def two_children(pid: int, without: int = 0) -> set[int] | None:
    """The two workers of the supervisor pid, once there are two and neither is without."""
    found = children(pid)
    return found if len(found) == 2 and without not in found else None


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def enroll_many(server: EstServer, user: str, password: str, count: int, tag: str) -> list[int]:
    """count enrollments, each over a fresh TLS connection (4 at a time); their statuses."""
    context = tls_context(server.ca_file)
    url = server.est_url() + "/simpleenroll"

    def one(index: int) -> int:
        _, der = make_csr(f"{tag}-{index}")
        connection = connect(server.url, context)
        try:
            return send(connection, url, "POST", b64(der), PKCS10, user, password).status
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(count)))


def pids_in(log: str, pattern: re.Pattern[str]) -> list[int]:
    return [int(m.group(1)) for m in pattern.finditer(log)]


@pytest.fixture
def two_workers(tmp_path: Path):
    server = start_server(init_instance(tmp_path / "est-data"), workers=2)
    yield server
    server.stop()


def test_enrollments_spread_over_workers_and_a_killed_worker_is_replaced(two_workers):
    server = two_workers
    supervisor = server.process.pid
    workers = wait_for(lambda: two_children(supervisor), what="two workers")
    password = server.add_user("spread")

    statuses = enroll_many(server, "spread", password, 40, "spread")
    assert statuses == [200] * 40
    served_by = pids_in(server.log(), ENROLL_LINE)
    assert len(served_by) == 40
    assert set(served_by) == workers, "the kernel spreads fresh connections over both workers"

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: two_children(supervisor, victim), what="a replacement worker")
    [newcomer] = replaced - workers
    wait_for(lambda: f"(pid {newcomer}) is serving" in server.log(), what="the newcomer")
    assert re.search(rf"worker \d \(pid {victim}\) killed by SIGKILL", server.log())

    statuses = enroll_many(server, "spread", password, 30, "after")
    assert statuses == [200] * 30
    later = pids_in(server.log(), ENROLL_LINE)[40:]
    assert victim not in later
    assert newcomer in later, "the replacement takes connections on the same port"

    # SIGTERM to the supervisor stops everything, gracefully: exit status 0, no orphans.
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in replaced), "workers outlived their supervisor"
    assert server.process.stdout is not None
    rest = server.process.stdout.read()
    assert "serving EST" not in rest, "the ready lines are printed once, not per worker"
    assert "Traceback" not in server.log()


def test_one_ocsp_responder_and_the_same_crl_from_every_worker(two_workers):
    server = two_workers
    store = server.store()
    try:
        responders = [c for c in store.certificates() if c.kind == "ocsp-responder"]
    finally:
        store.close()
    assert len(responders) == 1, "two workers issued one responder certificate between them"
    ca_dir = server.data_dir / "ca"
    on_disk = x509.load_pem_x509_certificate((ca_dir / "ocsp-responder.pem").read_bytes())
    assert on_disk.serial_number == int(responders[0].serial, 16)
    key = serialization.load_pem_private_key(
        (ca_dir / "ocsp-responder.key").read_bytes(), password=None
    )
    assert key.public_key() == on_disk.public_key()

    password = server.add_user("crl")
    statuses = enroll_many(server, "crl", password, 1, "crl")
    assert statuses == [200]
    issuing = x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes())
    [cdp] = [
        urlsplit(url).path
        for url in _crl_urls(server, issuing)
        if urlsplit(url).path.startswith("/crl/")
    ]
    numbers = set()
    for _ in range(24):  # fresh connections: both workers answer some of them
        reply = http_get(server, cdp)
        assert reply.status == 200
        crl = x509.load_der_x509_crl(reply.body)
        numbers.add(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    assert len(numbers) == 1, numbers
    assert len(set(pids_in(server.log(), CRL_LINE))) == 2, "both workers served the CRL"


def _crl_urls(server: EstServer, issuing: x509.Certificate) -> list[str]:
    """The CDP URLs of a certificate the instance issued (its newest enrollment)."""
    store = server.store()
    try:
        record = next(c for c in reversed(store.certificates()) if c.kind == "enroll")
    finally:
        store.close()
    cert = x509.load_der_x509_certificate(record.der)
    assert cert.issuer == issuing.subject
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [name.value for point in points for name in point.full_name or []]


def test_workers_must_be_a_positive_count(tmp_path):
    directory = init_instance(tmp_path / "est-data")
    for bad in ("0", "-2", "many"):
        result = run_estkit("serve", "--dir", str(directory), "--workers", bad, check=False)
        assert result.returncode == 2
        assert "--workers: must be a whole number from 1 to" in result.stderr


# The responder keeper under a file lock: several processes share the ca/ files ---------------


START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _keepers(tmp_path: Path, count: int, clock: Clock):
    directory = tmp_path / "instance"
    directory.mkdir()
    create_pki(directory, "test", "ec-p256", ["localhost"], now=START - timedelta(days=1))
    ca_dir = directory / "ca"
    ca = CertificateAuthority.load(
        ca_dir / "root.pem", ca_dir / "issuing.pem", ca_dir / "issuing.key"
    )
    Store(f"sqlite:///{tmp_path / 'store.db'}").create_schema()
    stores = [Store(f"sqlite:///{tmp_path / 'store.db'}") for _ in range(count)]
    keepers = [SharedResponderKeeper(ca, s, ca_dir, OcspSettings(), clock) for s in stores]
    return keepers, stores, ca_dir


def _responder_serials(store: Store) -> list[str]:
    return [c.serial for c in store.certificates() if c.kind == "ocsp-responder"]


def test_keepers_starting_together_issue_one_responder_and_renew_once(tmp_path):
    clock = Clock()
    keepers, stores, ca_dir = _keepers(tmp_path, 4, clock)
    try:
        barrier = threading.Barrier(len(keepers))

        def start(keeper: SharedResponderKeeper):
            barrier.wait(timeout=10)
            return keeper.start().certificate

        with ThreadPoolExecutor(max_workers=len(keepers)) as pool:
            started = list(pool.map(start, keepers))
        assert len(_responder_serials(stores[0])) == 1
        assert all(cert == started[0] for cert in started)
        on_disk = x509.load_pem_x509_certificate((ca_dir / "ocsp-responder.pem").read_bytes())
        assert on_disk == started[0]

        clock.now = START + timedelta(days=25)  # less than a third of 30 days left
        with ThreadPoolExecutor(max_workers=len(keepers)) as pool:
            renewed = list(pool.map(lambda k: k.renew_if_due(), keepers))
        assert all(r is not None for r in renewed)
        assert len({r.certificate for r in renewed if r is not None}) == 1
        assert len(_responder_serials(stores[0])) == 2, "one renewal, adopted by the others"
        on_disk = x509.load_pem_x509_certificate((ca_dir / "ocsp-responder.pem").read_bytes())
        assert all(k.current.certificate == on_disk for k in keepers)
        assert all(k.renew_if_due() is None for k in keepers)
    finally:
        for store in stores:
            store.close()


def test_a_bad_anchor_is_reported_once_by_the_supervisor(tmp_path):
    directory = init_instance(tmp_path / "est-data", '[anchors.bad]\ncertificates = "bad.pem"\n')
    (directory / "bad.pem").write_text("not a certificate\n")
    result = run_estkit(
        "serve", "--dir", str(directory), "--port", "0", "--workers", "2", check=False
    )
    assert result.returncode == 1
    assert result.stderr.count("bad.pem holds no PEM certificate") == 1
    assert "worker 0 started" not in result.stderr


def test_a_worker_failing_at_start_stops_the_command(tmp_path):
    directory = init_instance(tmp_path / "est-data")
    (directory / "tls" / "server.pem").write_text("not a certificate\n")  # read by each worker
    result = run_estkit(
        "serve", "--dir", str(directory), "--port", "0", "--workers", "2", check=False
    )
    assert result.returncode == 1
    assert re.search(
        r"estkit: error: worker \d exited with status 1 before it was serving", result.stderr
    )
    assert "serving EST" not in result.stdout
    assert "Traceback" not in result.stderr


def test_workers_stop_when_their_supervisor_is_killed(two_workers):
    workers = wait_for(lambda: two_children(two_workers.process.pid), what="two workers")
    two_workers.process.kill()  # SIGKILL: no chance to stop the workers itself
    two_workers.process.wait(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in workers), what="the workers to stop")
    assert two_workers.log().count("estkit.server shutting down") == 2
