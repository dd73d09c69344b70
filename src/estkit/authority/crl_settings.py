"""The ``[crl]`` table: how long each CRL is valid and when the next one is signed.

Apart from authority/crl.py so that reading the configuration does not import the store
(every operator command reads it; see bench/RESULTS.md on command start-up)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from estkit.durations import parse_duration

DEFAULT_VALIDITY = timedelta(days=7)
DEFAULT_REFRESH_BEFORE = timedelta(days=1)
MAX_VALIDITY = timedelta(days=366)
MIN_VALIDITY = timedelta(minutes=1)


class CrlSettingError(ValueError):
    """A ``[crl]`` setting is invalid; names the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"crl.{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class CrlSettings:
    """The ``[crl]`` table."""

    validity: timedelta = DEFAULT_VALIDITY
    """nextUpdate - thisUpdate of each CRL."""
    refresh_before: timedelta = DEFAULT_REFRESH_BEFORE
    """A new CRL is signed once the newest one's nextUpdate is closer than this."""


def parse_crl_settings(table: Mapping[str, Any]) -> CrlSettings:
    values: dict[str, timedelta] = {}
    for key, value in table.items():
        if key not in ("validity", "refresh_before"):
            raise CrlSettingError(key, "unknown setting (known: validity, refresh_before)")
        if not isinstance(value, str):
            raise CrlSettingError(key, "must be a duration string such as '7d' or '12h'")
        try:
            values[key] = parse_duration(value, MAX_VALIDITY)
        except ValueError as exc:
            raise CrlSettingError(key, str(exc)) from None
    settings = CrlSettings(**values)
    if settings.validity < MIN_VALIDITY:
        raise CrlSettingError("validity", "must be at least 1m")
    if settings.refresh_before >= settings.validity:
        raise CrlSettingError(
            "refresh_before",
            "must be shorter than crl.validity (else every CRL is due as soon as it is signed)",
        )
    return settings
