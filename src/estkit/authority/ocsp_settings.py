"""The ``[ocsp]`` table of estkit.toml: lifetimes of the responder certificate and responses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from estkit.durations import parse_duration

MAX_RESPONDER_VALIDITY = timedelta(days=3650)


class OcspSettingError(ValueError):
    """An ``[ocsp]`` setting is invalid; carries the key so the message can name it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class OcspSettings:
    responder_validity: timedelta = timedelta(days=30)
    """Lifetime of the delegated responder certificate. It carries id-pkix-ocsp-nocheck, so
    clients never check its revocation: RFC 6960 §4.2.2.2.1 asks for a short lifetime and
    frequent renewal instead."""
    response_validity: timedelta = timedelta(hours=1)
    """nextUpdate - thisUpdate of every response: how long a client or cache may rely on it."""
    responder_key_in_token: bool = False
    """``responder_key = "token"``: responder keys are made in the issuing CA key's PKCS#11
    token (and never leave it) instead of a file in ca/."""


def parse_ocsp_settings(table: Mapping[str, Any]) -> OcspSettings:
    """``[ocsp]`` into settings; OcspSettingError names a bad key."""
    values: dict[str, timedelta] = {}
    in_token = False
    for key, value in table.items():
        if key == "responder_key":
            if value not in ("file", "token"):
                raise OcspSettingError(key, "must be 'file' or 'token'")
            in_token = value == "token"
            continue
        if key not in ("responder_validity", "response_validity"):
            raise OcspSettingError(
                key,
                "unknown setting (known: responder_validity, response_validity, responder_key)",
            )
        if not isinstance(value, str):
            raise OcspSettingError(key, "must be a duration string such as '30d' or '1h'")
        try:
            values[key] = parse_duration(value, maximum=MAX_RESPONDER_VALIDITY)
        except ValueError as exc:
            raise OcspSettingError(key, str(exc)) from None
    return OcspSettings(**values, responder_key_in_token=in_token)
