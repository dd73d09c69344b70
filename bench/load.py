"""Load-generator processes: each runs a closed loop of EST requests and reports latencies."""

from __future__ import annotations

import base64
import http.client
import ssl
import time
from dataclasses import dataclass

BASIC_HEADERS = {"Content-Type": "application/pkcs10"}


@dataclass(frozen=True)
class Job:
    """What one load process does."""

    mode: str  # tls12-new, tls13-new, keepalive, reenroll-mtls
    host: str
    port: int
    ca_file: str
    user: str
    password: str
    csrs: list[bytes]  # base64 bodies, used round-robin
    duration: float
    cert_file: str | None = None
    key_file: str | None = None
    rate: float | None = None
    """Open loop: requests per second this process starts on a fixed schedule (None: closed
    loop, the next request as soon as the previous one is answered)."""
    phase: float = 0.0
    """Open loop: this process's offset, as a fraction of its interval, so that several
    processes interleave their requests instead of sending them together."""
    count: int | None = None
    """Stop after this many requests (before the duration if it comes first)."""


def _context(job: Job) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=job.ca_file)
    if job.mode == "tls12-new" or job.mode == "reenroll-mtls":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    if job.cert_file:
        context.load_cert_chain(job.cert_file, job.key_file)
    return context


def run_job(job: Job) -> tuple[list[float], int]:
    """(latencies in seconds of successful requests, failures).

    In the open loop, latency counts from when the request was due, not from when it was
    sent: a slow answer that delays the next requests is charged to them as well (no
    coordinated omission)."""
    context = _context(job)
    token = base64.b64encode(f"{job.user}:{job.password}".encode()).decode()
    headers = dict(BASIC_HEADERS)
    path = "/.well-known/est/simpleenroll"
    if job.mode == "reenroll-mtls":
        path = "/.well-known/est/simplereenroll"
    else:
        headers["Authorization"] = f"Basic {token}"
    latencies: list[float] = []
    failures = 0
    connection: http.client.HTTPSConnection | None = None
    begun = time.perf_counter()
    deadline = begun + job.duration
    index = 0
    while time.perf_counter() < deadline and (job.count is None or index < job.count):
        body = job.csrs[index % len(job.csrs)]
        started = time.perf_counter()
        if job.rate is not None:
            due = begun + (index + job.phase) / job.rate
            if due > started:
                time.sleep(due - started)
            started = due
        index += 1
        try:
            if connection is None:
                connection = http.client.HTTPSConnection(
                    job.host, job.port, context=context, timeout=30
                )
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            connection = None
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
        if job.mode != "keepalive" and connection is not None:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()
    return latencies, failures
