"""Atomic writes and the crash-safe replacement of a certificate/key pair."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.client.files import (
    CannotWrite,
    OutputExists,
    Pair,
    backup_pair,
    certificates_pem,
    check_new_files,
    commit_certificate,
    commit_key,
    is_pair,
    key_pem,
    recover_pair,
    replace_pair,
    stage_pair,
    write_file,
    write_key,
)


def make_pair(cn="device", key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificates_pem([cert]), key_pem(key)


def mode(path):
    return os.stat(path).st_mode & 0o777


def test_write_file_never_clobbers_without_overwrite(tmp_path):
    target = tmp_path / "out.pem"
    write_file(target, b"first")
    assert target.read_bytes() == b"first" and mode(target) == 0o644
    with pytest.raises(OutputExists, match="--force"):
        write_file(target, b"second")
    assert target.read_bytes() == b"first"
    write_file(target, b"third", overwrite=True)
    assert target.read_bytes() == b"third"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pem"]  # no temporary left


def test_keys_are_written_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        write_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1()))
    finally:
        os.umask(old)
    assert mode(tmp_path / "k.pem") == 0o600


@pytest.fixture
def pairs(tmp_path):
    old_cert, old_key = make_pair("old")
    new_cert, new_key = make_pair("new")
    pair = Pair(tmp_path / "device.pem", tmp_path / "device.key")
    pair.cert.write_bytes(old_cert)
    pair.key.write_bytes(old_key)
    os.chmod(pair.key, 0o600)
    return pair, (old_cert, old_key), (new_cert, new_key)


def on_disk(pair):
    return pair.cert.read_bytes(), pair.key.read_bytes()


def test_replace_pair_keeps_a_backup_and_leaves_nothing_behind(pairs):
    pair, old, new = pairs
    replace_pair(pair, *new)
    assert on_disk(pair) == new
    assert (pair.backup_cert.read_bytes(), pair.backup_key.read_bytes()) == old
    assert mode(pair.key) == 0o600 and mode(pair.backup_key) == 0o600
    assert sorted(p.name for p in pair.cert.parent.iterdir()) == [
        "device.key",
        "device.key.bak",
        "device.pem",
        "device.pem.bak",
    ]


def test_replace_certificate_only(pairs):
    pair, old, _ = pairs
    key = serialization.load_pem_private_key(old[1], None)
    renewed_cert, _ = make_pair("renewed", key)
    replace_pair(pair, renewed_cert, None)
    assert on_disk(pair) == (renewed_cert, old[1])
    assert is_pair(pair.cert, pair.key)
    assert not pair.staged_key.exists()


# Every point a crash can stop a rekey at: after each step of replace_pair.
STEPS = [
    lambda pair, new: stage_pair(pair, *new),
    lambda pair, new: backup_pair(pair),
    lambda pair, new: commit_certificate(pair),
    lambda pair, new: commit_key(pair),
]


@pytest.mark.parametrize("completed", range(len(STEPS) + 1))
def test_a_crash_after_any_step_leaves_a_valid_pair(pairs, completed):
    pair, old, new = pairs
    for step in STEPS[:completed]:
        step(pair, new)
    # Before recovery: a pair, or the staged key completes the pair on disk.
    assert is_pair(pair.cert, pair.key) or is_pair(pair.cert, pair.staged_key)

    recover_pair(pair)
    assert is_pair(pair.cert, pair.key)
    assert on_disk(pair) in (old, new)
    if completed >= 3:  # the certificate was already renamed: recovery finishes the job
        assert on_disk(pair) == new
    assert not pair.staged_cert.exists() and not pair.staged_key.exists()
    assert mode(pair.key) == 0o600
    # and the next replacement works from there
    newer = make_pair("newer")
    replace_pair(pair, *newer)
    assert on_disk(pair) == newer


def test_a_crash_while_staging_the_key(pairs):
    pair, old, new = pairs
    pair.staged_cert.write_bytes(new[0])
    pair.staged_key.write_bytes(new[1][:40])  # torn write
    (pair.key.parent / ".device.key.abc123.tmp").write_bytes(b"partial")
    assert "removed leftovers" in recover_pair(pair)
    assert on_disk(pair) == old
    assert sorted(p.name for p in pair.cert.parent.iterdir()) == ["device.key", "device.pem"]


def test_a_key_renamed_before_its_certificate_is_also_finished(pairs):
    pair, _, new = pairs
    stage_pair(pair, *new)
    commit_key(pair)  # the other order: new key, old certificate
    assert not is_pair(pair.cert, pair.key)
    assert "finished" in recover_pair(pair)
    assert on_disk(pair) == new


def test_recovery_without_leftovers_does_nothing(pairs):
    pair, old, _ = pairs
    assert recover_pair(pair) is None
    assert on_disk(pair) == old


def test_outputs_are_checked_before_anything_is_done(tmp_path):
    (tmp_path / "taken.pem").write_text("x")
    check_new_files([tmp_path / "free.pem", None], force=False)
    with pytest.raises(OutputExists):
        check_new_files([tmp_path / "free.pem", tmp_path / "taken.pem"], force=False)
    check_new_files([tmp_path / "taken.pem"], force=True)
    with pytest.raises(CannotWrite, match="does not exist"):
        check_new_files([tmp_path / "missing" / "out.pem"], force=True)
