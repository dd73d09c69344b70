"""The OCSP responder keeper for several processes sharing one instance directory.

With ``serve --workers N`` (or a second ``serve`` on the same directory) every process keeps
a responder per CA generation. Unguarded, each would issue its own certificate at the same
moment and write it over the same ca/ files, key and certificate possibly from different
writers. Here issuance holds an exclusive ``flock`` on ``ocsp-responder.lock`` beside those
files, and a process that finds, under the lock, a sound certificate another one has just
written adopts it: one responder certificate per instance and renewal, and files that always
match it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from estkit.authority.ocsp_signer import Responder, ResponderKeeper

log = logging.getLogger("estkit.ocsp")

LOCK_FILE = "ocsp-responder.lock"


class SharedResponderKeeper(ResponderKeeper):
    """A ResponderKeeper whose issuance is serialized across processes by a file lock."""

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.cert_path.with_name(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def start(self) -> Responder:
        """Load or issue under the lock: the first process issues, the others load its files."""
        with self._locked():
            return super().start()

    def renew_if_due(self) -> Responder | None:
        if self._renewal_reason(self.current.certificate, self.clock()) is None:
            return None  # the common case: no lock, no file access
        with self._locked():
            loaded, problem = self._load()
            if (
                loaded is not None
                and problem is None
                and self._renewal_reason(loaded.certificate, self.clock()) is None
            ):
                self._current = loaded
                log.info(
                    "using the OCSP responder certificate %x renewed by another process",
                    loaded.certificate.serial_number,
                )
                return loaded
            return super().renew_if_due()


__all__ = ["LOCK_FILE", "SharedResponderKeeper"]
