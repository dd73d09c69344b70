"""The enrollment matrix: each mode against a fresh instance per store and worker count, in a
closed loop (peak throughput), then an open loop paced at 80% of that peak (latency under a
steady load, which the closed loop cannot show: it slows its clients down instead of
queueing them)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.esthttp import PKCS10, request, write_pair
from tests.estserver import EstServer, start_server

from bench.instance import fresh_instance
from bench.load import Job, run_job
from bench.procstat import tree_cpu_seconds
from bench.report import markdown_table

MODES = ("tls12-new", "tls13-new", "keepalive", "reenroll-mtls")
OPEN_LOOP_SHARE = 0.8


@dataclass(frozen=True)
class Result:
    mode: str
    store: str
    workers: int
    loop: str  # "closed", or "open N/s"
    enrollments: int
    failures: int
    seconds: float
    cpu_ms_per_enrollment: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.enrollments / self.seconds


def make_csr(key: ec.EllipticCurvePrivateKey, cn: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER))


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Target:
    """A running server with what the load processes need to enroll against it."""

    server: EstServer
    store: str
    workers: int
    user: str
    password: str
    csrs: list[bytes]
    pairs: list[tuple[tuple[Path, Path], bytes]]

    @classmethod
    def prepare(
        cls, server: EstServer, store: str, workers: int, directory: Path, clients: int
    ) -> Target:
        """A Basic account, 64 pre-generated CSRs, and per load process an issued certificate
        and key for mutual-TLS reenroll."""
        user = f"bench-{os.urandom(4).hex()}"  # an instance may be prepared more than once
        password = server.add_user(user)
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(64)]
        csrs = [make_csr(key, f"bench-{i}") for i, key in enumerate(keys)]
        pairs = []
        for index in range(clients):
            key = ec.generate_private_key(ec.SECP256R1())
            body = make_csr(key, f"bench-mtls-{index}")
            reply = request(
                server.est_url() + "/simpleenroll",
                server.ca_file,
                "POST",
                body,
                PKCS10,
                user=user,
                password=password,
            )
            assert reply.status == 200, reply.text
            [cert] = reply.certificates()
            pairs.append((write_pair(directory, f"client-{index}", key, cert), body))
        return cls(server, store, workers, user, password, csrs, pairs)

    def jobs(
        self,
        mode: str,
        clients: int,
        duration: float,
        rate: float | None = None,
        count: int | None = None,
    ) -> list[Job]:
        host, port = self.server.url.split("://")[1].rsplit(":", 1)
        jobs = []
        for index in range(clients):
            cert_file = key_file = None
            bodies = self.csrs[index::clients] or self.csrs
            if mode == "reenroll-mtls":
                (cert_path, key_path), body = self.pairs[index % len(self.pairs)]
                cert_file, key_file, bodies = str(cert_path), str(key_path), [body]
            jobs.append(
                Job(
                    mode,
                    host,
                    int(port),
                    str(self.server.ca_file),
                    self.user,
                    self.password,
                    bodies,
                    duration,
                    cert_file,
                    key_file,
                    rate=None if rate is None else rate / clients,
                    phase=index / clients,
                    count=None if count is None else -(-count // clients),
                )
            )
        return jobs

    def run(
        self,
        mode: str,
        clients: int,
        duration: float,
        rate: float | None = None,
        count: int | None = None,
    ) -> Result:
        """One mode for ``duration`` seconds (or ``count`` requests) from ``clients`` load
        processes; closed loop, or open at ``rate`` enrollments/s in all."""
        jobs = self.jobs(mode, clients, duration, rate, count)
        cpu_before = tree_cpu_seconds(self.server.process.pid)
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=clients) as pool:
            outcomes = list(pool.map(run_job, jobs))
        seconds = time.perf_counter() - started if count is not None else duration
        cpu = tree_cpu_seconds(self.server.process.pid) - cpu_before
        latencies = [value for values, _ in outcomes for value in values]
        count = len(latencies)
        return Result(
            mode=mode,
            store=self.store,
            workers=self.workers,
            loop="closed" if rate is None else f"open {rate:.0f}/s",
            enrollments=count,
            failures=sum(failed for _, failed in outcomes),
            seconds=seconds,
            cpu_ms_per_enrollment=1000 * cpu / max(count, 1),
            p50_ms=1000 * percentile(latencies, 0.50),
            p99_ms=1000 * percentile(latencies, 0.99),
        )


@dataclass(frozen=True)
class MatrixPlan:
    stores: Sequence[str]
    workers: Sequence[int]
    modes: Sequence[str]
    clients: int
    duration: float
    open_loop_modes: Sequence[str]
    """Paced at 80% of their closed-loop peak, on the first store and worker count only."""


def run_matrix(plan: MatrixPlan, directory: Path, progress: Callable[[str], None]) -> list[Result]:
    results: list[Result] = []
    first = True
    for store in plan.stores:
        for workers in plan.workers:
            name = f"{store}-{workers}w"
            with fresh_instance(directory / name, store) as data_dir:
                server = start_server(data_dir, workers=workers)
                try:
                    target = Target.prepare(server, store, workers, data_dir, plan.clients)
                    for mode in plan.modes:
                        peak = target.run(mode, plan.clients, plan.duration)
                        results.append(peak)
                        progress(f"{name} {mode}: {peak.rate:.0f}/s closed loop")
                        if first and mode in plan.open_loop_modes and peak.enrollments:
                            paced = target.run(
                                mode,
                                2 * plan.clients,  # room for a queue to form
                                plan.duration,
                                OPEN_LOOP_SHARE * peak.rate,
                            )
                            results.append(paced)
                            progress(f"{name} {mode}: p99 {paced.p99_ms:.1f} ms at {paced.loop}")
                finally:
                    server.stop()
            first = False
    return results


def matrix_table(results: list[Result]) -> str:
    header = ("mode", "store", "workers", "load", "enrollments/s", "server CPU ms/enrollment")
    return markdown_table(
        (*header, "p50 ms", "p99 ms", "failures"),
        (
            (
                r.mode,
                r.store,
                str(r.workers),
                r.loop,
                f"{r.rate:.0f}",
                f"{r.cpu_ms_per_enrollment:.2f}",
                f"{r.p50_ms:.1f}",
                f"{r.p99_ms:.1f}",
                str(r.failures),
            )
            for r in results
        ),
    )
