"""Revision 0003's revocation counts, on SQLite and PostgreSQL: the number the CRL's
once-a-second check reads (``crl_state``) equals a real count of the issuer's revoked
certificates after every way a row can change, and an upgrade counts what is already there."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from estkit.store import Store
from estkit.store.database import driver_url
from tests.integration.test_migrations import execute, insert_old_certificate, upgrade_to
from tests.integration.test_store_backends import certificate


def counted(url: str, issuer: str) -> int:
    """The issuer's revoked certificates, counted the slow way."""
    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM certificates "
                        "WHERE status = 'revoked' AND issuer_id = :issuer"
                    ),
                    {"issuer": issuer},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def state_count(store: Store, issuer: str) -> int:
    return store.crl_state(issuer).revoked_count


def issued_by(serial: str, issuer: str, status: str = "valid"):
    return replace(certificate(serial), issuer_id=issuer, status=status)


def test_every_change_of_a_row_keeps_the_count(store, store_url):
    for serial in ("a1", "a2", "a3"):
        store.record_certificate(issued_by(serial, "A"))
    store.record_certificate(issued_by("b1", "B"))
    assert (state_count(store, "A"), state_count(store, "B")) == (0, 0)

    store.revoke_certificate("a1", "keyCompromise", datetime.now(UTC))
    store.revoke_certificate("a2", "superseded", datetime.now(UTC))
    assert state_count(store, "A") == counted(store_url, "A") == 2
    assert state_count(store, "B") == 0

    # A row recorded already revoked (an import).
    store.record_certificate(replace(issued_by("b2", "B", "revoked"), revoked_at=datetime.now(UTC)))
    assert state_count(store, "B") == counted(store_url, "B") == 1

    # Rows edited or deleted by hand: un-revoked, moved to another issuer, removed.
    execute(store_url, "UPDATE certificates SET status = 'valid' WHERE serial = 'a1'")
    assert state_count(store, "A") == counted(store_url, "A") == 1
    execute(store_url, "UPDATE certificates SET issuer_id = 'B' WHERE serial = 'a2'")
    assert (state_count(store, "A"), state_count(store, "B")) == (0, 2)
    execute(store_url, "DELETE FROM certificates WHERE serial = 'b2'")
    assert state_count(store, "B") == counted(store_url, "B") == 1
    # Changes that leave the revoked set alone leave the count alone.
    execute(store_url, "UPDATE certificates SET subject = 'CN=x' WHERE serial = 'a2'")
    execute(store_url, "UPDATE certificates SET status = 'valid' WHERE serial = 'a3'")
    assert (state_count(store, "A"), state_count(store, "B")) == (0, 1)


def test_an_upgrade_counts_the_revocations_already_stored(store_url):
    upgrade_to(store_url, "0002")
    for index in range(5):
        insert_old_certificate(store_url, f"s{index}", "CN=s", issuer="A")
    execute(
        store_url,
        "UPDATE certificates SET status = 'revoked', revoked_at = not_before, "
        "revocation_reason = 'keyCompromise' WHERE serial IN ('s0', 's1', 's2')",
    )
    upgrade_to(store_url, "head")
    store = Store(store_url)
    try:
        assert state_count(store, "A") == counted(store_url, "A") == 3
        store.revoke_certificate("s3", "keyCompromise", datetime.now(UTC))  # triggers work
        assert state_count(store, "A") == 4
    finally:
        store.close()
