"""Automatic renewal: when a certificate is due, simplereenroll over mutual TLS and install.

The decision uses an injected clock (``now``) so tests can move time. Installing uses the
crash-safe pair replacement of :mod:`estkit.client.files`; on any failure the files in use
are left untouched and the error is raised for the caller to report. :func:`watch` repeats
this forever (or for a bounded number of rounds in tests), backing off exponentially after
failures.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from estkit import durations
from estkit.client.client import EstClient, with_retries
from estkit.client.csr import CsrTemplate, generate_key, key_type_of, signing_key
from estkit.client.errors import BadResponse, EstClientError, RetryLater
from estkit.client.files import (
    CannotWrite,
    Pair,
    PairError,
    certificates_pem,
    check_new_files,
    key_pem,
    load_certificate,
    load_key,
    recover_pair,
    replace_pair,
    write_file,
    write_key,
)
from estkit.client.transport import ClientCertificate
from estkit.client.trust import chain_for

DEFAULT_BEFORE = durations.RENEW_BEFORE
DEFAULT_INTERVAL = 3600.0
RETRY_BASE = 60.0

Clock = Callable[[], datetime]


class RenewalError(EstClientError):
    """Renewal cannot proceed for a local reason (expired certificate, files not a pair)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``7d``; a bare number is seconds."""
    value = text.strip()
    return durations.parse_duration(value + "s" if value.replace(".", "", 1).isdigit() else value)


@dataclass(frozen=True)
class Threshold:
    """When to renew: a share of the total lifetime left (``33%``), or a time left (``7d``)."""

    fraction: float | None = None
    margin: timedelta | None = None

    @classmethod
    def parse(cls, text: str) -> Threshold:
        value = text.strip()
        if value.endswith("%"):
            try:
                percent = float(value[:-1])
            except ValueError:
                percent = -1.0
            if not 0 < percent < 100:
                raise ValueError(f"{text!r}: a percentage must be between 0 and 100 (e.g. 33%)")
            return cls(fraction=percent / 100)
        try:
            return cls(margin=parse_duration(value))
        except ValueError:
            raise ValueError(
                f"{text!r} is neither a percentage of the lifetime (33%) nor a duration (7d)"
            ) from None

    def renew_at(self, cert: x509.Certificate) -> datetime:
        """The moment from which the certificate is due for renewal."""
        not_after = cert.not_valid_after_utc
        if self.fraction is not None:
            lifetime = not_after - cert.not_valid_before_utc
            return not_after - lifetime * self.fraction
        assert self.margin is not None
        return not_after - self.margin

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"renew with less than {self.fraction * 100:g}% of the lifetime left"
        assert self.margin is not None
        return f"renew with less than {durations.format_duration(self.margin)} left"


def subject_alt_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


@dataclass(frozen=True)
class Reenrolled:
    """The outcome of a reenroll: the new certificate and where it was written."""

    certificate: x509.Certificate
    cert_path: Path
    key_path: Path
    rekeyed: bool
    recovered: str | None = None


@dataclass(frozen=True)
class RenewalResult:
    """One renewal check: renewed or not, the certificate now in use, and when it is due."""

    renewed: bool
    certificate: x509.Certificate
    renew_at: datetime
    recovered: str | None = None


class Renewer:
    """Renews one certificate/key pair with simplereenroll (RFC 7030 §4.2.2).

    The current pair authenticates the TLS connection; the CSR keeps the certificate's
    subject and subjectAltName; ``rekey`` makes a new key of the same type.
    """

    def __init__(
        self,
        url: str,
        trust_anchors: Sequence[x509.Certificate] | str | Path,
        pair: Pair,
        *,
        label: str | None = None,
        threshold: Threshold | None = None,
        rekey: bool = False,
        now: Clock = utcnow,
        timeout: float = 30.0,
        max_wait: float = 600.0,
        sleep: Callable[[float], None] | None = None,
        on_wait: Callable[[RetryLater, float], None] | None = None,
    ) -> None:
        self.url = url
        self.trust_anchors = trust_anchors
        self.pair = pair
        self.label = label
        self.threshold = threshold or Threshold.parse(DEFAULT_BEFORE)
        self.rekey = rekey
        self.now = now
        self.timeout = timeout
        self.max_wait = max_wait
        self.sleep = sleep
        self.on_wait = on_wait

    def current(self) -> x509.Certificate:
        return load_certificate(self.pair.cert)

    def renew_if_due(self) -> RenewalResult:
        """Renew in place when the threshold is reached; the files change only on success."""
        recovered = recover_pair(self.pair)
        cert = self.current()
        renew_at = self.threshold.renew_at(cert)
        if self.now() < renew_at:
            return RenewalResult(False, cert, renew_at, recovered)
        new = self.reenroll().certificate
        return RenewalResult(True, new, self.threshold.renew_at(new), recovered)

    def reenroll(
        self, out_cert: Path | None = None, out_key: Path | None = None, force: bool = False
    ) -> Reenrolled:
        """simplereenroll now; in place (crash-safe) unless ``out_cert`` is given."""
        recovered = recover_pair(self.pair)
        if out_cert is None and out_key is not None:
            raise ValueError("--out-key needs --out-cert")
        if out_cert is not None and self.rekey and out_key is None:
            raise ValueError("with a new key (--rekey) give --out-key as well as --out-cert")
        if out_cert is not None:
            check_new_files([out_cert, out_key], force)
        cert = self.current()
        key = signing_key(load_key(self.pair.key))
        if cert.public_key() != key.public_key():
            raise RenewalError(
                f"{self.pair.cert} and {self.pair.key} are not a pair (the key does not match "
                f"the certificate); restore them, e.g. from {self.pair.backup_cert.name} and "
                f"{self.pair.backup_key.name}"
            )
        if self.now() >= cert.not_valid_after_utc:
            raise RenewalError(
                f"{self.pair.cert} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
                "reenrollment needs a valid certificate: enroll again (estkit enroll)"
            )
        client = EstClient(
            self.url,
            self.trust_anchors,
            ClientCertificate(self.pair.cert, self.pair.key),
            label=self.label,
            timeout=self.timeout,
        )
        cacerts = client.cacerts()
        attributes = client.csrattrs()
        new_key = signing_key(generate_key(key_type_of(key))) if self.rekey else key
        template = CsrTemplate(
            new_key, cert.subject, subject_alt_names(cert), attributes.wants_pop_linking
        )
        # The same request on every retry; with tls-unique linking it cannot be the same.
        csr = template if template.link_pop else template.build(None)
        enrollment = with_retries(
            lambda: client.reenroll(csr), self.max_wait, sleep=self.sleep, on_wait=self.on_wait
        )
        issued = enrollment.certificate
        if issued.public_key() != new_key.public_key():
            raise BadResponse("the server's certificate is not for the key in the request")
        pool = [*enrollment.extra_certificates, *cacerts.certificates]
        cert_pem = certificates_pem([issued, *chain_for(issued, pool)])
        if out_cert is None:
            replace_pair(self.pair, cert_pem, key_pem(new_key) if self.rekey else None)
            return Reenrolled(issued, self.pair.cert, self.pair.key, self.rekey, recovered)
        if out_key is not None:
            write_key(out_key, new_key, overwrite=force)
        write_file(out_cert, cert_pem, overwrite=force)
        return Reenrolled(issued, out_cert, out_key or self.pair.key, self.rekey, recovered)


def run_hook(command: str, pair: Pair) -> int:
    """Run ``--exec`` through the shell with ESTKIT_CERT and ESTKIT_KEY set; its exit status."""
    environment = os.environ | {"ESTKIT_CERT": str(pair.cert), "ESTKIT_KEY": str(pair.key)}
    # The operator's own shell command (e.g. "systemctl reload nginx"), run as given.
    return subprocess.run(command, shell=True, env=environment, check=False).returncode  # noqa: S602


def backoff(failures: int, interval: float, base: float = RETRY_BASE) -> float:
    """Seconds to wait after ``failures`` consecutive failures: base, 2*base, ..., interval."""
    return float(min(interval, base * 2 ** max(0, failures - 1)))


LOCAL_ERRORS = (EstClientError, PairError, CannotWrite, OSError, ValueError)


def watch(
    renewer: Renewer,
    interval: float = DEFAULT_INTERVAL,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_result: Callable[[RenewalResult], object] | None = None,
    on_error: Callable[[Exception, float], None] | None = None,
    iterations: int | None = None,
    retry_base: float = RETRY_BASE,
) -> None:
    """Check (and renew) every ``interval`` seconds, sooner when the renewal falls due.

    After a failure the next attempt comes after ``retry_base`` seconds, doubling with each
    further failure, never more than ``interval``. ``iterations`` bounds the rounds (tests).
    """
    failures = 0
    rounds = 0
    while iterations is None or rounds < iterations:
        rounds += 1
        try:
            result = renewer.renew_if_due()
        except LOCAL_ERRORS as exc:
            failures += 1
            delay = backoff(failures, interval, retry_base)
            if on_error is not None:
                on_error(exc, delay)
        else:
            failures = 0
            if on_result is not None:
                on_result(result)
            until_due = (result.renew_at - renewer.now()).total_seconds()
            # Already due again right after a renewal: the threshold exceeds the lifetime the
            # server gives; wait as after a failure rather than renew in a tight loop.
            delay = min(interval, until_due if until_due > 0 else retry_base)
        if iterations is None or rounds < iterations:
            sleep(delay)
