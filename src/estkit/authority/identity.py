"""Who is asking, and over what channel: what the server hands the authority with a request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from estkit.store.records import UserRecord

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

OWN_ANCHOR = "estkit"
"""The anchor name of certificates issued by this CA, as used in a label's allow_anchors."""


@dataclass(frozen=True)
class Identity:
    """An authenticated requester: a Basic user or the holder of a TLS client certificate."""

    name: str
    method: Literal["basic", "certificate"]
    labels: tuple[str, ...] | None = None
    """Labels a user may enroll on (None: every label). Certificates are limited by anchors."""
    anchor: str | None = None
    """For certificates: OWN_ANCHOR, or the name of the third-party anchor that issued it."""
    certificate: x509.Certificate | None = None
    once: bool = False
    """A one-time bootstrap secret: consumed by the first enrollment it authorizes."""
    issued_on: str | None = None
    """For this CA's own certificates: the label the store records it was issued on, as
    read when the certificate was accepted (so renewal need not read the record again)."""
    account: UserRecord | None = None
    """For a Basic user recalled from memory (Accounts.recall): the account as it was read
    earlier, which the transaction that issues on its authority checks is still stored."""

    def describe(self) -> str:
        """How the identity appears in logs and records (never a secret).

        A certificate's CN comes from whoever issued it (a third-party anchor too) and may hold
        control characters, even NUL, which would forge log lines or be refused by a text
        column: they are shown escaped.
        """
        name = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", self.name)
        if self.method == "basic":
            return f"user:{name}"
        serial = format(self.certificate.serial_number, "x") if self.certificate else "?"
        return f"cert:{self.anchor}:{serial}:{name}"


@dataclass(frozen=True)
class Channel:
    """Facts about the TLS connection the request arrived on."""

    tls_version: str
    tls_unique: bytes | None
    peer_certificate: x509.Certificate | None
    peer_anchor: str | None
    """Which anchor issued the peer certificate (OWN_ANCHOR or a third-party name)."""
