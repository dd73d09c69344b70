"""Durations as operators write them: '90d', '12h', '30m', '600s' (decimals allowed)."""

from __future__ import annotations

import re
from datetime import timedelta

RENEW_BEFORE = "33%"
"""When a certificate is renewed by default: in the last third of its lifetime (the
client's renewal and ``estkit renew --before``)."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LONGEST = timedelta(days=999_999_999)


def parse_duration(text: str, maximum: timedelta | None = None) -> timedelta:
    """'90d' -> timedelta(days=90); ValueError naming the accepted forms otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not a duration: use a positive number with s, m, h or d "
            "(e.g. '90d', '12h', '30m', '600s')"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    limit = maximum or _LONGEST
    if seconds > limit.total_seconds():
        raise ValueError(f"{text!r} is longer than {format_duration(limit)}")
    return timedelta(seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """``7d``, ``12h``, ``90s``: the largest unit that divides the duration exactly."""
    seconds = duration.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"
