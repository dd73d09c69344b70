"""The client side imports nothing from the server side (a device installs it alone)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("estkit.server", "estkit.authority", "estkit.store", "aiohttp", "sqlalchemy", "argon2")

PROBE = f"""
import sys
import estkit.client, estkit.client.renewal, estkit.client.trust, estkit.client.files
import estkit.wire.multipart, estkit.cli.client_commands
from estkit.cli.main import main
for command in ("cacerts", "csrattrs", "enroll", "reenroll", "serverkeygen", "renew"):
    try:
        main([command, "--help"])
    except SystemExit:
        pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "sqlalchemy", "argon2")
                or m.startswith({FORBIDDEN[:3]!r}))
print("LOADED", loaded)
"""


def test_client_modules_and_commands_load_no_server_code():
    process = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert "LOADED []" in process.stdout, process.stdout


def test_the_probe_would_notice_server_code():
    probe = PROBE.replace(
        "import estkit.wire.multipart", "import estkit.server.app, estkit.wire.multipart"
    )
    process = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "LOADED []" not in process.stdout
    assert "aiohttp" in process.stdout
