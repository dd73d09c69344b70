"""estkit benchmark: enrollments/s, latency and server CPU per enrollment.

    .venv/bin/python -m bench.run [--duration 10] [--clients 4] [--modes ...]

Starts a fresh instance (EC P-256 CA, SQLite store) with `estkit serve`, drives it from
separate load processes with pre-generated EC P-256 CSRs, reads the server's CPU time from
/proc (utime + stime of the server process and its threads), prints one table and writes
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.esthttp import PKCS10, request, write_pair
from tests.estserver import EstServer, init_instance, start_server

from bench.load import Job, run_job

MODES = ("tls12-new", "tls13-new", "keepalive", "reenroll-mtls")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    mode: str
    store: str
    workers: int
    enrollments: int
    failures: int
    seconds: float
    cpu_ms_per_enrollment: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.enrollments / self.seconds


def server_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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


def client_pairs(server: EstServer, directory: Path, password: str, count: int):
    """Per load process: a certificate and key from the server, for mutual-TLS reenroll."""
    pairs = []
    for index in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        body = make_csr(key, f"bench-mtls-{index}")
        reply = request(
            server.est_url() + "/simpleenroll",
            server.ca_file,
            "POST",
            body,
            PKCS10,
            user="bench",
            password=password,
        )
        assert reply.status == 200, reply.text
        [cert] = reply.certificates()
        pairs.append(
            (
                write_pair(directory, f"client-{index}", key, cert),
                make_csr(key, f"bench-mtls-{index}"),
            )
        )
    return pairs


def run_mode(
    server: EstServer,
    mode: str,
    clients: int,
    duration: float,
    password: str,
    csrs: list[bytes],
    pairs,
) -> Result:
    host, port = server.url.split("://")[1].rsplit(":", 1)
    jobs = []
    for index in range(clients):
        cert_file = key_file = None
        bodies = csrs[index::clients]
        if mode == "reenroll-mtls":
            (cert_path, key_path), body = pairs[index]
            cert_file, key_file, bodies = str(cert_path), str(key_path), [body]
        jobs.append(
            Job(
                mode,
                host,
                int(port),
                str(server.ca_file),
                "bench",
                password,
                bodies,
                duration,
                cert_file,
                key_file,
            )
        )
    cpu_before = server_cpu_seconds(server.process.pid)
    with ProcessPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(run_job, jobs))
    cpu = server_cpu_seconds(server.process.pid) - cpu_before
    latencies = [value for values, _ in outcomes for value in values]
    failures = sum(failed for _, failed in outcomes)
    count = len(latencies)
    return Result(
        mode=mode,
        store="sqlite",
        workers=1,
        enrollments=count,
        failures=failures,
        seconds=duration,
        cpu_ms_per_enrollment=1000 * cpu / max(count, 1),
        p50_ms=1000 * percentile(latencies, 0.50),
        p99_ms=1000 * percentile(latencies, 0.99),
    )


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def table(results: list[Result]) -> str:
    lines = [
        "| mode | store | workers | enrollments/s | server CPU ms/enrollment "
        "| p50 ms | p99 ms | failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.store} | {r.workers} | {r.rate:.0f} | {r.cpu_ms_per_enrollment:.2f} "
            f"| {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.failures} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per mode")
    parser.add_argument("--clients", type=int, default=4, help="load processes")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="estkit-bench-") as tmp:
        directory = Path(tmp)
        server = start_server(init_instance(directory / "est-data", "", "--key-type", "ec-p256"))
        try:
            password = server.add_user("bench")
            keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(64)]
            csrs = [make_csr(key, f"bench-{i}") for i, key in enumerate(keys)]
            pairs = client_pairs(server, directory, password, args.clients)
            results = []
            for mode in args.modes:
                result = run_mode(server, mode, args.clients, args.duration, password, csrs, pairs)
                print(
                    f"{mode}: {result.rate:.0f}/s, {result.cpu_ms_per_enrollment:.2f} ms CPU",
                    file=sys.stderr,
                )
                results.append(result)
        finally:
            server.stop()

    report = table(results)
    print(report)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.results.write_text(
        "# estkit benchmark results\n\n"
        f"Measured {stamp} on {machine()}; load generator on the same machine "
        f"({args.clients} processes, closed loop, {args.duration:g} s per mode, pre-generated "
        "EC P-256 CSRs, EC P-256 CA). Server CPU is utime+stime of the server process from "
        "/proc divided by successful enrollments.\n\n" + report + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
