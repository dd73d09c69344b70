"""The store's contract on SQLite and on PostgreSQL alike: conflicts are told apart by asking
the database (never by parsing a driver's message), time zones and bytes round-trip, and the
read-then-write steps stay serialised under concurrency."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from estkit.store import (
    CertificateRecord,
    OnceSecretConsumed,
    OpenRequestExists,
    SerialCollision,
    Store,
    StoreUnavailable,
    TooManyOpenRequests,
    UserChanged,
    UserExists,
    UserRecord,
)
from estkit.store.database import driver_url

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def certificate(
    serial: str, issued_at: datetime = T0, der: bytes = b"\x30\x00"
) -> CertificateRecord:
    return CertificateRecord(
        serial=serial,
        label="",
        subject=f"CN={serial}",
        sans=("DNS:a.example",),
        not_before=issued_at,
        not_after=issued_at + timedelta(days=1),
        key_fingerprint="00" * 32,
        requester="test",
        kind="enroll",
        der=der,
        issuer_id="issuer",
        issued_at=issued_at,
    )


def record(store: Store, writing: str, record: CertificateRecord, **options: object) -> None:
    """Record a certificate from a thread (record_certificate) or from a coroutine
    (record_certificate_async, committed by the group's writer thread)."""
    if writing == "thread":
        store.record_certificate(record, **options)  # type: ignore[arg-type]
    else:
        asyncio.run(store.record_certificate_async(record, **options))  # type: ignore[arg-type]


WRITING = ["thread", "coroutine"]


@pytest.mark.parametrize("writing", WRITING)
def test_serial_collision_is_recognised(store, writing):
    store.record_certificate(certificate("abc"))
    with pytest.raises(SerialCollision):
        record(store, writing, certificate("abc"))


@pytest.mark.parametrize("writing", WRITING)
def test_a_refused_write_is_not_taken_for_a_collision(store, store_url, writing):
    """A constraint that has nothing to do with the serial: 503, not a serial retry, and the
    one-time secret of the refused enrollment stays unused."""
    refuse = (
        "ALTER TABLE certificates ADD CONSTRAINT refuse CHECK (subject <> 'CN=refused')"
        if store_url.startswith("postgresql")
        else "CREATE TRIGGER refuse BEFORE INSERT ON certificates WHEN NEW.subject = "
        "'CN=refused' BEGIN SELECT RAISE(ABORT, 'serial refused'); END"
    )
    engine = create_engine(driver_url(store_url))
    with engine.begin() as connection:
        connection.execute(text(refuse))
    engine.dispose()
    user = UserRecord(name="once", secret_hash="h", labels=None, once=True, created_at=T0)
    store.add_user(user)
    with pytest.raises(UserExists):
        store.add_user(user)
    with pytest.raises(StoreUnavailable, match="refused the write"):
        record(store, writing, certificate("refused"), consume_once_user="once")
    assert store.user("once").consumed_at is None
    record(store, writing, certificate("01"), consume_once_user="once")
    with pytest.raises(OnceSecretConsumed):
        record(store, writing, certificate("02"), consume_once_user="once")
    assert store.certificate("02") is None


@pytest.mark.parametrize("writing", WRITING)
def test_a_recalled_account_is_confirmed_in_the_issuing_transaction(store, writing):
    """The account an enrollment was authenticated as from memory must still be stored as it
    was when the certificate is committed: removed, or removed and added again (a new
    secret), it is refused with UserChanged and nothing is written."""
    account = UserRecord(name="dev", secret_hash="h1", labels=("iot",), once=False, created_at=T0)
    store.add_user(account)
    record(store, writing, certificate("01"), account=account)
    assert store.certificate("01") is not None
    store.remove_user("dev")
    with pytest.raises(UserChanged):
        record(store, writing, certificate("02"), account=account)
    replaced = UserRecord(name="dev", secret_hash="h2", labels=("iot",), once=False, created_at=T0)
    store.add_user(replaced)
    with pytest.raises(UserChanged):
        record(store, writing, certificate("03"), account=account)
    with pytest.raises(UserChanged):
        store.confirm_user(account)
    relabelled = UserRecord(name="dev", secret_hash="h2", labels=None, once=False, created_at=T0)
    with pytest.raises(UserChanged):
        record(store, writing, certificate("04"), account=relabelled)
    assert [store.certificate(s) for s in ("02", "03", "04")] == [None, None, None]
    record(store, writing, certificate("05"), account=replaced)
    store.confirm_user(replaced)
    assert store.certificate("05") is not None


def test_hot_reads_see_every_commit_at_once(store, store_url):
    """The reads of every enrollment (a user, a certificate by serial) run on a connection
    their thread keeps on SQLite: each sees what was committed just before it, and none
    holds a snapshot open in between (a WAL checkpoint can truncate the log)."""
    assert store.user("late") is None and store.certificate("beef") is None
    store.add_user(UserRecord(name="late", secret_hash="h", labels=None, once=False, created_at=T0))
    asyncio.run(store.record_certificate_async(certificate("beef")))
    assert store.user("late").name == "late"
    assert store.certificate("beef").serial == "beef"
    store.remove_user("late")
    assert store.user("late") is None
    if store_url.startswith("sqlite"):
        assert store.local_reads
        engine = create_engine(store_url)
        with engine.connect() as connection:
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        engine.dispose()
        assert busy == 0
    else:
        assert not store.local_reads


def test_bytes_and_time_zones_round_trip(store):
    der = bytes(range(256)) * 4  # every byte value, NUL included: bytea on PostgreSQL
    elsewhere = T0.astimezone(timezone(timedelta(hours=-7)))
    store.record_certificate(certificate("ff", issued_at=elsewhere, der=der))
    record = store.certificate("ff")
    assert record is not None
    assert record.der == der
    assert record.issued_at == T0 and record.issued_at.tzinfo == UTC
    assert record.sans == ("DNS:a.example",)
    with pytest.raises(StoreUnavailable):  # a naive time is a bug, refused before the SQL
        store.record_certificate(certificate("fe", issued_at=T0.replace(tzinfo=None)))


def test_identical_open_requests_are_one(store):
    store.add_request("manual", "user:a", b"\x30\x00", "f" * 64, T0)
    with pytest.raises(OpenRequestExists):
        store.add_request("manual", "user:a", b"\x30\x00", "f" * 64, T0)


def test_max_pending_holds_under_concurrent_submissions(store_url, store):
    """Count-then-insert: on PostgreSQL serialised by an advisory lock per requester."""
    stores = [Store(store_url) for _ in range(6)]
    start = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def submit(index: int, own: Store) -> None:
        start.wait(timeout=30)
        try:
            own.add_request("manual", "user:b", b"\x30\x00", f"{index:064x}", T0, max_pending=2)
            outcomes.append("queued")
        except TooManyOpenRequests:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for own in stores:
        own.close()
    assert sorted(outcomes) == ["queued"] * 2 + ["refused"] * 4
    assert len(store.requests("pending")) == 2
