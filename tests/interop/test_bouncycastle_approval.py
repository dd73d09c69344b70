"""Interop: Bouncy Castle's EST client against a manual-approval label (RFC 7030 §4.2.3).

BC answers a 202 with an EnrollmentResponse that is not completed and carries Retry-After as
``getNotBefore()`` (epoch ms); the driver prints ``PENDING <ms>`` and exits 3.  BC 1.72 closes
that response without reading it and throws if an unread body is longer than one byte, so
this also pins the empty 202 body.  The driver is resent with the same key (``--key``):
``simpleEnroll`` builds and signs a new CSR every time, which must count as identical.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.esthttp import new_key
from tests.estserver import init_instance, run_estkit, start_server
from tests.interop.test_bouncycastle import (  # noqa: F401 - bc is a fixture
    BcDriver,
    _check_issued,
    _cn,
    bc,
)

pytestmark = pytest.mark.interop

MANUAL_TOML = """
[labels.manual]
approval = "manual"
retry_after = 30

[labels.manualpop]
approval = "manual"
require_pop = true
retry_after = 30
"""


@pytest.fixture(scope="module")
def manual_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = init_instance(tmp_path_factory.mktemp("bc-approval") / "est-data", MANUAL_TOML)
    server = start_server(directory)
    yield server
    server.stop()


def _requests(server: Any, user: str) -> list[Any]:
    store = server.store()
    try:
        return [r for r in store.requests() if r.requester == f"user:{user}"]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("label", "pop"), [("manual", False), ("manualpop", True)], ids=["basic", "pop"]
)
def test_bc_enroll_pending_then_enrolled_after_approval(
    bc: BcDriver,  # noqa: F811
    manual_server: Any,
    tmp_path: Path,
    label: str,
    pop: bool,
) -> None:
    cn = f"bc-approval-{label}"
    password = manual_server.add_user(cn)
    key_file = tmp_path / "device.key"
    key = new_key()
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file = tmp_path / "device.pem"
    extra = {"tls": "1.2"} if pop else {}
    args = [
        "enroll", "--user", cn, "--password", password, "--subject", f"CN={cn}",
        "--realm", "estkit", "--key", str(key_file), "--out-cert", str(cert_file),
        *(["--pop"] if pop else []),
    ]  # fmt: skip

    before = time.time() * 1000
    pending = bc(manual_server, *args, label=label, expect_rc=3, **extra)
    not_before = int(pending.one("PENDING"))
    # BC turned Retry-After (30 s) into "not before": now + 30 000 ms.
    assert before + 29_000 <= not_before <= time.time() * 1000 + 31_000
    assert not cert_file.exists()

    # The resend is signed anew (and, with --pop, linked to a new TLS connection): same request.
    bc(manual_server, *args, label=label, expect_rc=3, **extra)
    [request] = _requests(manual_server, cn)
    assert request.status == "pending"

    approved = run_estkit(
        "request", "approve", str(request.id), "--dir", str(manual_server.data_dir)
    )
    assert f"request {request.id} approved" in approved.stdout

    run = bc(manual_server, *args, label=label, **extra)
    cert = _check_issued(run.one("ENROLLED"), cert_file, manual_server)
    assert _cn(cert) == cn
    assert cert.public_key() == key.public_key()
    [issued] = _requests(manual_server, cn)
    assert issued.status == "issued"
    assert issued.serial == format(cert.serial_number, "x")


def test_bc_enroll_rejected_gets_the_reason(
    bc: BcDriver,  # noqa: F811
    manual_server: Any,
    tmp_path: Path,
) -> None:
    cn = "bc-approval-rejected"
    password = manual_server.add_user(cn)
    key_file = tmp_path / "device.key"
    key_file.write_bytes(
        new_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    args = [
        "enroll", "--user", cn, "--password", password, "--subject", f"CN={cn}",
        "--key", str(key_file), "--out-cert", str(tmp_path / "device.pem"),
    ]  # fmt: skip
    bc(manual_server, *args, label="manual", expect_rc=3)
    [request] = _requests(manual_server, cn)
    run_estkit(
        "request", "reject", str(request.id), "--reason", "not in the inventory",
        "--dir", str(manual_server.data_dir),
    )  # fmt: skip
    run = bc(manual_server, *args, label="manual", expect_rc=2)
    status, _, reason = run.one("ERROR").partition(" ")
    assert status == "403"
    assert "not in the inventory" in reason
    assert not (tmp_path / "device.pem").exists()
