"""HTTP Basic credentials (RFC 7617) as EST uses them (RFC 7030 §3.2.3)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from estkit.errors import BadRequest

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BasicCredentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log through repr()
        return f"BasicCredentials(user={self.user!r}, password=<hidden>)"


def parse_basic(header: str | None) -> BasicCredentials | None:
    """Credentials from an Authorization header; None when absent or empty.

    libest answers a 401 on a certificate-only reenroll with ``Basic Og==`` (empty user and
    password): that means "no credentials", and the TLS client certificate decides.
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BadRequest(f"unsupported Authorization scheme '{scheme[:20]}'; use Basic")
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the Authorization header's Basic credentials are not base64") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, colon, password = text.partition(":")
    if not colon:
        raise BadRequest("the Basic credentials have no ':' between user name and password")
    if _CONTROL.search(text):
        raise BadRequest("the Basic credentials contain a NUL or other control character")
    if not user and not password:
        return None
    return BasicCredentials(user, password)
