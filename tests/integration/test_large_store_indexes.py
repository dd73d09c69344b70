"""Revision 0002's indexes for large stores, on SQLite and PostgreSQL: ``cert list --subject``
is a case-insensitive substring with LIKE metacharacters taken literally, answered through
the subject search index (also for rows recorded before the index existed), and the CRL's
reads are index-only."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from estkit.store import Store
from estkit.store.certificate_listing import CertificateFilter, list_certificates
from estkit.store.database import driver_url
from estkit.store.subject_search import FTS_TABLE, TRIGRAM_INDEX
from tests.integration.test_migrations import insert_old_certificate, upgrade_to
from tests.integration.test_store_backends import T0, certificate

SUBJECTS = {
    "a1": "CN=Alpha-Device_01,O=Example",
    "a2": "CN=alpha%device,O=Example",
    "b1": "CN=beta,O=Other",
    "q1": 'CN=say \\"hi\\",O=Example',
}


def fill(store: Store) -> None:
    for serial, subject in SUBJECTS.items():
        store.record_certificate(replace(certificate(serial), subject=subject))


def found(store: Store, value: str, status: str | None = None) -> list[str]:
    wanted = CertificateFilter(subject=value, status=status)
    return [r.serial for r in list_certificates(store.url, 5.0, wanted, T0)]


@pytest.mark.parametrize(
    ("value", "serials"),
    [
        ("alpha", ["a1", "a2"]),  # any case
        ("ALPHA-dev", ["a1"]),
        ("a%d", ["a2"]),  # % is a character, not a wildcard
        ("e_0", ["a1"]),  # _ too
        ("a_d", []),
        ('\\"hi', ["q1"]),  # quotes and backslashes are plain text
        ("o=example", ["a1", "a2", "q1"]),
        ("ta", ["b1"]),  # shorter than a trigram: every subject is read
        ("zzz", []),
    ],
)
def test_subject_is_a_case_insensitive_literal_substring(store, value, serials):
    fill(store)
    assert found(store, value) == serials


def test_subject_combines_with_the_other_filters(store):
    fill(store)
    store.revoke_certificate("a2", "keyCompromise", datetime.now(UTC))
    assert found(store, "alpha", "revoked") == ["a2"]
    assert found(store, "alpha", "valid") == ["a1"]


def test_rows_from_before_the_index_are_found_through_it(store_url):
    """Upgrading a database that already holds certificates indexes them."""
    upgrade_to(store_url, "0001")
    for serial, subject in SUBJECTS.items():
        insert_old_certificate(store_url, serial, subject)
    upgrade_to(store_url, "head")
    store = Store(store_url)
    try:
        assert found(store, "ALPHA") == ["a1", "a2"]
    finally:
        store.close()
    engine = create_engine(driver_url(store_url))
    try:
        with engine.connect() as connection:
            if store_url.startswith("sqlite"):
                plan = connection.execute(
                    text(
                        f"EXPLAIN QUERY PLAN SELECT rowid FROM {FTS_TABLE} "
                        f"WHERE subject MATCH '\"alpha\"'"
                    )
                ).all()
                assert "VIRTUAL TABLE INDEX" in str(plan)
                indexed = connection.execute(
                    text(f"SELECT count(*) FROM {FTS_TABLE} WHERE subject MATCH '\"alpha\"'")
                ).scalar_one()
                assert indexed == 2
            else:
                connection.execute(text("SET enable_seqscan = off"))
                plan = connection.execute(
                    text("EXPLAIN SELECT id FROM certificates WHERE subject ILIKE '%alpha%'")
                ).all()
                assert TRIGRAM_INDEX in str(plan)
    finally:
        engine.dispose()


def test_the_crl_reads_come_from_the_revocations_index(store, store_url):
    """store/crls.py's two reads — an issuer's revoked entries in CRL order, and their count
    that every worker polls each second — need neither the table's rows nor a sort."""
    fill(store)
    store.revoke_certificate("a1", "keyCompromise", datetime.now(UTC))
    entries = (
        "SELECT serial, revoked_at, revocation_reason FROM certificates "
        "WHERE status = 'revoked' AND issuer_id = 'issuer' AND not_after >= '2000-01-01' "
        "ORDER BY revoked_at, serial"
    )
    count = "SELECT count(*) FROM certificates WHERE status = 'revoked' AND issuer_id = 'issuer'"
    engine = create_engine(driver_url(store_url))
    try:
        with engine.connect() as connection:
            for query in (entries, count):
                if store_url.startswith("sqlite"):
                    plan = str(connection.execute(text(f"EXPLAIN QUERY PLAN {query}")).all())
                    assert "COVERING INDEX ix_certificates_revocations" in plan, plan
                    assert "TEMP B-TREE" not in plan, plan
                else:
                    connection.execute(text("SET enable_seqscan = off"))
                    connection.execute(text("SET enable_bitmapscan = off"))
                    plan = str(connection.execute(text(f"EXPLAIN {query}")).all())
                    assert "Index Only Scan using ix_certificates_revocations" in plan, plan
                    assert "Sort" not in plan, plan
    finally:
        engine.dispose()
