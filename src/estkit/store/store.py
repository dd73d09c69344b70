"""The store: certificates, users and audit events in one relational database.

SQLite is the embedded default; each record type's operations live in its own module.
"""

from __future__ import annotations

from estkit.store.audit import AuditTable
from estkit.store.certificates import CertificateTable
from estkit.store.users import UserTable


class Store(CertificateTable, UserTable, AuditTable):
    """One database holding every record estkit keeps."""
