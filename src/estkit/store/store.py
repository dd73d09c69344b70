"""The store: certificates, users and audit events in one relational database.

SQLite is the embedded default; each record type's operations live in its own module.
"""

from __future__ import annotations

from estkit.store.audit import AuditTable
from estkit.store.certificate_queries import CertificateQueryTable
from estkit.store.certificates import CertificateTable
from estkit.store.crls import CrlTable
from estkit.store.keyarchive import KeyArchiveTable
from estkit.store.requests import RequestTable
from estkit.store.subject_index import SubjectIndexTable
from estkit.store.users import UserTable


class Store(
    CertificateTable,
    CertificateQueryTable,
    CrlTable,
    RequestTable,
    UserTable,
    AuditTable,
    KeyArchiveTable,
    SubjectIndexTable,
):
    """One database holding every record estkit keeps."""
