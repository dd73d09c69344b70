"""Base64 bodies as RFC 8951 defines them for EST.

RFC 8951 §3: EST bodies are base64 (RFC 4648) regardless of any Content-Transfer-Encoding
header, which is ignored.  Real clients wrap lines at 64 or 76 columns with LF or CRLF, and some
send none at all, so every kind of whitespace is skipped; anything else outside the alphabet is
an error, never silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import re

from estkit.errors import MalformedBase64

_WHITESPACE = re.compile(rb"[ \t\r\n]+")
_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
LINE_LENGTH = 64


def decode_body(body: bytes) -> bytes:
    """Decode a base64 EST body, tolerating whitespace anywhere and missing padding."""
    compact = _WHITESPACE.sub(b"", body)
    if not compact:
        raise MalformedBase64("the request body is empty; expected base64-encoded DER")
    if _ALPHABET.fullmatch(compact) is None:
        raise MalformedBase64(
            "the request body is not base64: RFC 8951 requires base64-encoded DER "
            "(characters outside A-Z a-z 0-9 + / = found)"
        )
    missing = -len(compact) % 4
    if missing == 3:
        raise MalformedBase64("the request body is not valid base64: truncated quantum")
    try:
        return base64.b64decode(compact + b"=" * missing, validate=True)
    except binascii.Error as exc:
        raise MalformedBase64(f"the request body is not valid base64: {exc}") from exc


def encode_body(der: bytes) -> bytes:
    """Encode DER as base64 in 64-column LF-terminated lines.

    Every EST client we know decodes this, and so do `base64 -d` and `openssl base64 -d`
    (coreutils refuses CR), which operators pipe curl output into.
    """
    text = base64.b64encode(der)
    lines = [text[i : i + LINE_LENGTH] for i in range(0, len(text), LINE_LENGTH)]
    return b"".join(line + b"\n" for line in lines)
