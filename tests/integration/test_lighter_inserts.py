"""Revision 0004: an enrollment's INSERT touches fewer indexes, and SQLite's subject search
index is brought up to date in batches, yet every query is still served by an index and
``cert list --subject`` still finds every certificate."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from estkit.store import Store
from estkit.store.certificate_listing import CertificateFilter, _query, list_certificates
from estkit.store.crls import _revoked_entries  # what publish_crl reads
from estkit.store.database import driver_url
from estkit.store.subject_search import FTS_TABLE, PROGRESS_TABLE
from tests.estserver import init_instance, start_server
from tests.integration.test_migrations import downgrade_to, insert_old_certificate, upgrade_to
from tests.integration.test_store_backends import T0, certificate
from tests.revocation import enroll


def add(store: Store, serial: str, subject: str) -> None:
    store.record_certificate(replace(certificate(serial), subject=subject))


def found(store: Store, value: str) -> list[str]:
    wanted = CertificateFilter(subject=value)
    return [r.serial for r in list_certificates(store.url, 5.0, wanted, T0)]


def query(url: str, sql: str, *parameters: Any) -> list[Any]:
    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as connection:
            return list(connection.exec_driver_sql(sql, parameters).all())
    finally:
        engine.dispose()


def indexed(url: str, value: str) -> int:
    """How many rows the FTS5 table itself matches (not the listing's union)."""
    sql = f"SELECT count(*) FROM {FTS_TABLE} WHERE subject MATCH ?"
    return int(query(url, sql, f'"{value}"')[0][0])


def check_index(url: str) -> None:
    """FTS5's own check of its index against the certificates; raises if they differ."""
    engine = create_engine(driver_url(url))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('integrity-check')"
            )
    finally:
        engine.dispose()


def mark(url: str) -> int:
    return int(query(url, f"SELECT indexed_through FROM {PROGRESS_TABLE}")[0][0])


@pytest.fixture
def sqlite_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    yield store
    store.close()


def test_new_certificates_are_found_before_and_after_the_catch_up(sqlite_store):
    store = sqlite_store
    add(store, "a1", "CN=alpha-one,O=Example")
    add(store, "b1", "CN=beta,O=Example")
    assert indexed(store.url, "alpha") == 0  # the INSERT did not index it
    assert found(store, "ALPHA") == ["a1"]  # the listing reads the rows above the mark

    assert store.index_new_subjects() == 2
    assert indexed(store.url, "alpha") == 1
    assert mark(store.url) == 2
    assert found(store, "alpha") == ["a1"]
    assert store.index_new_subjects() == 0  # nothing new: nothing done

    add(store, "a2", "CN=Alpha-two,O=Example")
    assert found(store, "alpha") == ["a1", "a2"]  # one from the index, one from the tail
    assert store.index_new_subjects() == 1
    assert found(store, "alpha") == ["a1", "a2"]
    check_index(store.url)


def test_a_catch_up_takes_at_most_its_limit_oldest_first(sqlite_store):
    store = sqlite_store
    for index in range(5):
        add(store, f"s{index}", f"CN=device-{index}")
    assert store.index_new_subjects(limit=2) == 2
    assert mark(store.url) == 2
    assert indexed(store.url, "device") == 2
    assert found(store, "device") == [f"s{i}" for i in range(5)]
    assert store.index_new_subjects(limit=2) == 2
    assert store.index_new_subjects(limit=2) == 1
    assert store.index_new_subjects(limit=2) == 0
    assert indexed(store.url, "device") == 5


def test_deleting_or_editing_rows_keeps_the_index_intact(sqlite_store):
    """FTS5 must never be told to delete a row it does not hold: the triggers act only on
    rows at or below the mark, and the catch-up reads the others as they are then."""
    store = sqlite_store
    add(store, "old", "CN=gamma-old")
    store.index_new_subjects()
    add(store, "new", "CN=gamma-new")  # above the mark
    add(store, "gone", "CN=gamma-gone")
    url = store.url
    engine = create_engine(driver_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM certificates WHERE serial = 'gone'"))
            connection.execute(
                text("UPDATE certificates SET subject = 'CN=delta' WHERE serial = 'new'")
            )
            connection.execute(
                text("UPDATE certificates SET subject = 'CN=omega' WHERE serial = 'old'")
            )
    finally:
        engine.dispose()
    assert store.index_new_subjects() == 1  # 'new'; the newest, 'gone', is gone
    assert found(store, "gamma") == []
    assert found(store, "delta") == ["new"]
    assert found(store, "omega") == ["old"]
    assert indexed(url, "gamma") == 0
    check_index(url)


def test_the_listing_reads_the_index_and_the_tail_by_key(sqlite_store):
    """No full scan of the certificates: FTS5 for the indexed rows, a range of the rowid for
    the rest."""
    add(sqlite_store, "a1", "CN=alpha")
    sql, parameters = _query(
        "sqlite", CertificateFilter(subject="alpha"), T0, {FTS_TABLE, PROGRESS_TABLE}
    )
    steps = [row[3] for row in query(sqlite_store.url, f"EXPLAIN QUERY PLAN {sql}", *parameters)]
    assert "SCAN certificates_subject_fts VIRTUAL TABLE INDEX 0:M0" in steps, steps
    assert "SEARCH certificates USING INTEGER PRIMARY KEY (rowid>?)" in steps, steps
    assert "SCAN certificates" not in steps, steps


def test_upgrading_marks_every_existing_row_indexed_and_downgrading_indexes_the_tail(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_to(url, "0003")
    insert_old_certificate(url, "a1", "CN=alpha-old")  # indexed by 0002's trigger
    upgrade_to(url, "0004")
    assert mark(url) == 1
    store = Store(url)
    try:
        add(store, "a2", "CN=alpha-new")  # not indexed: above the mark
        assert indexed(url, "alpha") == 1
    finally:
        store.close()
    downgrade_to(url, "0003")
    assert indexed(url, "alpha") == 2  # the tail went into the index
    tables = query(url, "SELECT name FROM sqlite_master WHERE name = ?", PROGRESS_TABLE)
    assert tables == []
    upgrade_to(url, "head")
    assert mark(url) == 2


def test_the_serve_task_catches_up(tmp_path):
    """A running server indexes what it enrolls within a few seconds."""
    directory = init_instance(tmp_path / "est-data")
    server = start_server(directory)
    try:
        enroll(server, tmp_path, "catch-up-device")
        url = f"sqlite:///{directory / 'estkit.db'}"
        deadline = time.monotonic() + 10
        while indexed(url, "catch-up-device") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert indexed(url, "catch-up-device") == 1
    finally:
        server.stop()


def indexes(url: str) -> dict[str, str]:
    """Index name -> its definition, as the database keeps it."""
    if url.startswith("sqlite"):
        rows = query(
            url, "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    else:
        rows = query(
            url, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'certificates'"
        )
    return {name: definition for name, definition in rows}


def test_an_enrollment_insert_skips_the_revocation_and_renewal_indexes(store, store_url):
    defined = indexes(store_url)
    assert "ix_certificates_subject" not in defined
    assert "ix_certificates_status" not in defined
    assert "ix_certificates_key_fingerprint" not in defined
    assert "ix_certificates_subject_key_id" in defined
    assert "WHERE" in defined["ix_certificates_revocations"]
    assert "revoked" in defined["ix_certificates_revocations"]
    assert "WHERE" in defined["ix_certificates_replaces_serial"]
    assert "NOT NULL" in defined["ix_certificates_replaces_serial"].upper()


def test_the_crl_and_renewal_reads_still_use_their_indexes(store, store_url):
    """The statements the store really sends (captured), explained by the database: the
    partial indexes serve them only if the query implies their condition."""
    add(store, "a1", "CN=a")
    store.record_certificate(replace(certificate("r1"), replaces_serial="a1"))
    store.revoke_certificate("a1", "keyCompromise", datetime.now(UTC))
    sent: list[tuple[str, Any]] = []
    engine = store._reader

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert [r.serial for r in store.renewals_of("a1")] == ["r1"]
        with engine.connect() as connection:
            entries = _revoked_entries(connection, "issuer", None)
        assert [e.serial for e in entries] == ["a1"]
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    renewal = next(s for s in sent if "replaces_serial =" in s[0])
    revoked = next(s for s in sent if "status = 'revoked'" in s[0])
    explain = "EXPLAIN QUERY PLAN " if store_url.startswith("sqlite") else "EXPLAIN "
    for (statement, parameters), index in (
        (renewal, "ix_certificates_replaces_serial"),
        (revoked, "ix_certificates_revocations"),
    ):
        engine2 = create_engine(driver_url(store_url))
        try:
            with engine2.connect() as connection:
                if not store_url.startswith("sqlite"):
                    connection.exec_driver_sql("SET enable_seqscan = off")
                plan = str(connection.exec_driver_sql(explain + statement, parameters).all())
        finally:
            engine2.dispose()
        assert index in plan, plan


def test_only_sqlite_batches_its_subject_index(store, store_url):
    """PostgreSQL's trigram index follows each INSERT: there is nothing to catch up, and the
    server starts no task for it."""
    add(store, "a1", "CN=alpha")
    batched = store_url.startswith("sqlite")
    assert store.batches_subject_index() is batched
    assert store.index_new_subjects() == (1 if batched else 0)
    assert found(store, "alpha") == ["a1"]


def test_key_identifiers_move_into_the_certificates_and_back(store_url):
    """Revision 0004 folds certificate_key_ids into certificates.subject_key_id (one INSERT
    per enrollment less) and keeps every identifier; a downgrade restores the table."""
    upgrade_to(store_url, "0003")
    insert_old_certificate(store_url, "k1", "CN=keyed", key_id="ab" * 20)
    insert_old_certificate(store_url, "n1", "CN=no-key-id")
    upgrade_to(store_url, "head")
    store = Store(store_url)
    try:
        assert [r.serial for r in store.certificates_by_key_id("ab" * 20)] == ["k1"]
        store.record_certificate(replace(certificate("k2"), subject_key_id="cd" * 20))
        assert [r.serial for r in store.certificates_by_key_id("cd" * 20)] == ["k2"]
        assert store.certificate("k2").subject_key_id == "cd" * 20
    finally:
        store.close()
    downgrade_to(store_url, "0003")
    rows = query(store_url, "SELECT serial, key_id FROM certificate_key_ids ORDER BY serial")
    assert [tuple(row) for row in rows] == [("k1", "ab" * 20), ("k2", "cd" * 20)]
