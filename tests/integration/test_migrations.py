"""Schema migrations on SQLite and PostgreSQL: the revisions build exactly store/schema.py,
an older database upgrades to what a fresh one is, and ``serve`` refuses a database whose
schema is not current until ``estkit db upgrade`` has run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from estkit.store import AuditEvent, Store, migrate, schema
from estkit.store.database import driver_url
from estkit.store.migrate import (
    VERSION_TABLE,
    SchemaNotCurrent,
    _config,
    head_revision,
)
from estkit.store.subject_search import is_search_index
from tests.estserver import init_instance, start_server
from tests.postgres import fresh_database
from tests.revocation import estkit, failed, ok

BASELINE = "0001"


def snapshot(url: str) -> dict[str, Any]:
    """Tables, columns, keys and indexes as the database reports them."""
    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            tables = {}
            for name in sorted(inspector.get_table_names()):
                tables[name] = {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"])
                        for c in inspector.get_columns(name)
                    ],
                    "pk": inspector.get_pk_constraint(name)["constrained_columns"],
                    "indexes": sorted(
                        (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                        for i in inspector.get_indexes(name)
                    ),
                    "unique": sorted(
                        tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)
                    ),
                }
            return tables
    finally:
        engine.dispose()


def drift(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match schema.py (the
    subject search index of revision 0002 is outside schema.py by design)."""
    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": VERSION_TABLE,
                    "compare_type": True,
                    "include_name": lambda name, _type, _parents: (
                        name is None or not is_search_index(name)
                    ),
                },
            )
            return compare_metadata(context, schema.metadata)
    finally:
        engine.dispose()


def _migrate(url: str, step: Any, revision: str) -> None:
    """Alembic's upgrade or downgrade to ``revision``, in one transaction."""
    engine = create_engine(driver_url(url))
    try:
        with engine.begin() as connection:
            step(_config(connection), revision)
    finally:
        engine.dispose()


def upgrade_to(url: str, revision: str) -> None:
    _migrate(url, command.upgrade, revision)


def downgrade_to(url: str, revision: str) -> None:
    _migrate(url, command.downgrade, revision)


def insert_old_certificate(
    url: str, serial: str, subject: str, key_id: str | None = None, issuer: str = "issuer"
) -> None:
    """A certificate row as revisions 0001 to 0003 kept it (the store's code writes the
    current schema), with its key identifier row where given."""
    engine = create_engine(driver_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO certificates (serial, label, subject, sans, not_before, "
                    "not_after, key_fingerprint, requester, kind, issuer_id, issued_at, status, "
                    "der) VALUES (:serial, '', :subject, '[]', :t, :t, :f, 'test', 'enroll', "
                    ":issuer, :t, 'valid', :der)"
                ),
                {
                    "serial": serial,
                    "subject": subject,
                    "t": T_OLD,
                    "f": "00" * 32,
                    "der": b"0",
                    "issuer": issuer,
                },
            )
            if key_id is not None:
                connection.execute(
                    text("INSERT INTO certificate_key_ids (serial, key_id) VALUES (:s, :k)"),
                    {"s": serial, "k": key_id},
                )
    finally:
        engine.dispose()


T_OLD = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def execute(url: str, *statements: str) -> None:
    engine = create_engine(driver_url(url))
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def second_url(store_url: str, tmp_path) -> Any:
    """Another empty database on the same backend as store_url (a context manager)."""
    from contextlib import nullcontext

    if store_url.startswith("sqlite"):
        return nullcontext(f"sqlite:///{tmp_path / 'second.db'}")
    return fresh_database()


def test_the_revisions_build_exactly_schema_py(store_url):
    store = Store(store_url)
    try:
        store.create_schema()
        assert store.schema_revision() == head_revision()
    finally:
        store.close()
    assert drift(store_url) == [], (
        "store/schema.py and the migrations disagree: add a revision under "
        "src/estkit/store/migrations/versions/"
    )


def test_baseline_then_upgrade_equals_a_fresh_database(store_url, tmp_path):
    upgrade_to(store_url, BASELINE)
    execute(
        store_url,
        "INSERT INTO users (name, secret_hash, once, created_at) "
        "VALUES ('kept', 'h', false, '2030-01-01T00:00:00+00:00')",
    )
    store = Store(store_url)
    try:
        assert store.upgrade_schema() == (BASELINE, head_revision())
        assert store.user("kept") is not None  # rows survive
        store.create_schema()  # current now: serve's check passes
    finally:
        store.close()
    with second_url(store_url, tmp_path) as fresh_url:
        fresh = Store(fresh_url)
        try:
            fresh.create_schema()
        finally:
            fresh.close()
        assert snapshot(store_url) == snapshot(fresh_url)


def test_a_database_from_before_versions_is_refused_then_upgraded(store_url, tmp_path):
    """What estkit made with create_all before it had migrations: no version table, and
    (from an older release) an index and a table missing."""
    engine = create_engine(driver_url(store_url))
    tables = [t for t in schema.metadata.sorted_tables if t.name != "archived_keys"]
    schema.metadata.create_all(engine, tables=tables)
    engine.dispose()
    execute(store_url, "DROP INDEX ix_certificates_label")
    store = Store(store_url)
    try:
        store.record_audit(
            AuditEvent(actor="old", action="instance.init", subject="x", at=datetime.now(UTC))
        )
        with pytest.raises(SchemaNotCurrent, match="from before schema versions; run 'fix it'"):
            store.create_schema("fix it")
        assert store.upgrade_schema() == (None, head_revision())
        assert [e.actor for e in store.audit_events()] == ["old"]
    finally:
        store.close()
    assert drift(store_url) == []
    with second_url(store_url, tmp_path) as fresh_url:
        fresh = Store(fresh_url)
        try:
            fresh.create_schema()
        finally:
            fresh.close()
        assert snapshot(store_url) == snapshot(fresh_url)


def test_a_database_newer_than_this_estkit_is_refused(store_url):
    store = Store(store_url)
    try:
        store.create_schema()
        execute(store_url, f"UPDATE {VERSION_TABLE} SET version_num = 'f00d'")
        with pytest.raises(SchemaNotCurrent, match="revision f00d, newer than this estkit"):
            store.create_schema()
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_refuses_until_db_upgrade(backend, tmp_path, request):
    """The operator's path: serve names the command, db upgrade runs it, serve starts."""
    init_args = ("--db", request.getfixturevalue("postgres_url")) if backend != "sqlite" else ()
    directory = init_instance(tmp_path / "est-data", "", *init_args)
    from estkit.config import load_config

    url = load_config(directory).store_url
    execute(url, f"DROP TABLE {VERSION_TABLE}")  # as an estkit from before versions left it

    for workers in ("1", "2"):
        refused = estkit("serve", "--dir", str(directory), "--port", "0", "--workers", workers)
        message = failed(refused)
        assert "from before schema versions" in message
        assert "estkit db upgrade" in message

    upgraded = ok(estkit("db", "upgrade", "--dir", str(directory)))
    assert f"from unversioned to {head_revision()}" in upgraded.stdout
    again = ok(estkit("db", "upgrade", "--dir", str(directory)))
    assert f"current (revision {head_revision()})" in again.stdout
    server = start_server(directory)
    server.stop()


def test_single_worker_refusal_names_the_directory(tmp_path):
    directory = init_instance(tmp_path / "est-data")
    execute(f"sqlite:///{directory / 'estkit.db'}", f"DROP TABLE {VERSION_TABLE}")
    message = failed(estkit("serve", "--dir", str(directory), "--port", "0", "--workers", "1"))
    assert f"run 'estkit db upgrade --dir {directory}'" in message


def test_db_upgrade_without_an_instance_is_one_line(tmp_path):
    assert "no estkit instance here" in failed(estkit("db", "upgrade", "--dir", str(tmp_path)))


def test_the_head_revision_constant_is_alembics_head():
    """migrate.HEAD_REVISION spares the server Alembic; it must name the newest migration."""
    head, known = migrate.script_revisions()
    assert head == migrate.HEAD_REVISION
    assert head in known
