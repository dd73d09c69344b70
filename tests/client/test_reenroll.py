"""estkit reenroll: same key or --rekey, in place (atomic, with .bak) or to new files."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.client import generate_key
from estkit.client.files import key_pem
from tests.client.conftest import basic_args, file_mode, server_args


@pytest.fixture
def est_server(client_server):
    """These tests run on the server with the `tls` label (SANs, and clientAuth for mTLS)."""
    return client_server


@pytest.fixture
def device(renewing_device):
    return renewing_device


def enroll(cli, est_server, device, label="tls", *extra):
    result = cli(
        "enroll",
        *server_args(est_server, label),
        *basic_args(device),
        "--subject",
        f"CN={device.user},O=Fleet",
        "--san",
        f"DNS:{device.user}.example",
        "--san",
        "IP:192.0.2.7",
        *extra,
        "--out-cert",
        device.path("d.pem"),
        "--out-key",
        device.path("d.key"),
    )
    assert result.code == 0, result.err
    return device.path("d.pem"), device.path("d.key")


def leaf_and_key(cert_path, key_path):
    leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    return leaf, key


def sans(cert):
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_reenroll_in_place_keeps_key_subject_and_sans(cli, est_server, device):
    cert_path, key_path = enroll(cli, est_server, device)
    old_cert, old_key = cert_path.read_bytes(), key_path.read_bytes()
    old_leaf, _ = leaf_and_key(cert_path, key_path)

    result = cli(
        "reenroll", *server_args(est_server, "tls"), "--cert", cert_path, "--key", key_path
    )
    assert result.code == 0, result.err
    leaf, key = leaf_and_key(cert_path, key_path)
    assert leaf.serial_number != old_leaf.serial_number
    assert leaf.subject == old_leaf.subject and sans(leaf) == sans(old_leaf)
    assert key_path.read_bytes() == old_key
    assert leaf.public_key() == key.public_key()
    assert device.path("d.pem.bak").read_bytes() == old_cert
    assert device.path("d.key.bak").read_bytes() == old_key
    assert file_mode(key_path) == 0o600 and file_mode(device.path("d.key.bak")) == 0o600
    leftovers = [
        p.name
        for p in device.directory.iterdir()
        if "estkit-new" in p.name or p.name.endswith(".tmp")
    ]
    assert leftovers == []
    assert "identity=cert:estkit:" in est_server.log() and "/tls/simplereenroll" in est_server.log()


def test_reenroll_rekey_in_place(cli, est_server, device):
    cert_path, key_path = enroll(cli, est_server, device, "tls", "--key-type", "ec-p384")
    old_leaf, old_key = leaf_and_key(cert_path, key_path)
    result = cli(
        "reenroll",
        *server_args(est_server, "tls"),
        "--cert",
        cert_path,
        "--key",
        key_path,
        "--rekey",
    )
    assert result.code == 0, result.err
    leaf, key = leaf_and_key(cert_path, key_path)
    assert key.public_key() != old_key.public_key()
    assert leaf.public_key() == key.public_key()
    assert key.curve.name == old_key.curve.name == "secp384r1"
    assert leaf.subject == old_leaf.subject and sans(leaf) == sans(old_leaf)
    assert file_mode(key_path) == 0o600
    bak_leaf, bak_key = leaf_and_key(device.path("d.pem.bak"), device.path("d.key.bak"))
    assert bak_leaf == old_leaf and bak_key.public_key() == old_key.public_key()


def test_reenroll_to_other_files_leaves_the_pair_alone(cli, est_server, device):
    cert_path, key_path = enroll(cli, est_server, device)
    before = cert_path.read_bytes(), key_path.read_bytes()
    out_cert, out_key = device.path("new.pem"), device.path("new.key")
    out_key.write_text("taken")
    args = (
        "reenroll",
        *server_args(est_server, "tls"),
        "--cert",
        cert_path,
        "--key",
        key_path,
        "--rekey",
        "--out-cert",
        out_cert,
        "--out-key",
        out_key,
    )
    refused = cli(*args)
    assert refused.code == 1 and "--force" in refused.error_lines[0]
    assert not out_cert.exists() and out_key.read_text() == "taken"

    result = cli(*args, "--force")
    assert result.code == 0, result.err
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before
    leaf, key = leaf_and_key(out_cert, out_key)
    assert leaf.public_key() == key.public_key()
    assert not device.path("d.pem.bak").exists()


def test_reenroll_rekey_to_a_new_certificate_file_needs_a_key_file(cli, est_server, device):
    cert_path, key_path = enroll(cli, est_server, device)
    result = cli(
        "reenroll",
        *server_args(est_server, "tls"),
        "--cert",
        cert_path,
        "--key",
        key_path,
        "--rekey",
        "--out-cert",
        device.path("new.pem"),
    )
    assert result.code == 1
    assert "--out-key" in result.error_lines[0]


def test_reenroll_on_a_pop_label_links_the_csr(cli, est_server, device):
    cert_path, key_path = enroll(cli, est_server, device, "pop")
    result = cli(
        "reenroll", *server_args(est_server, "pop"), "--cert", cert_path, "--key", key_path
    )
    assert result.code == 0, result.err
    assert "/pop/simplereenroll label=pop status=200" in est_server.log()


def test_reenroll_with_a_mismatched_key_is_refused_locally(cli, est_server, device):
    cert_path, _ = enroll(cli, est_server, device)
    other = device.path("other.key")
    other.write_bytes(key_pem(generate_key("ec-p256")))
    result = cli("reenroll", *server_args(est_server, "tls"), "--cert", cert_path, "--key", other)
    assert result.code == 1
    assert "not a pair" in result.error_lines[0]


def test_a_certificate_not_for_client_authentication_gets_a_clear_line(cli, est_server, device):
    cert_path, key_path = enroll(cli, est_server, device, "serveronly")
    before = cert_path.read_bytes(), key_path.read_bytes()
    result = cli(
        "reenroll", *server_args(est_server, "serveronly"), "--cert", cert_path, "--key", key_path
    )
    assert result.code == 3
    assert len(result.error_lines) == 1
    assert "refused the TLS client certificate" in result.error_lines[0]
    assert "clientAuth" in result.error_lines[0]
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before
