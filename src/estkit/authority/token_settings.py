"""What names a signing key in a PKCS#11 token: the ``pkcs11:`` URI and the ``[pkcs11]``
table (module, PIN source).

Apart from authority/token.py, which loads python-pkcs11 and talks to the token, so that
reading the configuration does not import the PKCS#11 binding (every operator command reads
it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from estkit.authority.secret_files import KeyFileError, read_owner_only

URI_SCHEME = "pkcs11:"
DEFAULT_PIN_ENV = "ESTKIT_PKCS11_PIN"


class TokenError(KeyFileError):
    """The PKCS#11 module, token, PIN or key object is missing or refused.

    A KeyFileError, so every command that reports an unusable CA key reports this too.
    """


@dataclass(frozen=True)
class Pkcs11Uri:
    """``pkcs11:token=LABEL;object=LABEL`` (RFC 7512; the attributes this server needs)."""

    token: str
    object: str

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        """ValueError names what is wrong; query attributes (``?pin-value=``) are refused so
        that a PIN is never written into the configuration."""
        if not text.startswith(URI_SCHEME):
            raise ValueError(f"{text!r} is not a pkcs11: URI")
        body = text[len(URI_SCHEME) :]
        if "?" in body:
            raise ValueError(
                "query attributes are not supported; the PIN comes from [pkcs11] pin_file "
                "or pin_env"
            )
        attributes: dict[str, str] = {}
        for part in filter(None, body.split(";")):
            name, sep, value = part.partition("=")
            if not sep or name not in ("token", "object", "type"):
                raise ValueError(f"unsupported attribute {part!r} (use token=...;object=...)")
            attributes[name] = unquote(value)
        if attributes.get("type", "private") != "private":
            raise ValueError("type must be 'private': the URI names the signing key")
        if not attributes.get("token") or not attributes.get("object"):
            raise ValueError("needs both token=LABEL and object=LABEL")
        return cls(attributes["token"], attributes["object"])

    def __str__(self) -> str:
        return (
            f"{URI_SCHEME}token={quote(self.token, safe='')};object={quote(self.object, safe='')}"
        )


@dataclass(frozen=True)
class TokenSettings:
    """The ``[pkcs11]`` table: the module, and where the user PIN comes from."""

    module: Path
    pin_file: Path | None = None
    pin_env: str | None = None

    def pin(self) -> str:
        """The user PIN, from the file (owner-readable only) or the environment variable."""
        if self.pin_file is not None:
            try:
                text = read_owner_only(self.pin_file, "PIN file").decode("utf-8")
            except (KeyFileError, UnicodeDecodeError) as exc:
                raise TokenError(str(exc)) from None
            pin = text.strip("\r\n")
            if not pin:
                raise TokenError(f"PIN file {self.pin_file} is empty")
            return pin
        name = self.pin_env or DEFAULT_PIN_ENV
        pin = os.environ.get(name, "")
        if not pin:
            raise TokenError(f"the PKCS#11 user PIN is not set: export {name}")
        return pin


@dataclass(frozen=True)
class TokenKeyRef:
    """A signing key in a token: the configuration's ``pkcs11:`` URI and ``[pkcs11]`` table."""

    settings: TokenSettings
    uri: Pkcs11Uri

    def __str__(self) -> str:
        return str(self.uri)


KeyRef = Path | TokenKeyRef
"""Where a signing key is: a PEM file, or an object in a PKCS#11 token."""
