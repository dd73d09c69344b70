"""Writing certificates and keys: atomically, never clobbering by surprise, keys owner-only.

A single file is written to a temporary file in the same directory, fsync'd, renamed over
its name, and the directory is fsync'd: readers see the old file or the new one, never half.

A certificate and its key are two files, and no file system renames two at once. A pair is
therefore replaced in steps that leave something recoverable after a crash at any point:

1. **stage**: the new certificate and the new key are written to ``CERT.estkit-new`` and
   ``KEY.estkit-new`` and fsync'd (the key with mode 0600);
2. **back up**: the current pair is copied to ``CERT.bak`` and ``KEY.bak``;
3. **commit**: ``CERT.estkit-new`` is renamed over CERT, then ``KEY.estkit-new`` over KEY,
   fsync'ing the directory after each rename.

A crash before step 3 leaves the old pair in place; leftovers are deleted by the next run.
A crash between the two renames of step 3 leaves the new certificate with the old key;
:func:`recover_pair` (run before every replacement) sees that the staged key matches the
certificate on disk and finishes the rename. When only the certificate changes (renewal
without a new key) step 3 is a single rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

STAGED_SUFFIX = ".estkit-new"
BACKUP_SUFFIX = ".bak"
KEY_MODE = 0o600
CERT_MODE = 0o644


class CannotWrite(Exception):
    """An output file cannot be written where it was asked for."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class OutputExists(CannotWrite):
    """A file would be overwritten and the caller did not allow it (``--force``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, f"{path} already exists; refusing to overwrite it (use --force)")


class PairError(Exception):
    """The certificate and key files on disk cannot be used (unreadable or not a pair)."""


def key_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM, unencrypted: the file's mode (0600) protects it."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def certificates_pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temporary(directory: Path, data: bytes, mode: int, prefix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            Path(name).unlink()
        raise
    return Path(name)


def check_new_files(paths: Sequence[Path | None], force: bool) -> None:
    """Refuse early (before any network traffic) if an output exists and ``force`` is off."""
    for path in paths:
        if path is None:
            continue
        if not force and path.exists():
            raise OutputExists(path)
        directory = path.parent if str(path.parent) else Path()
        if not directory.is_dir():
            raise CannotWrite(
                path, f"cannot write {path}: the directory {directory} does not exist"
            )


def write_file(path: Path, data: bytes, mode: int = CERT_MODE, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``.

    Without ``overwrite`` an existing file is never replaced, even one created while this
    runs (the temporary file is hard-linked to the name, which fails if the name exists).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path()
    temporary = _write_temporary(directory, data, mode, f".{path.name}.")
    try:
        if overwrite:
            temporary.replace(path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise OutputExists(path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    fsync_directory(directory)


def write_key(path: Path, key: PrivateKeyTypes, overwrite: bool = False) -> None:
    write_file(path, key_pem(key), KEY_MODE, overwrite)


# A certificate and its key -------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """Where a certificate (PEM, leaf first, then its chain) and its key (PEM) live."""

    cert: Path
    key: Path

    @property
    def staged_cert(self) -> Path:
        return self.cert.with_name(self.cert.name + STAGED_SUFFIX)

    @property
    def staged_key(self) -> Path:
        return self.key.with_name(self.key.name + STAGED_SUFFIX)

    @property
    def backup_cert(self) -> Path:
        return self.cert.with_name(self.cert.name + BACKUP_SUFFIX)

    @property
    def backup_key(self) -> Path:
        return self.key.with_name(self.key.name + BACKUP_SUFFIX)


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (the leaf, when a chain follows)."""
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PairError(f"cannot read a PEM certificate from {path}: {exc}") from exc
    return certificates[0]


def load_key(path: Path) -> PrivateKeyTypes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PairError(f"cannot read the key {path}: {exc.strerror or exc}") from exc
    try:
        return load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise PairError(f"{path} is an encrypted key; give an unencrypted PEM key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PairError(f"{path} is not a PEM private key: {exc}") from exc


def is_pair(cert_path: Path, key_path: Path) -> bool:
    """Whether both files parse and the certificate's public key is the key's."""
    try:
        return load_certificate(cert_path).public_key() == load_key(key_path).public_key()
    except PairError:
        return False


def stage_pair(pair: Pair, cert_pem: bytes, key_pem_data: bytes | None) -> None:
    """Step 1: the new files beside the old ones, fsync'd; nothing in use has changed."""
    directory = pair.cert.parent
    temporary = _write_temporary(directory, cert_pem, CERT_MODE, f".{pair.cert.name}.")
    temporary.replace(pair.staged_cert)
    if key_pem_data is not None:
        temporary = _write_temporary(pair.key.parent, key_pem_data, KEY_MODE, f".{pair.key.name}.")
        temporary.replace(pair.staged_key)
        fsync_directory(pair.key.parent)
    fsync_directory(directory)


def backup_pair(pair: Pair) -> None:
    """Step 2: copies of the current pair as CERT.bak and KEY.bak (each written atomically)."""
    write_file(pair.backup_cert, pair.cert.read_bytes(), CERT_MODE, overwrite=True)
    write_file(pair.backup_key, pair.key.read_bytes(), KEY_MODE, overwrite=True)


def commit_certificate(pair: Pair) -> None:
    """Step 3a: the staged certificate replaces the current one."""
    pair.staged_cert.replace(pair.cert)
    fsync_directory(pair.cert.parent)


def commit_key(pair: Pair) -> None:
    """Step 3b: the staged key (if any) replaces the current one."""
    if pair.staged_key.exists():
        pair.staged_key.replace(pair.key)
        fsync_directory(pair.key.parent)


def recover_pair(pair: Pair) -> str | None:
    """Finish or undo a replacement a crash interrupted; says what it did (None: nothing).

    If the files on disk are not a pair and a staged file completes them, the interrupted
    commit is finished. Otherwise staged leftovers are deleted: the pair on disk is the one
    in use (the certificate they held was issued but never installed; the next renewal asks
    again).
    """
    _remove_temporaries(pair)
    staged = [p for p in (pair.staged_cert, pair.staged_key) if p.exists()]
    if not staged:
        return None
    if not is_pair(pair.cert, pair.key):
        if pair.staged_key.exists() and is_pair(pair.cert, pair.staged_key):
            commit_key(pair)
            _remove(pair.staged_cert)
            return f"finished an interrupted replacement: {pair.key} now matches {pair.cert}"
        if pair.staged_cert.exists() and is_pair(pair.staged_cert, pair.key):
            commit_certificate(pair)
            _remove(pair.staged_key)
            return f"finished an interrupted replacement: {pair.cert} now matches {pair.key}"
    for path in staged:
        _remove(path)
    return "removed leftovers of an interrupted replacement: " + ", ".join(map(str, staged))


def _remove_temporaries(pair: Pair) -> None:
    """Temporary files of an interrupted write (never renamed, so never in use)."""
    for path in (pair.cert, pair.key):
        for temporary in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
            _remove(temporary)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_directory(path.parent)


def replace_pair(pair: Pair, cert_pem: bytes, key_pem_data: bytes | None = None) -> None:
    """Replace a pair in place (``key_pem_data=None``: the key stays): stage, back up, commit.

    The caller runs :func:`recover_pair` first so the files it renews from are a pair.
    """
    stage_pair(pair, cert_pem, key_pem_data)
    backup_pair(pair)
    commit_certificate(pair)
    commit_key(pair)
