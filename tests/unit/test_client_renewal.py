"""Renewal decisions (threshold, injected clock), backoff, the watch loop, and retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.client.client import with_retries
from estkit.client.errors import GaveUpWaiting, RetryLater, ServerUnreachable
from estkit.client.renewal import (
    RenewalResult,
    Threshold,
    backoff,
    parse_duration,
    watch,
)
from estkit.durations import format_duration

START = datetime(2030, 1, 1, tzinfo=UTC)


def certificate(days=30):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("text", "renew_at"),
    [
        ("33%", START + timedelta(days=30) - timedelta(days=30) * 0.33),
        ("50%", START + timedelta(days=15)),
        ("7d", START + timedelta(days=23)),
        ("12h", START + timedelta(days=29, hours=12)),
        ("90m", START + timedelta(days=30) - timedelta(minutes=90)),
        ("30s", START + timedelta(days=30) - timedelta(seconds=30)),
    ],
)
def test_threshold_renew_at(text, renew_at):
    assert Threshold.parse(text).renew_at(certificate()) == renew_at


@pytest.mark.parametrize("text", ["0%", "100%", "abc", "7w", "-1d", "%", ""])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(ValueError):
        Threshold.parse(text)


def test_durations():
    assert parse_duration("1h") == timedelta(hours=1)
    assert parse_duration("45") == timedelta(seconds=45)
    assert format_duration(timedelta(days=7)) == "7d"
    assert format_duration(timedelta(minutes=90)) == "90m"
    assert str(Threshold.parse("33%")) == "renew with less than 33% of the lifetime left"


def test_backoff_doubles_and_is_capped_by_the_interval():
    assert [backoff(n, 3600) for n in range(1, 8)] == [60, 120, 240, 480, 960, 1920, 3600]
    assert backoff(3, 100) == 100


class FakeRenewer:
    """Scripted outcomes: an exception, or (renewed, seconds until due)."""

    def __init__(self, outcomes, clock):
        self.outcomes = list(outcomes)
        self.clock = clock
        self.cert = certificate()

    def now(self):
        return self.clock[0]

    def renew_if_due(self):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        renewed, until_due = outcome
        return RenewalResult(renewed, self.cert, self.now() + timedelta(seconds=until_due))


def test_watch_backs_off_resets_after_success_and_sleeps_until_due():
    clock = [START]
    down = ServerUnreachable("down")
    renewer = FakeRenewer(
        [down, down, down, (True, 7200), (False, 300), down, (False, 100000)], clock
    )
    delays, errors, results = [], [], []

    def sleep(seconds):
        delays.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    watch(
        renewer,
        3600,
        sleep=sleep,
        iterations=7,
        on_result=results.append,
        on_error=lambda e, d: errors.append(d),
    )
    # failures: 60, 120, 240; success: min(interval, until due); failure again starts at 60
    assert delays == [60, 120, 240, 3600, 300, 60]
    assert errors == [60, 120, 240, 60]
    assert [r.renewed for r in results] == [True, False, False]


def test_watch_does_not_spin_when_a_new_certificate_is_due_at_once():
    clock = [START]
    renewer = FakeRenewer([(True, -5), (True, -5)], clock)
    delays = []
    watch(renewer, 3600, sleep=delays.append, iterations=2)
    assert delays == [60]


def test_with_retries_resends_until_success():
    answers = [RetryLater(202, 3), RetryLater(503, 0), "done"]
    sent, slept, notes = [], [], []
    now = [0.0]

    def operation():
        sent.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    result = with_retries(
        operation,
        600,
        sleep=sleep,
        clock=lambda: now[0],
        on_wait=lambda e, w: notes.append((e.status, w)),
    )
    assert result == "done" and len(sent) == 3
    assert slept == [3, 1]  # Retry-After 0 still waits a second
    assert notes == [(202, 0.0), (503, 3.0)]


def test_with_retries_gives_up_before_waiting_past_max_wait():
    now = [0.0]

    def operation():
        raise RetryLater(202, 10, "pending approval")

    def sleep(seconds):
        now[0] += seconds

    with pytest.raises(GaveUpWaiting, match="pending approval") as info:
        with_retries(operation, 25, sleep=sleep, clock=lambda: now[0])
    assert info.value.waited == 20  # waited 10 + 10; a third wait would end at 30 > 25
