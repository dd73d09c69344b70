"""``estkit cert list``: the operator's filters over the certificates table, run straight on
the DBAPI driver (sqlite3, psycopg 3).

Everything else in the store goes through SQLAlchemy; this one read does not, because an
operator listing is a whole short-lived process whose time is mostly start-up, and importing
SQLAlchemy alone costs more than the 200 ms a listing of a million records is allowed
(bench/RESULTS.md).  The query is one SELECT on the indexed columns; the subject search is
store/subject_search.py's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from estkit.store.records import CertificateRecord
from estkit.store.subject_search import SEARCH_TABLES_SQL, subject_condition
from estkit.store.unavailable import StoreUnavailable

STATUSES = ("valid", "revoked", "expired")
"""What an operator filters by.  The store keeps 'valid' or 'revoked'; 'expired' is a valid
(never revoked) certificate past its notAfter, and a revoked one stays 'revoked'."""

COLUMNS = (
    "serial",
    "label",
    "subject",
    "sans",
    "not_before",
    "not_after",
    "key_fingerprint",
    "requester",
    "kind",
    "der",
    "issuer_id",
    "issued_at",
    "replaces_serial",
    "status",
    "revoked_at",
    "revocation_reason",
)
"""The record's fields a listing shows, read by name (not subject_key_id)."""
_TIMES = frozenset(("not_before", "not_after", "issued_at", "revoked_at"))
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy's SQLite dialect keeps a DateTime (UTC, see store/schema.py UtcDateTime)."""


@dataclass(frozen=True)
class CertificateFilter:
    label: str | None = None
    subject: str | None = None
    """A case-insensitive substring of the RFC 4514 subject (LIKE metacharacters literal)."""
    status: str | None = None


def certificate_status(record: CertificateRecord, now: datetime) -> str:
    """'revoked', 'expired' or 'valid', with the same meaning as the filters."""
    if record.status == "revoked":
        return "revoked"
    return "expired" if record.not_after < now else "valid"


def list_certificates(
    url: str, busy_timeout: float, wanted: CertificateFilter, now: datetime
) -> list[CertificateRecord]:
    """Matching certificates in issuance order; StoreUnavailable names why the database
    could not be read."""
    if wanted.status is not None and wanted.status not in STATUSES:
        raise ValueError(f"unknown status {wanted.status!r}; choose one of {', '.join(STATUSES)}")
    with _connection(url, busy_timeout) as (backend, connection):
        cursor = connection.cursor()
        search_tables: set[str] = set()
        if backend == "sqlite":
            search_tables = {name for (name,) in cursor.execute(SEARCH_TABLES_SQL).fetchall()}
        sql, parameters = _query(backend, wanted, now, search_tables)
        if backend == "postgresql":
            sql = sql.replace("?", "%s")  # psycopg's placeholder; no literal ? in the query
        cursor.execute(sql, parameters)
        return [_record(row, backend) for row in cursor.fetchall()]


def _query(
    backend: str, wanted: CertificateFilter, now: datetime, search_tables: Collection[str]
) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    parameters: list[Any] = []
    moment: Any = now.astimezone(UTC)
    if backend == "sqlite":
        moment = moment.strftime(_SQLITE_TIME)  # compared as text, as SQLAlchemy does
    if wanted.label is not None:
        conditions.append("label = ?")
        parameters.append(wanted.label)
    if wanted.status == "revoked":
        conditions.append("status = 'revoked'")
    elif wanted.status == "valid":
        conditions.append("status = 'valid' AND not_after >= ?")
        parameters.append(moment)
    elif wanted.status == "expired":
        conditions.append("status = 'valid' AND not_after < ?")
        parameters.append(moment)
    if wanted.subject:
        condition, values = subject_condition(backend, wanted.subject, search_tables)
        conditions.append(condition)
        parameters.extend(values)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Only fixed column names and conditions are joined in; every value is a parameter.
    query = f"SELECT {', '.join(COLUMNS)} FROM certificates{where} ORDER BY id"  # noqa: S608
    return query, parameters


def _record(row: Sequence[Any], backend: str) -> CertificateRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["sans"] = tuple(json.loads(values["sans"]))
    values["der"] = bytes(values["der"])
    for name in _TIMES:
        values[name] = _utc(values[name])
    return CertificateRecord(**values)


def _utc(value: datetime | str | None) -> datetime | None:
    """A stored time as an aware UTC datetime: SQLite gives text, PostgreSQL timestamptz."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@contextmanager
def _connection(url: str, busy_timeout: float) -> Iterator[tuple[str, Any]]:
    """(backend, DBAPI connection) for a store URL as the configuration holds it."""
    scheme, _, rest = url.partition("://")
    backend = scheme.split("+", 1)[0]
    if backend == "sqlite":
        errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    elif backend in ("postgresql", "postgres"):
        import psycopg  # only for a PostgreSQL store

        backend, errors = "postgresql", (psycopg.Error,)
    else:
        raise StoreUnavailable(f"unsupported store URL scheme {scheme!r}")
    try:
        if backend == "sqlite":
            path = rest.removeprefix("/").partition("?")[0]
            # mode=rw: a listing never creates an empty database where the store should be.
            connection: Any = sqlite3.connect(
                f"file:{quote(path)}?mode=rw", uri=True, timeout=busy_timeout
            )
        else:
            connection = psycopg.connect(
                f"postgresql://{rest}",
                connect_timeout=max(1, round(busy_timeout)),
                application_name="estkit",
            )
        try:
            yield backend, connection
        finally:
            connection.close()
    except errors as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"cannot read the certificate store: {reason}") from exc
