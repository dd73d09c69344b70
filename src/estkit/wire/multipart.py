"""The serverkeygen answer (RFC 7030 §4.4.2): a two-part ``multipart/mixed`` body.

One part carries the private key the server made, ``application/pkcs8`` (a DER
PrivateKeyInfo, RFC 5958); the other its certificate, ``application/pkcs7-mime;
smime-type=certs-only``. Both are base64 (RFC 8951 §3: whatever Content-Transfer-Encoding
says), the parts may come in either order, and lines may end in CRLF or LF.

Parsing is left to the standard library's MIME parser (``email``); this module only checks
that the two expected parts are there, once each, and decodes them.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import os
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser

from estkit.errors import BadRequest

PKCS8_TYPE = "application/pkcs8"
PKCS7_TYPE = "application/pkcs7-mime"
CERTS_ONLY = "certs-only"
SERVER_GENERATED_KEY = "server-generated-key"
MULTIPART_MIXED = "multipart/mixed"
LINE_LENGTH = 64

_WHITESPACE = re.compile(r"[ \t\r\n]+")
_ALPHABET = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_FATAL_DEFECTS = (
    "NoBoundaryInMultipartDefect",
    "StartBoundaryNotFoundDefect",
    "CloseBoundaryNotFoundDefect",
    "MultipartInvariantViolationDefect",
)


class MalformedMultipart(BadRequest):
    """The body is not the two-part multipart/mixed that RFC 7030 §4.4.2 describes."""


@dataclass(frozen=True)
class ServerKeygenParts:
    """The decoded parts of a serverkeygen answer: DER PrivateKeyInfo and DER certs-only."""

    private_key_der: bytes
    certs_only_der: bytes


def _decode_base64(text: str, what: str) -> bytes:
    compact = _WHITESPACE.sub("", text)
    if not compact or _ALPHABET.fullmatch(compact) is None:
        raise MalformedMultipart(f"the {what} part is not base64 (RFC 8951)")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMultipart(f"the {what} part is not valid base64: {exc}") from exc


def _payload_text(part: Message, what: str) -> str:
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        raise MalformedMultipart(f"the {what} part is itself multipart")
    return payload


def parse_serverkeygen(content_type: str, body: bytes) -> ServerKeygenParts:
    """The key and certificate parts of a serverkeygen answer.

    ``content_type`` is the response's Content-Type header (it carries the boundary).
    Raises :class:`MalformedMultipart` naming what is missing or wrong.
    """
    if "\n" in content_type or "\r" in content_type:
        raise MalformedMultipart("the Content-Type header holds a line break")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=email.policy.compat32).parsebytes(head + body)
    if message.get_content_type() != MULTIPART_MIXED:
        raise MalformedMultipart(f"expected {MULTIPART_MIXED}, got '{message.get_content_type()}'")
    defects = [type(d).__name__ for d in message.defects]
    if not message.is_multipart() or any(d in _FATAL_DEFECTS for d in defects):
        problem = ", ".join(defects) or "no parts"
        raise MalformedMultipart(f"the multipart/mixed body cannot be split into parts ({problem})")
    key: bytes | None = None
    certs: bytes | None = None
    for part in message.get_payload():
        assert isinstance(part, Message)
        media_type = part.get_content_type()
        smime_type = str(part.get_param("smime-type") or "").lower()
        if media_type == PKCS8_TYPE:
            if key is not None:
                raise MalformedMultipart("the answer holds two application/pkcs8 parts")
            key = _decode_base64(_payload_text(part, "private key"), "private key")
        elif media_type == PKCS7_TYPE and smime_type == SERVER_GENERATED_KEY:
            raise MalformedMultipart(
                "the server encrypted the private key (smime-type=server-generated-key); "
                "only unencrypted application/pkcs8 keys are supported"
            )
        elif media_type == PKCS7_TYPE and smime_type in ("", CERTS_ONLY):
            if certs is not None:
                raise MalformedMultipart("the answer holds two certs-only parts")
            certs = _decode_base64(_payload_text(part, "certificate"), "certificate")
    if key is None:
        raise MalformedMultipart("the answer has no application/pkcs8 (private key) part")
    if certs is None:
        raise MalformedMultipart(
            "the answer has no application/pkcs7-mime; smime-type=certs-only (certificate) part"
        )
    return ServerKeygenParts(key, certs)


def _base64_lines(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"".join(text[i : i + LINE_LENGTH] + b"\r\n" for i in range(0, len(text), LINE_LENGTH))


def encode_serverkeygen(
    private_key_der: bytes,
    certs_only_der: bytes,
    boundary: str | None = None,
    encrypted: bool = False,
) -> tuple[str, bytes]:
    """(Content-Type, body) of a serverkeygen answer: key part first, CRLF line ends.

    ``encrypted``: ``private_key_der`` is a CMS EnvelopedData, sent as ``application/
    pkcs7-mime; smime-type=server-generated-key`` instead of ``application/pkcs8``.
    """
    boundary = boundary or "estkit-" + os.urandom(12).hex()
    dash = f"--{boundary}".encode("ascii")
    key_type = f"{PKCS7_TYPE}; smime-type={SERVER_GENERATED_KEY}" if encrypted else PKCS8_TYPE
    body = b"".join(
        [
            dash + b"\r\n",
            f"Content-Type: {key_type}\r\n".encode("ascii"),
            b"Content-Transfer-Encoding: base64\r\n\r\n",
            _base64_lines(private_key_der),
            dash + b"\r\n",
            f"Content-Type: {PKCS7_TYPE}; smime-type={CERTS_ONLY}\r\n".encode("ascii"),
            b"Content-Transfer-Encoding: base64\r\n\r\n",
            _base64_lines(certs_only_der),
            dash + b"--\r\n",
        ]
    )
    return f"{MULTIPART_MIXED}; boundary={boundary}", body
