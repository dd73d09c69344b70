from datetime import timedelta

import pytest

from estkit.authority.profile import ProfileError, parse_profile
from estkit.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("600s", timedelta(seconds=600)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["forever", "10", "1w", "-5d", "d"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_single_key_table_is_a_valid_label_with_documented_defaults():
    profile = parse_profile("lab", {"require_pop": True})
    assert profile.require_pop is True
    assert profile.validity == timedelta(days=365)
    assert profile.key_types == ("rsa", "ec-p256", "ec-p384", "ed25519")
    assert profile.san_types == ()


@pytest.mark.parametrize(
    ("label", "table", "key", "reason"),
    [
        ("simpleenroll", {}, "simpleenroll", "named after an EST operation"),
        ("cacerts", {}, "cacerts", "named after an EST operation"),
        ("bad/label", {}, "bad/label", "labels are"),
        ("lab", {"validity": "forever"}, "validity", "not a duration"),
        ("lab", {"validity": "10s"}, "validity", "at least one minute"),
        ("lab", {"key_types": ["dsa"]}, "key_types", "'dsa' is not one of"),
        ("lab", {"key_types": []}, "key_types", "at least one"),
        ("lab", {"rsa_min_bits": 1024}, "rsa_min_bits", "2048 to 16384"),
        ("lab", {"extended_key_usage": ["anything"]}, "extended_key_usage", "not one of"),
        # A device certificate with ocspSigning could sign OCSP answers for the CA.
        ("lab", {"extended_key_usage": ["ocspSigning"]}, "extended_key_usage", "not one of"),
        ("lab", {"san_types": ["uri"]}, "san_types", "not one of"),
        ("lab", {"allowed_ips": ["10.0.0.0/33"]}, "allowed_ips", ""),
        ("lab", {"require_pop": "yes"}, "require_pop", "true or false"),
        ("lab", {"colour": "blue"}, "colour", "unknown setting"),
    ],
)
def test_bad_settings_name_the_key_and_reason(label, table, key, reason):
    with pytest.raises(ProfileError) as info:
        parse_profile(label, table)
    assert info.value.key == key
    assert reason in info.value.reason


@pytest.mark.parametrize("text", ["99999999999d", "36501d", "9" * 400 + "d"])
def test_validity_beyond_a_century_is_refused_with_the_limit(text):
    with pytest.raises(ProfileError, match="longer than 36500d"):
        parse_profile("lab", {"validity": text})
