"""`estkit audit [--since TIME] [--json]`: every state change is there, filtered in the store."""

from __future__ import annotations

import getpass
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.revocation import enroll, estkit, failed, ok


def audit(server, *args: str) -> list[dict]:
    return json.loads(ok(estkit("audit", "--dir", str(server.data_dir), "--json", *args)).stdout)


def test_audit_shows_issuance_users_revocation_and_crls(est_server_factory, tmp_path):
    server = est_server_factory()
    ok(estkit("user", "add", "--dir", str(server.data_dir), "auditor-temp"))
    ok(estkit("user", "remove", "--dir", str(server.data_dir), "auditor-temp"))
    holder = enroll(server, tmp_path)
    ok(
        estkit(
            "cert", "revoke", "--dir", str(server.data_dir), holder.serial, "--reason", "superseded"
        )
    )

    events = audit(server)
    actions = [event["action"] for event in events]
    for action in (
        "instance.init",
        "user.add",
        "user.remove",
        "certificate.enroll",
        "certificate.revoke",
        "crl.generate",
    ):
        assert action in actions, (action, actions)
    # Written in order, oldest first.
    times = [datetime.fromisoformat(event["at"]) for event in events]
    assert times == sorted(times)

    operator = f"operator:{getpass.getuser()}"
    [revocation] = [e for e in events if e["action"] == "certificate.revoke"]
    assert revocation["actor"] == operator
    assert revocation["subject"] == holder.serial
    assert revocation["detail"]["reason"] == "superseded"
    crls = [e for e in events if e["action"] == "crl.generate"]
    # The server signs the first CRL at start; the revocation's comes from the operator.
    assert crls[0]["actor"] == "server"
    assert crls[0]["detail"]["why"] == "first"
    assert crls[-1]["actor"] == operator
    assert crls[-1]["detail"]["why"] == "revocation"
    assert [c["detail"]["number"] for c in crls] == sorted(c["detail"]["number"] for c in crls)

    table = ok(estkit("audit", "--dir", str(server.data_dir))).stdout.splitlines()
    assert table[0].split()[:4] == ["AT", "ACTOR", "ACTION", "SUBJECT"]
    assert any("certificate.revoke" in line and holder.serial in line for line in table)


def test_since_filters_by_duration_and_iso_time(est_server_factory):
    server = est_server_factory()
    now = datetime.now(UTC)
    connection = sqlite3.connect(server.data_dir / "estkit.db", timeout=10)
    try:
        for days in (10, 3):  # written as another process would, in the store's UTC format
            at = (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f")
            connection.execute(
                "INSERT INTO audit_events (at, actor, action, subject, source, detail) "
                "VALUES (?, 'test', 'test.old', ?, '', '{}')",
                (at, f"{days}d"),
            )
        connection.commit()
    finally:
        connection.close()

    def subjects(*args: str) -> set[str]:
        return {e["subject"] for e in audit(server, *args) if e["action"] == "test.old"}

    assert subjects() == {"10d", "3d"}
    assert subjects("--since", "7d") == {"3d"}
    assert subjects("--since", "11d") == {"10d", "3d"}
    assert subjects("--since", "48h") == set()
    since = (now - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert subjects("--since", since) == {"3d"}
    naive_utc = (now - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S")
    assert subjects("--since", naive_utc) == {"3d"}
    with_offset = (now - timedelta(days=5)).astimezone(timezone(timedelta(hours=-5)))
    assert subjects("--since", with_offset.isoformat()) == {"3d"}
    # Recent events (init) are there with a short window; nothing is in the future.
    assert any(e["action"] == "instance.init" for e in audit(server, "--since", "1h"))
    future = (now + timedelta(days=1)).strftime("%Y-%m-%d")
    assert audit(server, "--since", future) == []


@pytest.mark.parametrize("since", ["yesterday", "7x", "-1d", "2025-13-01", ""])
def test_bad_since_is_one_line(est_server, since):
    message = failed(estkit("audit", "--dir", str(est_server.data_dir), f"--since={since}"))
    assert "--since" in message
    assert "ISO 8601" in message and "duration" in message
