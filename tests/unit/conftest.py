"""A CA and an Authority over a real SQLite store, for the unit tests of issuance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from estkit.authority.ca import CertificateAuthority
from estkit.authority.issue import PublicUrls
from estkit.authority.profile import parse_profile
from estkit.authority.service import Authority
from estkit.store import Store
from tests.pki import make_ca

URLS = PublicUrls("http://ca.example:8080")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    key, cert = make_ca("Issuing CA")
    return CertificateAuthority(root=cert, issuing=cert, issuing_key=key)


@pytest.fixture
def authority(ca: CertificateAuthority, tmp_path: Path) -> Iterator[Authority]:
    """Labels "" (automatic) and "iot" (automatic), and "approved" (manual approval)."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    profiles = {
        "": parse_profile("", {}),
        "iot": parse_profile("iot", {}),
        "approved": parse_profile("approved", {"approval": "manual"}),
    }
    yield Authority(ca, profiles, store, URLS)
    store.close()
