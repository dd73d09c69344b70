"""Reading secret files (CA keys, token PINs) that only their owner may read.

Apart from authority/keys.py, which parses keys with cryptography, so that reading the
configuration (authority/token_settings.py) does not load it.
"""

from __future__ import annotations

import stat
from pathlib import Path


class KeyFileError(Exception):
    """A key file is missing, unreadable, of the wrong kind, or readable by others."""


def read_owner_only(path: Path, what: str = "key file") -> bytes:
    """The bytes of a secret file (a key, a PIN), refusing one that group or others may read:
    KeyFileError naming ``what`` otherwise."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{what} {path} has mode {stat.S_IMODE(mode):04o}; it must be 0600 (chmod 600 {path})"
        )
    return data
