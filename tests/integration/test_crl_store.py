"""CrlPublisher over a real SQLite store with an injected clock: when a CRL is due, numbering
under concurrent signers, which entries are listed, and every CA key type."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from estkit.authority.ca import CertificateAuthority
from estkit.authority.crl import CrlPublisher
from estkit.authority.crl_settings import CrlSettings
from estkit.authority.pki import create_pki
from estkit.authority.revocation import revoke
from estkit.store import CertificateRecord, Store

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_instance(
    tmp_path: Path, key_type: str = "ec-p256", url: str | None = None
) -> tuple[CertificateAuthority, Store]:
    directory = tmp_path / "pki"
    directory.mkdir()
    files, _ = create_pki(directory, "crltest", key_type, ["localhost"], now=T0 - timedelta(days=1))
    ca = CertificateAuthority.load(
        directory / files.root_cert, directory / files.issuing_cert, directory / files.issuing_key
    )
    store = Store(url or f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    return ca, store


def add_certificate(
    store: Store, ca: CertificateAuthority, serial: int, not_after: datetime
) -> str:
    record = CertificateRecord(
        serial=format(serial, "x"),
        label="",
        subject=f"CN=c{serial}",
        sans=(),
        not_before=T0 - timedelta(days=1),
        not_after=not_after,
        key_fingerprint="00" * 32,
        requester="test",
        kind="enroll",
        der=b"\x30\x00",
        issuer_id=ca.issuing_id,
        issued_at=T0 - timedelta(days=1),
    )
    store.record_certificate(record)
    return record.serial


def crl_of(record) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(record.der)


@pytest.fixture
def instance(tmp_path):
    ca, store = make_instance(tmp_path)
    yield ca, store
    store.close()


def test_due_first_then_on_revocation_then_before_next_update(instance):
    ca, store = instance
    clock = Clock(T0)
    settings = CrlSettings(validity=timedelta(days=7), refresh_before=timedelta(days=1))
    publisher = CrlPublisher(ca, store, settings, clock)

    first = publisher.refresh("test")
    assert first is not None and first.number == 1 and first.entries == 0
    assert publisher.refresh("test") is None  # current: nothing to sign

    serial = add_certificate(store, ca, 0x1234, T0 + timedelta(days=30))
    clock.now = T0 + timedelta(hours=1)
    revoke(store, serial, "keyCompromise", "test", clock.now)
    second = publisher.refresh("test")
    assert second is not None and second.number == 2 and second.entries == 1
    assert second.this_update == clock.now
    assert second.next_update == clock.now + timedelta(days=7)

    clock.now = second.next_update - timedelta(days=1, seconds=1)
    assert publisher.refresh("test") is None  # not yet within refresh_before
    clock.now = second.next_update - timedelta(days=1)
    third = publisher.refresh("test")
    assert third is not None and third.number == 3

    crl = crl_of(third)
    assert crl.is_signature_valid(ca.issuing.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    entry = crl.get_revoked_certificate_by_serial_number(0x1234)
    assert entry is not None
    assert entry.revocation_date_utc == T0 + timedelta(hours=1)
    assert store.latest_crl(ca.issuing_id) == third

    actions = [(e.action, e.detail.get("why")) for e in store.audit_events()]
    assert actions == [
        ("crl.generate", "first"),
        ("certificate.revoke", None),
        ("crl.generate", "revocation"),
        ("crl.generate", "schedule"),
    ]


def test_concurrent_signers_never_reuse_a_number(tmp_path, store_url):
    """On SQLite the write lock serialises signers; on PostgreSQL an advisory lock per issuer.
    Each signer has its own Store (its own connections), as separate processes would."""
    ca, store = make_instance(tmp_path, url=store_url)
    signers = [Store(store_url) for _ in range(3)]
    publishers = [CrlPublisher(ca, s, clock=Clock(T0)) for s in signers]
    errors: list[BaseException] = []

    def sign_many(publisher: CrlPublisher) -> None:
        try:
            for _ in range(8):
                publisher.refresh("test", force=True)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=sign_many, args=(p,)) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for signer in signers:
        signer.close()
    try:
        assert errors == []
        events = [e for e in store.audit_events() if e.action == "crl.generate"]
        numbers = [e.detail["number"] for e in events]
        assert sorted(numbers) == list(range(1, 25))
        assert numbers == sorted(numbers), "numbers must grow in commit order"
        assert store.latest_crl(ca.issuing_id).number == 24
    finally:
        store.close()


def test_expired_entries_stay_for_one_crl_after_expiry(instance):
    """RFC 5280 §3.3: an entry may go once it appeared on a CRL issued after the certificate
    expired."""
    ca, store = instance
    clock = Clock(T0)
    publisher = CrlPublisher(ca, store, clock=clock)
    short = add_certificate(store, ca, 0xAAAA, T0 + timedelta(hours=1))
    long = add_certificate(store, ca, 0xBBBB, T0 + timedelta(days=30))
    revoke(store, short, "superseded", "test", T0)
    revoke(store, long, "superseded", "test", T0)

    def listed() -> set[int]:
        record = publisher.refresh("test", force=True)
        return {entry.serial_number for entry in crl_of(record)}

    assert listed() == {0xAAAA, 0xBBBB}
    clock.now = T0 + timedelta(hours=2)  # after 0xAAAA expired: still listed once
    assert listed() == {0xAAAA, 0xBBBB}
    clock.now = T0 + timedelta(hours=3)
    assert listed() == {0xBBBB}
    # Dropping an expired entry is not a revocation: nothing is due.
    assert publisher.refresh("test") is None


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p384", "ed25519"])
def test_every_ca_key_type_signs_a_verifiable_crl(tmp_path, key_type):
    ca, store = make_instance(tmp_path, key_type)
    try:
        serial = add_certificate(store, ca, 0x42, T0 + timedelta(days=1))
        revoke(store, serial, "cessationOfOperation", "test", T0)
        record = CrlPublisher(ca, store, clock=Clock(T0)).refresh("test")
        crl = crl_of(record)
        assert crl.is_signature_valid(ca.issuing.public_key())
        reason = crl.get_revoked_certificate_by_serial_number(0x42).extensions
        assert (
            reason.get_extension_for_class(x509.CRLReason).value.reason
            == x509.ReasonFlags.cessation_of_operation
        )
    finally:
        store.close()


def test_current_publishes_the_first_crl_once(instance):
    ca, store = instance
    publisher = CrlPublisher(ca, store, clock=Clock(T0))
    first = publisher.current("test")
    assert first.number == 1
    assert publisher.current("test") == first


def test_a_row_revoked_by_hand_without_a_time_is_still_listed(instance, tmp_path):
    """Other tools (and tests) set status = 'revoked' with no revoked_at: the CRL must list
    the certificate anyway rather than fail."""
    ca, store = instance
    serial = add_certificate(store, ca, 0x77, T0 + timedelta(days=1))
    connection = sqlite3.connect(tmp_path / "store.db")
    try:
        connection.execute("UPDATE certificates SET status = 'revoked' WHERE serial = ?", (serial,))
        connection.commit()
    finally:
        connection.close()
    record = CrlPublisher(ca, store, clock=Clock(T0)).refresh("test")
    entry = crl_of(record).get_revoked_certificate_by_serial_number(0x77)
    assert entry is not None
    assert entry.revocation_date_utc == T0
