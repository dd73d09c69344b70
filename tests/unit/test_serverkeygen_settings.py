"""serverkeygen label settings and the key archive's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from estkit.authority.profile import ProfileError, parse_profile
from estkit.config import ConfigError, load_config
from tests.estserver import init_instance


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "ec-p256"),
        ({"key_types": ["rsa"], "rsa_min_bits": 3072}, "rsa-3072"),
        ({"key_types": ["ed25519", "ec-p384"]}, "ed25519"),
        ({"serverkeygen_key_type": "rsa-4096"}, "rsa-4096"),
    ],
)
def test_key_type_default_is_one_the_label_accepts(table, expected):
    assert parse_profile("x", table).serverkeygen_key == expected


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ({"serverkeygen_key_type": "dsa"}, "must be one of"),
        ({"serverkeygen_key_type": 256}, "must be one of"),
        ({"key_types": ["rsa"], "serverkeygen_key_type": "ec-p256"}, "not allowed by key_types"),
        ({"rsa_min_bits": 3072, "serverkeygen_key_type": "rsa-2048"}, "rsa_min_bits"),
        ({"serverkeygen_archive": "yes"}, "true or false"),
    ],
)
def test_bad_settings_are_refused(table, reason):
    with pytest.raises(ProfileError) as raised:
        parse_profile("x", table)
    assert raised.value.key in table
    assert reason in raised.value.reason


def test_archival_needs_an_archive_certificate(tmp_path: Path):
    directory = init_instance(tmp_path / "i", "[labels.kept]\nserverkeygen_archive = true\n")
    with pytest.raises(ConfigError) as raised:
        load_config(directory)
    assert raised.value.key == "labels.kept.serverkeygen_archive"
    assert "recipient_cert" in raised.value.reason


def test_archive_certificate_must_exist(tmp_path: Path):
    directory = init_instance(tmp_path / "i", '[key_archive]\nrecipient_cert = "nope.pem"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(directory)
    assert raised.value.key == "key_archive.recipient_cert"


def test_archive_certificate_is_loaded(tmp_path: Path):
    directory = init_instance(tmp_path / "i", '[key_archive]\nrecipient_cert = "ca/root.pem"\n')
    assert load_config(directory).key_archive_recipient == directory / "ca" / "root.pem"
