"""What operators type for revocation, CRL settings and audit windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from estkit.authority.crl_settings import CrlSettingError, CrlSettings, parse_crl_settings
from estkit.authority.revocation import canonical_reason, parse_serial
from estkit.cli.audit import parse_since
from estkit.cli.common import CommandError


@pytest.mark.parametrize(
    ("text", "serial"),
    [
        ("7D4C2B", "7d4c2b"),
        ("7d:4c:2b", "7d4c2b"),
        ("00:7D:4C:2B", "7d4c2b"),
        ("0x7d4c2b", "7d4c2b"),
        (" 0A ", "a"),
        ("0", "0"),
        ("f" * 40, "f" * 40),
    ],
)
def test_serial_forms(text, serial):
    assert parse_serial(text) == serial


@pytest.mark.parametrize("text", ["", ":", "0x", "12-34", "g1", "1" * 41, "-1"])
def test_not_a_serial(text):
    with pytest.raises(ValueError, match="serial number"):
        parse_serial(text)


def test_reasons_any_case_to_rfc_spelling():
    assert canonical_reason("keycompromise") == "keyCompromise"
    assert canonical_reason("CACOMPROMISE") == "cACompromise"
    assert canonical_reason("unspecified") == "unspecified"


def test_unknown_reason_lists_the_revocable_ones():
    with pytest.raises(ValueError, match="choose one of unspecified, keyCompromise") as caught:
        canonical_reason("stolen")
    assert "removeFromCRL" not in str(caught.value)
    with pytest.raises(ValueError, match="delta CRLs"):
        canonical_reason("removeFromCRL")


def test_crl_settings_defaults_and_values():
    assert parse_crl_settings({}) == CrlSettings(timedelta(days=7), timedelta(days=1))
    settings = parse_crl_settings({"validity": "2d", "refresh_before": "12h"})
    assert settings == CrlSettings(timedelta(days=2), timedelta(hours=12))


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"validity": "1d", "refresh_before": "2d"}, "refresh_before"),
        ({"refresh_before": "7d"}, "refresh_before"),
        ({"validity": "30s", "refresh_before": "10s"}, "validity"),
        ({"validity": 7}, "validity"),
        ({"validity": "400d"}, "validity"),
        ({"lifetime": "7d"}, "lifetime"),
    ],
)
def test_bad_crl_settings_name_the_key(table, key):
    with pytest.raises(CrlSettingError) as caught:
        parse_crl_settings(table)
    assert caught.value.key == key


NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("1h", NOW - timedelta(hours=1)),
        ("7d", NOW - timedelta(days=7)),
        ("2030-05-31T00:00:00Z", datetime(2030, 5, 31, tzinfo=UTC)),
        ("2030-05-31", datetime(2030, 5, 31, tzinfo=UTC)),
        ("2030-05-31T02:00:00+02:00", datetime(2030, 5, 31, tzinfo=UTC)),
    ],
)
def test_since(text, since):
    assert parse_since(text, NOW) == since


@pytest.mark.parametrize("text", ["yesterday", "1w", "", "2030-02-30"])
def test_bad_since(text):
    with pytest.raises(CommandError, match="ISO 8601"):
        parse_since(text, NOW)
