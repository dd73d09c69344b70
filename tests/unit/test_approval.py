"""Manual approval: the label settings and what makes two requests "identical"."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AttributeOID, NameOID

from estkit.authority.approval import DecisionError, check_reason, request_fingerprint
from estkit.authority.profile import ProfileError, parse_profile
from estkit.config import ConfigError, load_config
from tests.esthttp import make_csr, new_key


def test_approval_defaults_to_auto_with_a_documented_retry_after() -> None:
    profile = parse_profile("lab", {})
    assert profile.approval == "auto"
    assert profile.retry_after == 60
    manual = parse_profile("lab", {"approval": "manual", "retry_after": 300})
    assert (manual.approval, manual.retry_after) == ("manual", 300)


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"approval": "maybe"}, "approval", "must be one of auto, manual"),
        ({"approval": True}, "approval", "must be one of auto, manual"),
        ({"retry_after": 0}, "retry_after", "from 1 to 86400"),
        ({"retry_after": 86401}, "retry_after", "from 1 to 86400"),
        ({"retry_after": "60"}, "retry_after", "whole number of seconds"),
        ({"retry_after": True}, "retry_after", "whole number of seconds"),
        ({"retry_after": 1.5}, "retry_after", "whole number of seconds"),
    ],
)
def test_bad_approval_settings_name_the_key(table: dict, key: str, reason: str) -> None:
    with pytest.raises(ProfileError, match=reason) as caught:
        parse_profile("lab", table)
    assert caught.value.key == key


def test_config_error_names_the_label_setting(tmp_path: Path) -> None:
    (tmp_path / "estkit.toml").write_text(
        '[ca]\nroot_cert = "r"\nissuing_cert = "i"\nissuing_key = "k"\n'
        '[tls]\ncert = "c"\nkey = "k"\n'
        '[labels.hold]\napproval = "later"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.key == "labels.hold.approval"


def _csr(key, attributes=(), subject="dev") -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    )
    for oid, value in attributes:
        builder = builder.add_attribute(oid, value)
    return builder.sign(key, hashes.SHA256())


def test_fingerprint_ignores_signature_and_challenge_password_only() -> None:
    key = new_key()
    plain = _csr(key)
    resigned = _csr(key)
    assert plain.signature != resigned.signature
    linked_a = _csr(key, [(AttributeOID.CHALLENGE_PASSWORD, b"tls-unique-of-connection-a")])
    linked_b = _csr(key, [(AttributeOID.CHALLENGE_PASSWORD, b"tls-unique-of-connection-b")])
    same = {request_fingerprint(c) for c in (plain, resigned, linked_a, linked_b)}
    assert len(same) == 1

    other_attribute = _csr(key, [(AttributeOID.UNSTRUCTURED_NAME, b"building 7")])
    other_subject = _csr(key, subject="dev-2")
    other_key = _csr(new_key())
    _, with_san = make_csr("dev", key=key, sans=[x509.DNSName("dev.example")])
    different = [
        other_attribute,
        other_subject,
        other_key,
        x509.load_der_x509_csr(with_san),
    ]
    fingerprints = {request_fingerprint(c) for c in different}
    assert len(fingerprints) == len(different)
    assert not fingerprints & same


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("", "give a reason"),
        ("   ", "give a reason"),
        ("line\nbreak", "one line"),
        ("tab\there", "one line"),
        ("bell\x07", "one line"),
        ("x" * 301, "at most 300"),
    ],
)
def test_rejection_reasons_are_one_printable_line(reason: str, message: str) -> None:
    with pytest.raises(DecisionError, match=message):
        check_reason(reason)


def test_rejection_reason_is_trimmed() -> None:
    assert check_reason("  not in the inventory \n") == "not in the inventory"
