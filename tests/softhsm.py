"""A SoftHSM2 PKCS#11 token of its own for a test session: never the system's tokens.

Each token lives in a temporary directory named by its own softhsm2.conf (SOFTHSM2_CONF),
so xdist workers each have theirs.  Where SoftHSM2 is not installed the tests that need it
skip with the reason; scripts/test installs it (Debian package softhsm2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from estkit.authority.token import TokenSettings, find_softhsm_module

PIN = "4711-test-pin"
SO_PIN = "so-pin-0815"


def unavailable_reason() -> str | None:
    if shutil.which("softhsm2-util") is None or find_softhsm_module() is None:
        return "SoftHSM2 is not installed (apt-get install softhsm2; scripts/test installs it)"
    return None


@dataclass(frozen=True)
class SoftHsm:
    """One initialized token: its module, label, PIN and a 0600 file holding the PIN."""

    module: Path
    conf: Path
    label: str
    pin_file: Path

    @property
    def settings(self) -> TokenSettings:
        return TokenSettings(self.module, pin_file=self.pin_file)

    def init_args(self, *extra: str) -> list[str]:
        """The ``estkit init`` options that put the CA keys in this token."""
        return [
            "--pkcs11-module",
            str(self.module),
            "--token",
            self.label,
            "--pin-file",
            str(self.pin_file),
            *extra,
        ]


_session_token: SoftHsm | None = None


def session_token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """This process's token, made on first use (skips the test where SoftHSM2 is missing).

    One per process: the module reads SOFTHSM2_CONF once, when it is first initialized, so a
    second configuration in the same process would not be seen.  SOFTHSM2_CONF stays set for
    the commands the tests start.
    """
    global _session_token
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if _session_token is None:
        _session_token = _create(tmp_path_factory.mktemp("softhsm"), "estkit-test")
    return _session_token


def _create(directory: Path, label: str) -> SoftHsm:
    module = find_softhsm_module()
    assert module is not None
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin_file = directory / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    command = ["softhsm2-util", "--init-token", "--free", "--label", label]
    subprocess.run(
        [*command, "--pin", PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return SoftHsm(module, conf, label, pin_file)
