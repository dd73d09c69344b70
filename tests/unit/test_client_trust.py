"""Fingerprints, what a pinned fingerprint vouches for, chains, and the bootstrap client."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from estkit.client import BasicAuth, CsrTemplate, EstClient, generate_key
from estkit.client.trust import (
    anchors_from_pin,
    chain_for,
    fingerprint,
    is_self_signed,
    matching_certificate,
    parse_fingerprint,
)

NOW = datetime.now(UTC)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject, key, issuer=None, issuer_key=None, ca=True):
    issuer = issuer or subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    root_key, issuing_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = issue("Root", root_key)
    issuing = issue("Issuing", issuing_key, "Root", root_key)
    leaf = issue("leaf", leaf_key, "Issuing", issuing_key, ca=False)
    # what an attacker answering the bootstrap could add: a look-alike issuing CA
    fake_key = ec.generate_private_key(ec.SECP256R1())
    fake = issue("Issuing", fake_key, "Root", fake_key)
    return root, issuing, leaf, fake


def test_fingerprint_format_and_parsing(pki):
    root = pki[0]
    digest = hashlib.sha256(root.public_bytes(Encoding.DER)).digest()
    text = fingerprint(root)
    assert text.startswith("SHA256:") and len(text) == 7 + 32 * 3 - 1
    for variant in (
        text,
        text.lower(),
        digest.hex(),
        "sha256=" + digest.hex().upper(),
        "SHA-256: " + text[7:].replace(":", " "),
    ):
        assert parse_fingerprint(variant) == digest
    for bad in ("SHA256:abcd", "SHA256:" + "zz" * 32, "", "SHA256:" + digest.hex() + "00"):
        with pytest.raises(ValueError, match="64 hex digits"):
            parse_fingerprint(bad)
    assert matching_certificate(list(pki), digest) == root


def test_a_pinned_root_vouches_only_for_what_it_signed(pki):
    root, issuing, _, fake = pki
    assert is_self_signed(root) and not is_self_signed(fake)
    assert anchors_from_pin([fake, issuing, root], root) == [root, issuing]


def test_a_pinned_intermediate_brings_its_verified_root(pki):
    root, issuing, _, fake = pki
    assert anchors_from_pin([issuing, fake, root], issuing) == [root, issuing]


def test_chain_for_orders_leaf_to_root(pki):
    root, issuing, leaf, fake = pki
    assert chain_for(leaf, [root, fake, issuing]) == [issuing]
    assert chain_for(leaf, [root, fake, issuing], include_root=True) == [issuing, root]
    assert chain_for(leaf, [fake]) == []


def test_bootstrap_client_never_carries_credentials():
    with pytest.raises(ValueError, match="never sent"):
        EstClient("https://est.example", None, auth=BasicAuth("u", "p"))
    client = EstClient("https://est.example", None)
    assert not client.verified
    assert "Authorization" not in client._headers()
    template = CsrTemplate(generate_key("ec-p256"), name("x"))
    for call in (client.csrattrs, lambda: client.enroll(template)):
        with pytest.raises(ValueError, match=r"verified|trust anchors"):
            call()
