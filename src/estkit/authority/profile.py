"""A label's issuance profile: what it asks for in CSRs, what it accepts, and what it signs.

Each ``[labels.<name>]`` table of estkit.toml (and the ``[profile]`` table for the unlabelled
path) becomes one :class:`Profile`; every field has a default so a one-key table is valid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from estkit.authority.labels import DEFAULT_LABEL, LABEL_PATTERN
from estkit.durations import parse_duration

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

EKU_NAMES: dict[str, ObjectIdentifier] = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ipsecIKE": ExtendedKeyUsageOID.IPSEC_IKE,
}
PROFILE_KEY_TYPES = ("rsa", "ec-p256", "ec-p384", "ed25519")
SAN_TYPES = ("dns", "ip")
OPERATION_NAMES = frozenset(
    {"cacerts", "simpleenroll", "simplereenroll", "csrattrs", "serverkeygen", "fullcmc"}
)
APPROVAL_MODES = ("auto", "manual")
DEFAULT_APPROVAL_RETRY_AFTER = 60
"""Seconds a manual-approval label tells waiting clients to wait before asking again."""
MAX_VALIDITY = timedelta(days=36500)
"""100 years: issued certificates end with the issuing CA anyway, and a larger value would
overflow date arithmetic when a certificate is built."""


class ProfileError(ValueError):
    """A profile setting is invalid; carries the key so the message can name it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Profile:
    """Issuance policy and certificate content for one label."""

    label: str = DEFAULT_LABEL
    validity: timedelta = timedelta(days=365)
    key_types: tuple[str, ...] = PROFILE_KEY_TYPES
    rsa_min_bits: int = 2048
    extended_key_usage: tuple[str, ...] = ("clientAuth",)
    require_subject: bool = True
    cn_must_equal_identity: bool = False
    allowed_cn: tuple[str, ...] = ("*",)
    san_types: tuple[str, ...] = ()
    allowed_dns: tuple[str, ...] = ("*",)
    allowed_ips: tuple[IpNetwork, ...] = (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    allow_users: tuple[str, ...] = ("*",)
    allow_anchors: tuple[str, ...] = ()
    """Issuers whose TLS client certificates may do initial enrollment (not renewal)."""
    require_pop: bool = False
    cmc_revokers: tuple[str, ...] = ()
    """Glob patterns of Basic users who may revoke this label's certificates with a Full CMC
    revokeRequest (RFC 5272 §6.11); a certificate's holder may always revoke it."""
    approval: str = "auto"
    """'manual': initial enrollments wait for an operator's decision (RFC 7030 §4.2.3)."""
    retry_after: int = DEFAULT_APPROVAL_RETRY_AFTER
    """Retry-After seconds of the 202 answer to a request awaiting approval."""
    serverkeygen_key_type: str = ""
    """Key type /serverkeygen generates (RFC 7030 §4.4); "" picks ec-p256, or the first
    type key_types allows (RSA at rsa_min_bits)."""
    serverkeygen_archive: bool = False
    """Keep an encrypted copy of each server-generated key ([key_archive] recipient_cert)."""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def eku_oids(self) -> tuple[ObjectIdentifier, ...]:
        return tuple(EKU_NAMES[name] for name in self.extended_key_usage)

    @property
    def serverkeygen_key(self) -> str:
        """The key type serverkeygen generates on this label (a wire.keytypes name)."""
        if self.serverkeygen_key_type:
            return self.serverkeygen_key_type
        if "ec-p256" in self.key_types:
            return "ec-p256"
        first = self.key_types[0]
        return f"rsa-{self.rsa_min_bits}" if first == "rsa" else first


def _string_list(key: str, value: Any, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(key, "must be a list of strings")
    if allowed is not None:
        for item in value:
            if item not in allowed:
                raise ProfileError(key, f"{item!r} is not one of {', '.join(allowed)}")
    return tuple(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(key, "must be true or false")
    return value


def parse_profile(label: str, table: Mapping[str, Any]) -> Profile:
    """Build a Profile from a TOML table, naming the first bad key."""
    if label != DEFAULT_LABEL:
        if label in OPERATION_NAMES:
            raise ProfileError(label, "a label cannot be named after an EST operation")
        if LABEL_PATTERN.fullmatch(label) is None:
            raise ProfileError(
                label, "labels are 1-64 characters of A-Z a-z 0-9 . _ - (starting alphanumeric)"
            )
    values: dict[str, Any] = {"label": label}
    known = {f.name for f in fields(Profile)} - {"label", "extra"}
    for key, value in table.items():
        if key not in known:
            raise ProfileError(key, f"unknown setting (known: {', '.join(sorted(known))})")
        values[key] = _parse_setting(key, value)
    profile = Profile(**values)
    _check_serverkeygen_key_type(profile)
    return profile


SERVERKEYGEN_KEY_TYPES = ("ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096")


def _check_serverkeygen_key_type(profile: Profile) -> None:
    """The generated key must be one the label would accept in a CSR."""
    key_type = profile.serverkeygen_key_type
    if not key_type:
        return
    family = "rsa" if key_type.startswith("rsa-") else key_type
    if family not in profile.key_types:
        raise ProfileError(
            "serverkeygen_key_type",
            f"{key_type!r} is not allowed by key_types ({', '.join(profile.key_types)})",
        )
    if family == "rsa" and int(key_type[4:]) < profile.rsa_min_bits:
        raise ProfileError(
            "serverkeygen_key_type",
            f"{key_type!r} is smaller than rsa_min_bits ({profile.rsa_min_bits})",
        )


def _parse_setting(key: str, value: Any) -> Any:
    if key == "validity":
        if not isinstance(value, str):
            raise ProfileError(key, "must be a duration string such as '90d'")
        try:
            duration = parse_duration(value, maximum=MAX_VALIDITY)
        except ValueError as exc:
            raise ProfileError(key, str(exc)) from exc
        if duration < timedelta(minutes=1):
            raise ProfileError(key, "must be at least one minute")
        return duration
    if key == "key_types":
        types = _string_list(key, value, PROFILE_KEY_TYPES)
        if not types:
            raise ProfileError(key, "must allow at least one key type")
        return types
    if key == "rsa_min_bits":
        if not isinstance(value, int) or isinstance(value, bool) or not 2048 <= value <= 16384:
            raise ProfileError(key, "must be an integer from 2048 to 16384")
        return value
    if key == "extended_key_usage":
        return _string_list(key, value, tuple(EKU_NAMES))
    if key == "san_types":
        return _string_list(key, value, SAN_TYPES)
    if key == "serverkeygen_key_type":
        if not isinstance(value, str) or value not in SERVERKEYGEN_KEY_TYPES:
            raise ProfileError(key, f"must be one of {', '.join(SERVERKEYGEN_KEY_TYPES)}")
        return value
    if key in ("allowed_cn", "allowed_dns", "allow_users", "allow_anchors", "cmc_revokers"):
        return _string_list(key, value)
    if key == "allowed_ips":
        networks = []
        for item in _string_list(key, value):
            try:
                networks.append(ipaddress.ip_network(item))
            except ValueError as exc:
                raise ProfileError(key, str(exc)) from exc
        return tuple(networks)
    if key == "approval":
        if value not in APPROVAL_MODES:
            raise ProfileError(key, f"must be one of {', '.join(APPROVAL_MODES)}")
        return value
    if key == "retry_after":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 86400:
            raise ProfileError(key, "must be a whole number of seconds from 1 to 86400")
        return value
    return _bool(key, value)
