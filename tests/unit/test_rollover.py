"""CA rollover certificates: each chain a relying party may build validates with openssl."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from estkit.authority.keys import generate_key, load_private_key
from estkit.authority.pki import create_pki
from estkit.authority.rollover import next_generation_name, roll_issuing, roll_root


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@pytest.mark.parametrize(
    ("cn", "expected"),
    [("acme Root CA", "acme Root CA G2"), ("acme Root CA G2", "acme Root CA G3"), ("G9", "G9 G2")],
)
def test_next_generation_name(cn, expected):
    new = next_generation_name(name(cn))
    assert new.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == expected
    assert new.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "acme"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    create_pki(directory, "acme", "ec-p256", ["localhost"])
    load = lambda f: x509.load_pem_x509_certificate((directory / f).read_bytes())  # noqa: E731
    return {
        "dir": directory,
        "root": load("ca/root.pem"),
        "root_key": load_private_key(directory / "ca/root.key"),
        "issuing": load("ca/issuing.pem"),
    }


def leaf_under(issuer: x509.Certificate, issuer_key) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name("device"))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(issuer.not_valid_after_utc)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def openssl_verify(tmp_path, anchor, untrusted, leaf) -> subprocess.CompletedProcess:
    def pem(path, certs):
        path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
        return str(path)

    return subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            pem(tmp_path / "anchor.pem", [anchor]),
            "-untrusted",
            pem(tmp_path / "untrusted.pem", untrusted),
            pem(tmp_path / "leaf.pem", [leaf]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_issuing_rollover_chains_to_the_same_root(pki, tmp_path):
    now = datetime.now(UTC)
    new = roll_issuing(pki["root"], pki["root_key"], pki["issuing"], generate_key("ec-p256"), now)
    assert new.certificate.issuer == pki["root"].subject
    assert new.certificate.subject != pki["issuing"].subject
    assert new.certificate.not_valid_after_utc <= pki["root"].not_valid_after_utc
    leaf = leaf_under(new.certificate, new.key)
    result = openssl_verify(tmp_path, pki["root"], [new.certificate], leaf)
    assert result.returncode == 0, result.stdout + result.stderr


def test_root_rollover_links_validate_both_ways(pki, tmp_path):
    now = datetime.now(UTC)
    rolled = roll_root(pki["root"], pki["root_key"], generate_key("ec-p256"), now)
    new_root = rolled.new_root.certificate
    new_issuing = roll_issuing(
        new_root, rolled.new_root.key, pki["issuing"], generate_key("ec-p256"), now
    )
    new_leaf = leaf_under(new_issuing.certificate, new_issuing.key)
    old_issuing_key = load_private_key(pki["dir"] / "ca/issuing.key")
    old_leaf = leaf_under(pki["issuing"], old_issuing_key)

    # NewWithNew validates new chains; a client that trusts only the old root needs NewWithOld.
    assert openssl_verify(tmp_path, new_root, [new_issuing.certificate], new_leaf).returncode == 0
    assert (
        openssl_verify(tmp_path, pki["root"], [new_issuing.certificate], new_leaf).returncode != 0
    )
    result = openssl_verify(
        tmp_path, pki["root"], [rolled.new_with_old, new_issuing.certificate], new_leaf
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # A client that already trusts only the new root validates old chains through OldWithNew.
    assert openssl_verify(tmp_path, new_root, [pki["issuing"]], old_leaf).returncode != 0
    result = openssl_verify(tmp_path, new_root, [rolled.old_with_new, pki["issuing"]], old_leaf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert rolled.old_with_new.not_valid_after_utc == pki["root"].not_valid_after_utc
    assert rolled.new_with_old.public_key() == new_root.public_key()
    assert rolled.old_with_new.public_key() == pki["root"].public_key()
