"""Manual approval (RFC 7030 §4.2.3): 202 + Retry-After until an operator decides.

The server runs as a real process; decisions are made with the real ``estkit request`` CLI.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.cli.main import main
from estkit.store import RequestRecord
from tests.esthttp import (
    PKCS10,
    Reply,
    b64,
    connect,
    enroll_with_cert,
    make_csr,
    new_key,
    request,
    send,
    tls_context,
    write_pair,
)
from tests.estserver import EstServer, init_instance, run_estkit, start_server

MANUAL_TOML = """
[labels.manual]
approval = "manual"
retry_after = 7

[labels.manualpop]
approval = "manual"
require_pop = true
retry_after = 1

[labels.quick]
approval = "manual"
retry_after = 1
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    directory = init_instance(tmp_path_factory.mktemp("approval") / "est-data", MANUAL_TOML)
    running = start_server(directory)
    yield running
    running.stop()


# ---------------------------------------------------------------- helpers


def enroll(server: EstServer, user: str, password: str, csr: bytes, label: str = "manual") -> Reply:
    url = server.est_url(label) + "/simpleenroll"
    return request(url, server.ca_file, "POST", b64(csr), PKCS10, user, password)


def requests_in(server: EstServer) -> list[RequestRecord]:
    store = server.store()
    try:
        return store.requests()
    finally:
        store.close()


def requests_of(server: EstServer, user: str) -> list[RequestRecord]:
    return [r for r in requests_in(server) if r.requester == f"user:{user}"]


def estkit(server: EstServer, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator command, run in this process (the same main() as the estkit script)."""
    argv = [*args, "--dir", str(server.data_dir)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def approve(server: EstServer, request_id: int) -> None:
    result = estkit(server, "request", "approve", str(request_id))
    assert result.returncode == 0, result.stderr
    assert f"request {request_id} approved" in result.stdout


def reject(server: EstServer, request_id: int, reason: str) -> None:
    result = estkit(server, "request", "reject", str(request_id), "--reason", reason)
    assert result.returncode == 0, result.stderr


def audit(server: EstServer, action: str, subject: str) -> list:
    store = server.store()
    try:
        return [e for e in store.audit_events() if e.action == action and e.subject == subject]
    finally:
        store.close()


def assert_pending(reply: Reply, retry_after: str = "7") -> None:
    assert reply.status == 202, reply.text
    assert reply.headers["Retry-After"] == retry_after
    # Bouncy Castle 1.72 fails on an unread 202 body longer than one byte.
    assert reply.body == b""
    assert reply.headers["Content-Length"] == "0"


def der_of(server: EstServer, serial: str) -> bytes:
    store = server.store()
    try:
        record = store.certificate(serial)
        assert record is not None
        return record.der
    finally:
        store.close()


# ---------------------------------------------------------------- the 202 flow


def test_first_submission_is_202_with_retry_after_and_stored(server: EstServer) -> None:
    password = server.add_user("ma-first")
    _, csr = make_csr("ma-first")
    reply = enroll(server, "ma-first", password, csr)
    assert_pending(reply)
    [pending] = requests_of(server, "ma-first")
    assert pending.status == "pending"
    assert pending.label == "manual"
    assert pending.csr_der == csr
    assert pending.source == "127.0.0.1"
    [event] = audit(server, "request.submit", str(pending.id))
    assert event.actor == "user:ma-first"
    assert event.detail == {"label": "manual", "subject": "CN=ma-first"}
    assert "status=202" in server.log()


def test_identical_resubmission_is_202_until_approved_then_200(server: EstServer) -> None:
    password = server.add_user("ma-approve")
    key, csr = make_csr("ma-approve")
    _, resigned = make_csr("ma-approve", key=key)
    assert resigned != csr  # ECDSA: a new signature, the identical request
    for body in (csr, csr, resigned):
        assert_pending(enroll(server, "ma-approve", password, body))
    [pending] = requests_of(server, "ma-approve")

    approve(server, pending.id)
    reply = enroll(server, "ma-approve", password, resigned)
    assert reply.status == 200, reply.text
    [cert] = reply.certificates()
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == "CN=ma-approve"

    [issued] = requests_of(server, "ma-approve")
    assert issued.status == "issued"
    assert issued.serial == format(cert.serial_number, "x")
    assert issued.decided_by is not None and issued.decided_by.startswith("operator:")
    assert der_of(server, issued.serial) == cert.public_bytes(serialization.Encoding.DER)
    [decision] = audit(server, "request.approve", str(pending.id))
    assert decision.actor == issued.decided_by
    [enrolled] = audit(server, "certificate.enroll", issued.serial)
    assert enrolled.actor == "user:ma-approve"
    assert enrolled.detail["request"] == pending.id

    # The answer may have been lost: the identical request gets the same certificate again.
    again = enroll(server, "ma-approve", password, csr)
    assert again.status == 200
    assert again.certificates() == [cert]
    assert len(requests_of(server, "ma-approve")) == 1


def test_a_different_csr_is_a_new_request(server: EstServer) -> None:
    password = server.add_user("ma-new")
    key, csr = make_csr("ma-new")
    assert_pending(enroll(server, "ma-new", password, csr))
    _, other_key = make_csr("ma-new")
    assert_pending(enroll(server, "ma-new", password, other_key))
    _, other_subject = make_csr("ma-new-2", key=key)
    assert_pending(enroll(server, "ma-new", password, other_subject))
    _, with_san = make_csr("ma-new", key=key, sans=[x509.DNSName("x.example")])
    # The SAN is refused by the label's policy before anything is queued.
    refused = enroll(server, "ma-new", password, with_san)
    assert refused.status == 403
    assert "subjectAltName" in refused.text
    assert len({r.id for r in requests_of(server, "ma-new")}) == 3

    first = requests_of(server, "ma-new")[0]
    approve(server, first.id)
    assert enroll(server, "ma-new", password, other_key).status == 202
    assert enroll(server, "ma-new", password, csr).status == 200


def test_reject_gives_403_with_the_operators_reason(server: EstServer) -> None:
    password = server.add_user("ma-reject")
    _, csr = make_csr("ma-reject")
    assert_pending(enroll(server, "ma-reject", password, csr))
    [pending] = requests_of(server, "ma-reject")
    reject(server, pending.id, "unknown device; call the help desk")
    for _ in range(2):
        reply = enroll(server, "ma-reject", password, csr)
        assert reply.status == 403
        assert "rejected by an operator" in reply.text
        assert "unknown device; call the help desk" in reply.text
    [rejected] = requests_of(server, "ma-reject")
    assert rejected.status == "rejected"
    assert rejected.serial is None
    [event] = audit(server, "request.reject", str(pending.id))
    assert event.detail["reason"] == "unknown device; call the help desk"
    assert event.actor.startswith("operator:")


def test_another_requester_never_gets_someone_elses_certificate(server: EstServer) -> None:
    owner = server.add_user("ma-owner")
    thief = server.add_user("ma-thief")
    key, csr = make_csr("ma-owner")
    assert_pending(enroll(server, "ma-owner", owner, csr))
    [mine] = requests_of(server, "ma-owner")
    approve(server, mine.id)
    # The same CSR bytes from another account: a request of its own, still pending.
    assert_pending(enroll(server, "ma-thief", thief, csr))
    [theirs] = requests_of(server, "ma-thief")
    assert theirs.id != mine.id
    reply = enroll(server, "ma-owner", owner, csr)
    assert reply.status == 200
    assert reply.certificates()[0].public_key() == key.public_key()
    assert_pending(enroll(server, "ma-thief", thief, csr))
    assert requests_of(server, "ma-thief")[0].status == "pending"


def test_concurrent_identical_first_submissions_queue_one_request(server: EstServer) -> None:
    password = server.add_user("ma-race")
    _, csr = make_csr("ma-race")
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: enroll(server, "ma-race", password, csr), range(6)))
    assert [r.status for r in replies] == [202] * 6
    assert len(requests_of(server, "ma-race")) == 1


def test_one_time_secret_authenticates_resubmissions_until_pickup(server: EstServer) -> None:
    secret = server.add_user("ma-once", once=True)
    _, csr = make_csr("ma-once")
    assert_pending(enroll(server, "ma-once", secret, csr))
    assert_pending(enroll(server, "ma-once", secret, csr))  # not consumed by waiting
    [pending] = requests_of(server, "ma-once")
    approve(server, pending.id)
    store = server.store()
    try:
        user = store.user("ma-once")
        assert user is not None and user.consumed_at is None  # not consumed by approval
    finally:
        store.close()
    assert enroll(server, "ma-once", secret, csr).status == 200
    gone = enroll(server, "ma-once", secret, csr)
    assert gone.status == 401
    assert "already been used" in gone.text


def test_checks_run_before_anything_is_queued(server: EstServer) -> None:
    password = server.add_user("ma-checks")
    _, csr = make_csr("ma-checks")
    wrong = enroll(server, "ma-checks", "not-the-password", csr)
    assert wrong.status == 401
    limited = server.add_user("ma-limited", labels=["iot"])
    refused = enroll(server, "ma-limited", limited, csr)
    assert refused.status == 403
    assert "may not enroll" in refused.text
    _, bad = make_csr("ma-checks", key=new_key("rsa-1024"))
    weak = enroll(server, "ma-checks", password, bad)
    assert weak.status == 400
    assert "at least 2048" in weak.text
    tampered = bytearray(csr)
    tampered[-3] ^= 0x01
    broken = enroll(server, "ma-checks", password, bytes(tampered))
    assert broken.status == 400
    assert requests_of(server, "ma-checks") == []
    assert requests_of(server, "ma-limited") == []


def test_pop_label_matches_resubmissions_on_new_connections(server: EstServer) -> None:
    """tls-unique differs on every connection, so challengePassword is not part of "identical"."""
    password = server.add_user("ma-pop")
    key = new_key()
    url = server.est_url("manualpop") + "/simpleenroll"
    bodies: list[bytes] = []

    def linked_enroll() -> Reply:
        connection = connect(url, tls_context(server.ca_file, tls_version="1.2"))
        try:
            binding = connection.sock.get_channel_binding("tls-unique")
            _, csr = make_csr(
                "ma-pop", key=key, challenge_password=base64.b64encode(binding).decode()
            )
            bodies.append(csr)
            return send(connection, url, "POST", b64(csr), PKCS10, "ma-pop", password)
        finally:
            connection.close()

    assert_pending(linked_enroll(), retry_after="1")
    assert_pending(linked_enroll(), retry_after="1")
    assert bodies[0] != bodies[1]
    [pending] = requests_of(server, "ma-pop")
    # Linking is still enforced on every resubmission.
    _, unlinked = make_csr("ma-pop", key=key)
    refused = enroll(server, "ma-pop", password, unlinked, label="manualpop")
    assert refused.status == 400
    approve(server, pending.id)
    reply = linked_enroll()
    assert reply.status == 200, reply.text
    assert reply.certificates()[0].public_key() == key.public_key()
    assert len(requests_of(server, "ma-pop")) == 1


def test_reenroll_on_a_manual_label_is_automatic(server: EstServer, tmp_path: Path) -> None:
    password = server.add_user("ma-renew")
    key, csr = make_csr("ma-renew")
    assert_pending(enroll(server, "ma-renew", password, csr))
    approve(server, requests_of(server, "ma-renew")[0].id)
    [cert] = enroll(server, "ma-renew", password, csr).certificates()
    cert_path, key_path = write_pair(tmp_path, "renew", key, cert)
    _, renewal = make_csr("ma-renew", key=key)
    reply = enroll_with_cert(server, "simplereenroll", renewal, cert_path, key_path, "manual")
    assert reply.status == 200, reply.text
    [renewed] = reply.certificates()
    assert renewed.serial_number != cert.serial_number
    assert len(requests_of(server, "ma-renew")) == 1


def test_revoked_certificate_is_not_handed_out_again(server: EstServer) -> None:
    password = server.add_user("ma-revoked")
    _, csr = make_csr("ma-revoked")
    enroll(server, "ma-revoked", password, csr)
    approve(server, requests_of(server, "ma-revoked")[0].id)
    [cert] = enroll(server, "ma-revoked", password, csr).certificates()
    store = server.store()
    try:
        store.revoke_certificate(
            format(cert.serial_number, "x"), "keyCompromise", datetime.now(UTC)
        )
    finally:
        store.close()
    assert_pending(enroll(server, "ma-revoked", password, csr))
    statuses = [r.status for r in requests_of(server, "ma-revoked")]
    assert statuses == ["issued", "pending"]


def test_pending_requests_per_requester_are_bounded(server: EstServer) -> None:
    password = server.add_user("ma-flood")
    for _ in range(10):
        assert_pending(enroll(server, "ma-flood", password, make_csr("ma-flood")[1]))
    reply = enroll(server, "ma-flood", password, make_csr("ma-flood")[1])
    assert reply.status == 429
    assert "already await approval" in reply.text
    assert len(requests_of(server, "ma-flood")) == 10


def test_pending_request_survives_a_restart(est_server_factory, tmp_path: Path) -> None:
    first = est_server_factory(MANUAL_TOML)
    password = first.add_user("ma-restart")
    key, csr = make_csr("ma-restart")
    assert_pending(enroll(first, "ma-restart", password, csr))
    first.stop()
    second = start_server(first.data_dir)
    try:
        assert_pending(enroll(second, "ma-restart", password, csr))
        [pending] = requests_of(second, "ma-restart")
        second.stop()
        approve(second, pending.id)  # while the server is down
        third = start_server(first.data_dir)
        try:
            reply = enroll(third, "ma-restart", password, csr)
            assert reply.status == 200, reply.text
            assert reply.certificates()[0].public_key() == key.public_key()
        finally:
            third.stop()
    finally:
        second.stop()


# ---------------------------------------------------------------- the operator's commands


def test_request_list_and_show(server: EstServer, tmp_path: Path) -> None:
    password = server.add_user("ma-show")
    _, csr = make_csr("ma-show")
    enroll(server, "ma-show", password, csr)
    [pending] = requests_of(server, "ma-show")

    listed = estkit(server, "request", "list", "--status", "pending", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {entry["id"]: entry for entry in json.loads(listed.stdout)}
    assert entries[pending.id]["requester"] == "user:ma-show"
    assert entries[pending.id]["subject"] == "CN=ma-show"
    assert entries[pending.id]["label"] == "manual"
    assert {entry["status"] for entry in entries.values()} == {"pending"}

    table = estkit(server, "request", "list")
    assert table.returncode == 0
    [row] = [line for line in table.stdout.splitlines() if "user:ma-show" in line]
    assert row.split()[:3] == [str(pending.id), "pending", "manual"]

    shown = estkit(server, "request", "show", str(pending.id))
    assert shown.returncode == 0
    assert "CN=ma-show" in shown.stdout
    assert "EC secp256r1" in shown.stdout

    # --pem is for tools we did not write: openssl reads the CSR back as submitted.
    pem = estkit(server, "request", "show", str(pending.id), "--pem")
    csr_file = tmp_path / "request.pem"
    csr_file.write_text(pem.stdout)
    openssl = subprocess.run(
        ["openssl", "req", "-in", str(csr_file), "-outform", "DER"],
        capture_output=True,
        check=True,
    )
    assert openssl.stdout == csr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("approve", "999999"), "no request 999999"),
        (("reject", "999999", "--reason", "x"), "no request 999999"),
        (("show", "999999"), "no request 999999"),
        (("approve", "abc"), "request IDs are positive whole numbers"),
        (("approve", "0"), "request IDs are positive whole numbers"),
        (("reject", "1", "--reason", "  "), "give a reason"),
        (("reject", "1", "--reason", "two\nlines"), "one line of printable text"),
        (("reject", "1", "--reason", "x" * 301), "at most 300"),
    ],
)
def test_request_command_errors(server: EstServer, args: tuple[str, ...], message: str) -> None:
    result = estkit(server, "request", *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_decisions_are_final(server: EstServer) -> None:
    password = server.add_user("ma-final")
    enroll(server, "ma-final", password, make_csr("ma-final")[1])
    enroll(server, "ma-final", password, make_csr("ma-final")[1])
    approved, rejected = requests_of(server, "ma-final")
    approve(server, approved.id)
    reject(server, rejected.id, "duplicate")
    cases = [
        (("approve", str(approved.id)), f"request {approved.id} is already approved (by operator:"),
        (("reject", str(approved.id), "--reason", "no"), "it cannot be rejected now"),
        (("approve", str(rejected.id)), "was rejected (by operator:"),
        (("reject", str(rejected.id), "--reason", "no"), "is already rejected"),
    ]
    for args, message in cases:
        result = estkit(server, "request", *args)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
    decisions = audit(server, "request.approve", str(approved.id))
    decisions += audit(server, "request.reject", str(approved.id))
    assert len(decisions) == 1  # refused decisions leave no trace but the error


# ---------------------------------------------------------------- our own client waits


def _decide_when_pending(server: EstServer, user: str, *decision: str) -> str:
    """Wait for the user's request to be queued, then run `estkit request <decision> ID`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pending = [r for r in requests_of(server, user) if r.status == "pending"]
        if pending:
            action, *rest = decision
            result = estkit(server, "request", action, str(pending[0].id), *rest)
            assert result.returncode == 0, result.stderr
            return result.stdout
        time.sleep(0.1)
    raise AssertionError(f"no pending request from {user}")


def _client_enroll(server: EstServer, tmp_path: Path, user: str, label: str):
    password_file = tmp_path / "password"
    password_file.write_text(server.add_user(user) + "\n")
    return run_estkit(
        "enroll",
        "--server", server.url,
        "--ca-file", str(server.ca_file),
        "--label", label,
        "--user", user,
        "--password-file", str(password_file),
        "--subject", f"CN={user}",
        "--out-cert", str(tmp_path / "device.pem"),
        "--out-key", str(tmp_path / "device.key"),
        "--max-wait", "60",
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("label", ["quick", "manualpop"])
def test_estkit_enroll_waits_for_approval(server: EstServer, tmp_path: Path, label: str) -> None:
    user = f"ma-client-{label}"
    with ThreadPoolExecutor(1) as pool:
        decided = pool.submit(_decide_when_pending, server, user, "approve")
        result = _client_enroll(server, tmp_path, user, label)
        assert "approved" in decided.result()
    assert result.returncode == 0, result.stderr
    assert "the request is pending (202); asking again in 1 s" in result.stderr
    [leaf, *_] = x509.load_pem_x509_certificates((tmp_path / "device.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "device.key").read_bytes(), None)
    assert leaf.public_key() == key.public_key()
    [issued] = requests_of(server, user)
    assert issued.status == "issued"
    assert issued.serial == format(leaf.serial_number, "x")


def test_estkit_enroll_reports_the_rejection(server: EstServer, tmp_path: Path) -> None:
    user = "ma-client-rejected"
    reason = "this device is not in the inventory"
    with ThreadPoolExecutor(1) as pool:
        decided = pool.submit(_decide_when_pending, server, user, "reject", "--reason", reason)
        result = _client_enroll(server, tmp_path, user, "quick")
        decided.result()
    assert result.returncode == 5, result.stderr  # EXIT_REJECTED
    assert reason in result.stderr
    assert "403" in result.stderr
    assert not (tmp_path / "device.pem").exists()
