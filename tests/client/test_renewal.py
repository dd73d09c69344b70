"""estkit renew: threshold, atomic replacement with .bak, --exec, failures, recovery, --watch."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.cli import client_commands
from estkit.client import Pair, Renewer, Threshold
from estkit.client.files import backup_pair, commit_certificate, is_pair, stage_pair
from estkit.client.renewal import watch
from tests.client.conftest import basic_args, file_mode, server_args


@pytest.fixture
def est_server(client_server):
    """Renewal runs on the server with the 2-minute `short` label."""
    return client_server


@pytest.fixture
def device(renewing_device):
    return renewing_device


def enroll(cli, est_server, device, label="short"):
    cert, key = device.path("d.pem"), device.path("d.key")
    result = cli(
        "enroll",
        *server_args(est_server, label),
        *basic_args(device),
        "--subject",
        f"CN={device.user}",
        "--out-cert",
        cert,
        "--out-key",
        key,
    )
    assert result.code == 0, result.err
    return cert, key


def leaf(path):
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def public_key_of(key_path):
    return serialization.load_pem_private_key(key_path.read_bytes(), None).public_key()


def renew_args(est_server, cert, key, label="short", *extra):
    return ("renew", *server_args(est_server, label), "--cert", cert, "--key", key, *extra)


def leftovers(directory):
    return sorted(
        p.name for p in directory.iterdir() if "estkit-new" in p.name or p.suffix == ".tmp"
    )


def test_a_due_certificate_is_renewed_in_place_and_exec_runs(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)
    old_cert, old_key = cert.read_bytes(), key.read_bytes()
    marker = device.path("marker")
    result = cli(
        *renew_args(est_server, cert, key), "--exec", f'printf %s "$ESTKIT_CERT" > {marker}'
    )
    assert result.code == 0, result.err
    assert "renewed" in result.out
    assert leaf(cert).serial_number != x509.load_pem_x509_certificates(old_cert)[0].serial_number
    assert key.read_bytes() == old_key  # same key without --rekey
    assert device.path("d.pem.bak").read_bytes() == old_cert
    assert device.path("d.key.bak").read_bytes() == old_key
    assert marker.read_text() == str(cert)
    assert is_pair(cert, key)
    assert leftovers(device.directory) == []


def test_renew_with_rekey(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)
    old_public = public_key_of(key)
    result = cli(*renew_args(est_server, cert, key), "--rekey")
    assert result.code == 0, result.err
    assert public_key_of(key) != old_public
    assert leaf(cert).public_key() == public_key_of(key)
    assert file_mode(key) == 0o600
    assert public_key_of(device.path("d.key.bak")) == old_public


def test_nothing_happens_above_the_threshold(cli, est_server, device):
    cert, key = enroll(cli, est_server, device, label=None)  # 365 days
    before = cert.read_bytes(), key.read_bytes()
    marker = device.path("marker")
    result = cli(*renew_args(est_server, cert, key, None), "--exec", f"touch {marker}")
    assert result.code == 0, result.err
    assert "nothing to do" in result.out
    assert (cert.read_bytes(), key.read_bytes()) == before
    assert not marker.exists() and not device.path("d.pem.bak").exists()
    assert (
        f"simplereenroll label=- status=200 identity=cert:estkit:{leaf(cert).serial_number:x}"
        not in est_server.log()
    )


def test_before_as_a_duration(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)  # about 2 minutes left
    serial = leaf(cert).serial_number
    not_due = cli(*renew_args(est_server, cert, key), "--before", "1m")
    assert not_due.code == 0 and "nothing to do" in not_due.out
    assert leaf(cert).serial_number == serial
    due = cli(*renew_args(est_server, cert, key), "--before", "5m")
    assert due.code == 0, due.err
    assert leaf(cert).serial_number != serial


def test_an_injected_clock_decides(est_server, device, cli):
    cert, key = enroll(cli, est_server, device, label=None)  # 365 days
    current = leaf(cert)
    pair = Pair(cert, key)
    early = Renewer(
        est_server.url,
        est_server.ca_file,
        pair,
        now=lambda: current.not_valid_before_utc + timedelta(days=1),
    )
    assert early.renew_if_due().renewed is False
    assert leaf(cert) == current
    late = Renewer(
        est_server.url,
        est_server.ca_file,
        pair,
        now=lambda: current.not_valid_after_utc - timedelta(days=30),
    )
    result = late.renew_if_due()
    assert result.renewed is True
    assert leaf(cert) == result.certificate != current


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_failed_renewal_leaves_the_pair_untouched(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)
    before = cert.read_bytes(), key.read_bytes()
    result = cli(
        "renew",
        "--server",
        f"https://127.0.0.1:{closed_port()}",
        "--ca-file",
        est_server.ca_file,
        "--cert",
        cert,
        "--key",
        key,
        "--rekey",
        "--exec",
        "touch never",
    )
    assert result.code == 3
    assert len(result.error_lines) == 1 and "cannot connect" in result.error_lines[0]
    assert (cert.read_bytes(), key.read_bytes()) == before
    assert not device.path("d.pem.bak").exists() and leftovers(device.directory) == []


def test_a_revoked_certificate_is_not_renewed_and_the_pair_stays(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)
    before = cert.read_bytes(), key.read_bytes()
    store = est_server.store()
    try:
        revoked = store.revoke_certificate(
            format(leaf(cert).serial_number, "x"), "keyCompromise", datetime.now(UTC)
        )
    finally:
        store.close()
    assert revoked.status == "revoked"
    result = cli(*renew_args(est_server, cert, key), "--rekey")
    assert result.code == 5
    assert "revoked" in result.error_lines[0]
    assert (cert.read_bytes(), key.read_bytes()) == before
    assert leftovers(device.directory) == []


def test_a_failing_exec_command_is_reported(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)
    serial = leaf(cert).serial_number
    result = cli(*renew_args(est_server, cert, key), "--exec", "exit 3")
    assert result.code == 7
    assert "renewed, but --exec" in result.error_lines[0] and "status 3" in result.error_lines[0]
    assert leaf(cert).serial_number != serial


def test_a_crash_between_the_renames_is_finished_by_the_next_run(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)
    # A real new pair, as a rekey would produce it ...
    new_cert, new_key = device.path("n.pem"), device.path("n.key")
    made = cli(
        "reenroll",
        *server_args(est_server, "short"),
        "--cert",
        cert,
        "--key",
        key,
        "--rekey",
        "--out-cert",
        new_cert,
        "--out-key",
        new_key,
    )
    assert made.code == 0, made.err
    # ... installed up to the first rename, then the power goes.
    pair = Pair(cert, key)
    stage_pair(pair, new_cert.read_bytes(), new_key.read_bytes())
    backup_pair(pair)
    commit_certificate(pair)
    assert not is_pair(cert, key)  # new certificate, old key

    result = cli(*renew_args(est_server, cert, key), "--before", "10s")
    assert result.code == 0, result.err
    assert "finished an interrupted replacement" in result.err
    assert is_pair(cert, key)
    assert cert.read_bytes() == new_cert.read_bytes() and key.read_bytes() == new_key.read_bytes()
    assert leftovers(device.directory) == []
    assert file_mode(key) == 0o600


def test_watch_backs_off_after_failures(cli, est_server, device, monkeypatch):
    cert, key = enroll(cli, est_server, device)
    before = cert.read_bytes(), key.read_bytes()
    delays: list[float] = []

    def sleep(seconds):
        delays.append(seconds)
        if len(delays) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(client_commands, "watch_sleep", sleep)
    result = cli(
        "renew",
        "--server",
        f"https://127.0.0.1:{closed_port()}",
        "--ca-file",
        est_server.ca_file,
        "--cert",
        cert,
        "--key",
        key,
        "--watch",
        "--interval",
        "3m",
    )
    assert result.code == 130
    assert delays == [60, 120, 180, 180]  # doubling, capped by --interval
    assert len(result.error_lines) == 4
    assert "next attempt in 60 s" in result.error_lines[0]
    assert (cert.read_bytes(), key.read_bytes()) == before


def test_watch_recovers_after_failures(cli, est_server, device):
    cert, key = enroll(cli, est_server, device)
    serial = leaf(cert).serial_number
    renewer = Renewer(
        f"https://127.0.0.1:{closed_port()}",
        est_server.ca_file,
        Pair(cert, key),
        label="short",
        threshold=Threshold.parse("10m"),  # always due: a 2-minute certificate
    )
    delays: list[float] = []
    errors: list[str] = []
    results = []

    def sleep(seconds):
        delays.append(seconds)
        if len(delays) == 2:  # the server comes back
            renewer.url = est_server.url

    watch(
        renewer,
        3600,
        sleep=sleep,
        iterations=3,
        on_result=results.append,
        on_error=lambda error, delay: errors.append(str(error)),
    )
    assert len(errors) == 2 and "cannot connect" in errors[0]
    assert delays == [60, 120]
    assert [r.renewed for r in results] == [True]
    assert leaf(cert).serial_number != serial
    assert is_pair(cert, key)
