"""Large stores: a million certificate records, a tenth of them revoked.

Seeds the records straight into the certificates table (SQLAlchemy Core executemany, one real
certificate's DER per batch; distinct serials, subjects and key fingerprints), then measures
what an operator and the clients see:

- ``estkit cert list --subject`` as the operator runs it (a whole CLI process), and the
  store query alone;
- a CRL of every revoked entry: ``estkit crl`` (whole command) and the signing path the
  server uses (CrlPublisher.refresh) alone;
- enrollments/s and OCSP response time against the big store, as ratios to an empty one.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import resource
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import Engine, create_engine, func, insert, select
from tests.estserver import ESTKIT, EstServer, start_server
from tests.pki import make_leaf

from bench.instance import fresh_instance
from bench.matrix import Target
from bench.procstat import tree_cpu_seconds
from estkit.authority.ca import CertificateAuthority
from estkit.authority.crl import CrlPublisher
from estkit.config import Config, load_config
from estkit.store import CertificateRecord, Store, schema
from estkit.store.certificate_listing import CertificateFilter, list_certificates
from estkit.store.database import driver_url

BATCH = 10_000
REASONS = ("keyCompromise", "superseded", "cessationOfOperation", "unspecified")


def subject_of(index: int) -> str:
    return f"CN=device-{index:07d}.bench.example,O=Bench Fleet {index % 97}"


def _rows(
    ca: CertificateAuthority, start: int, count: int, every_revoked: int
) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    _, cert = make_leaf(ca.issuing_key, ca.issuing, f"batch-{start}")
    der = cert.public_bytes(serialization.Encoding.DER)
    prefix = secrets.randbits(64) << 32
    rows = []
    for index in range(start, start + count):
        revoked = index % every_revoked == 0
        rows.append(
            {
                "serial": format(prefix | index, "x"),
                "label": "",
                "subject": subject_of(index),
                "sans": json.dumps([f"DNS:device-{index:07d}.bench.example"]),
                "not_before": now - timedelta(hours=1),
                "not_after": now + timedelta(days=365),
                "key_fingerprint": hashlib.sha256(index.to_bytes(8, "big")).hexdigest(),
                "requester": "bench",
                "kind": "enroll",
                "replaces_serial": None,
                "issuer_id": ca.issuing_id,
                "issued_at": now - timedelta(seconds=index),
                "status": "revoked" if revoked else "valid",
                "revoked_at": now - timedelta(seconds=index) if revoked else None,
                "revocation_reason": REASONS[index // every_revoked % len(REASONS)]
                if revoked
                else None,
                "der": der,
            }
        )
    return rows


def seed(config: Config, records: int, revoked: int, progress: Callable[[str], None]) -> float:
    """Insert ``records`` certificates (``revoked`` of them revoked); returns seconds taken."""
    ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
    every = max(1, records // max(revoked, 1))
    engine = create_engine(driver_url(config.store_url))
    started = time.perf_counter()
    try:
        for start in range(0, records, BATCH):
            rows = _rows(ca, start, min(BATCH, records - start), every)
            with engine.begin() as connection:
                connection.execute(insert(schema.certificates), rows)
            if start // BATCH % 10 == 9:
                progress(f"seeded {start + len(rows)} of {records}")
        _settle(engine, config.store_url)
    finally:
        engine.dispose()
    return time.perf_counter() - started


def _settle(engine: Engine, url: str) -> None:
    """What a store that grew over time under a running server looks like.  SQLite: every
    subject indexed, as the server's catch-up task leaves it (the rows went in behind its
    back).  PostgreSQL: what autovacuum does, planner statistics and the visibility map
    (without it an index-only scan, such as the CRL's, still reads every row)."""
    if engine.dialect.name != "postgresql":
        store = Store(url)
        try:
            while store.index_new_subjects():
                pass
        finally:
            store.close()
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE certificates")


def _timed_runs(action: Callable[[], Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def cli_seconds(*args: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system, from the kernel's child accounting) of one
    ``estkit`` command: the CPU time does not grow when other work shares the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([*ESTKIT, *args], check=True, capture_output=True, timeout=300)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


@dataclass(frozen=True)
class OperatorTimes:
    list_cli_ms: float  # median of runs
    list_cli_cpu_ms: float
    list_query_ms: float
    list_matches: int
    crl_cli_s: float
    crl_cli_cpu_s: float
    crl_generate_s: float  # median of forced refreshes
    crl_generate_cpu_s: float  # this process's CPU time for the same (robust to a busy host)
    crl_entries: int
    crl_bytes: int


def operator_times(data_dir: Path, needle: str, runs: int = 5) -> OperatorTimes:
    config = load_config(data_dir)
    list_cli = [
        cli_seconds("cert", "list", "--dir", str(data_dir), "--subject", needle)
        for _ in range(runs)
    ]
    store = Store(config.store_url)
    try:
        now = datetime.now(UTC)
        wanted = CertificateFilter(subject=needle)

        def listing() -> list[CertificateRecord]:
            return list_certificates(config.store_url, config.store_busy_timeout, wanted, now)

        matches = len(listing())
        query = _timed_runs(listing, runs)
        out = data_dir / "bench.crl"
        # Due (the seeded revocations): the command signs the CRL, as after a revocation.
        crl_cli = cli_seconds("crl", "--dir", str(data_dir), "--out", str(out))
        ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
        publisher = CrlPublisher(ca, store, config.crl)
        records = []
        cpu_before = time.process_time()
        generate = _timed_runs(lambda: records.append(publisher.refresh("bench", force=True)), 3)
        generate_cpu = (time.process_time() - cpu_before) / len(generate)
    finally:
        store.close()
    last = records[-1]
    assert last is not None  # forced: a CRL is signed every time
    return OperatorTimes(
        list_cli_ms=1000 * statistics.median(wall for wall, _ in list_cli),
        list_cli_cpu_ms=1000 * statistics.median(cpu for _, cpu in list_cli),
        list_query_ms=1000 * statistics.median(query),
        list_matches=matches,
        crl_cli_s=crl_cli[0],
        crl_cli_cpu_s=crl_cli[1],
        crl_generate_s=statistics.median(generate),
        crl_generate_cpu_s=generate_cpu,
        crl_entries=last.entries,
        crl_bytes=len(last.der),
    )


def ocsp_requests(data_dir: Path, serials: list[str]) -> list[bytes]:
    config = load_config(data_dir)
    ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
    name_hash = hashes.Hash(hashes.SHA1())
    name_hash.update(ca.issuing.subject.public_bytes())
    key_hash = hashes.Hash(hashes.SHA1())
    key_hash.update(_public_key_bits(ca.issuing))
    issuer_name, issuer_key = name_hash.finalize(), key_hash.finalize()
    return [
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(issuer_name, issuer_key, int(serial, 16), hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
        for serial in serials
    ]


def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents (what issuerKeyHash hashes, RFC 6960): for
    the EC P-256 CA, the uncompressed point."""
    return cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def ocsp_latency_ms(server: EstServer, bodies: list[bytes]) -> float:
    """Median time of one OCSP POST over a kept-alive plain-HTTP connection."""
    host, port = server.http_url.split("://")[1].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    times = []
    try:
        for body in bodies:
            started = time.perf_counter()
            connection.request(
                "POST", "/ocsp", body=body, headers={"Content-Type": "application/ocsp-request"}
            )
            response = connection.getresponse()
            data = response.read()
            times.append(time.perf_counter() - started)
            reply = ocsp.load_der_ocsp_response(data)
            assert reply.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, data
    finally:
        connection.close()
    return 1000 * statistics.median(times)


def idle_cpu_ms_per_s(server: EstServer, seconds: float = 5.0) -> float:
    """Server CPU while nothing is asked of it (periodic tasks: CRL and OCSP upkeep)."""
    before = tree_cpu_seconds(server.process.pid)
    time.sleep(seconds)
    return 1000 * (tree_cpu_seconds(server.process.pid) - before) / seconds


def sample_serials(data_dir: Path, count: int) -> list[str]:
    engine = create_engine(driver_url(load_config(data_dir).store_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(schema.certificates.c.serial).order_by(func.random()).limit(count)
            )
            return [row.serial for row in rows]
    finally:
        engine.dispose()


@dataclass(frozen=True)
class ServingTimes:
    enrollments_per_s: float
    cpu_ms_per_enrollment: float
    ocsp_ms: float
    idle_cpu_ms_per_s: float


def serving_times(data_dir: Path, store: str, clients: int, duration: float) -> ServingTimes:
    """Keep-alive enrollments (closed loop) and sequential OCSP requests for stored serials,
    on one worker; and the server's CPU while idle."""
    server = start_server(data_dir, workers=1)
    try:
        idle = idle_cpu_ms_per_s(server)
        target = Target.prepare(server, store, 1, data_dir, clients)
        result = target.run("keepalive", clients, duration)
        bodies = ocsp_requests(data_dir, sample_serials(data_dir, 300))
        ocsp_ms = ocsp_latency_ms(server, bodies)
    finally:
        server.stop()
    return ServingTimes(result.rate, result.cpu_ms_per_enrollment, ocsp_ms, idle)


@dataclass(frozen=True)
class BigStoreResult:
    store: str
    records: int
    revoked: int
    seed_s: float
    needle: str
    empty: ServingTimes
    big: ServingTimes
    operator: OperatorTimes


def measure(
    store: str,
    records: int,
    revoked: int,
    clients: int,
    duration: float,
    directory: Path,
    progress: Callable[[str], None],
) -> BigStoreResult:
    """One instance: serve it empty, seed it, time the operator commands, serve it big."""
    needle = f"device-{records // 2:07d}"[:-1]  # ten subjects: device-NNNNNN0 to ...9
    with fresh_instance(directory / f"big-{store}", store) as data_dir:
        empty = serving_times(data_dir, store, clients, duration)
        progress(f"{store} empty: {empty.enrollments_per_s:.0f}/s, OCSP {empty.ocsp_ms:.1f} ms")
        seed_s = seed(load_config(data_dir), records, revoked, progress)
        progress(f"{store}: seeded {records} records in {seed_s:.0f} s")
        operator = operator_times(data_dir, needle)
        progress(
            f"{store}: cert list --subject {operator.list_cli_ms:.0f} ms, "
            f"CRL {operator.crl_generate_s:.2f} s"
        )
        big = serving_times(data_dir, store, clients, duration)
        progress(f"{store} big: {big.enrollments_per_s:.0f}/s, OCSP {big.ocsp_ms:.1f} ms")
    return BigStoreResult(store, records, revoked, seed_s, needle, empty, big, operator)


def bigstore_table(results: list[BigStoreResult]) -> str:
    lines = [
        "| store | records (revoked) | `cert list --subject` CLI ms, CPU ms (query ms, matches) "
        "| `estkit crl` CLI s, CPU s | CRL generation s, CPU s (entries, MB) "
        "| enrollments/s empty → big (ratio) | server CPU ms/enrollment empty → big "
        "| OCSP ms empty → big (ratio) | idle server CPU ms/s empty → big |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, e, b = r.operator, r.empty, r.big
        lines.append(
            f"| {r.store} | {r.records:,} ({r.revoked:,}) "
            f"| {o.list_cli_ms:.0f}, {o.list_cli_cpu_ms:.0f} ({o.list_query_ms:.1f}, "
            f"{o.list_matches}) | {o.crl_cli_s:.2f}, {o.crl_cli_cpu_s:.2f} "
            f"| {o.crl_generate_s:.2f}, {o.crl_generate_cpu_s:.2f} "
            f"({o.crl_entries:,}, {o.crl_bytes / 1e6:.1f}) "
            f"| {e.enrollments_per_s:.0f} → {b.enrollments_per_s:.0f} "
            f"({b.enrollments_per_s / max(e.enrollments_per_s, 1e-9):.2f}) "
            f"| {e.cpu_ms_per_enrollment:.2f} → {b.cpu_ms_per_enrollment:.2f} "
            f"| {e.ocsp_ms:.2f} → {b.ocsp_ms:.2f} ({b.ocsp_ms / max(e.ocsp_ms, 1e-9):.2f}) "
            f"| {e.idle_cpu_ms_per_s:.1f} → {b.idle_cpu_ms_per_s:.1f} |"
        )
    return "\n".join(lines)
