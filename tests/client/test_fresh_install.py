"""`pip install estkit` without extras gives a working client and no server dependencies."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from cryptography import x509

ROOT = Path(__file__).resolve().parents[2]


def run(*args, check=True, **kwargs):
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, check=check, **kwargs
    )


def test_a_client_only_install_enrolls(est_server, device, tmp_path):
    # A clean copy of the project, so the build leaves nothing in the working tree.
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(
        ROOT / "src",
        project / "src",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, project / name)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    install = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        project,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    probe = run(python, "-c", "import aiohttp", check=False)
    assert probe.returncode != 0 and "No module named 'aiohttp'" in probe.stderr
    for module in ("sqlalchemy", "argon2"):
        assert run(python, "-c", f"import {module}", check=False).returncode != 0

    estkit = venv / "bin" / "estkit"
    cert, key = tmp_path / "device.pem", tmp_path / "device.key"
    enroll = run(
        estkit,
        "enroll",
        "--server",
        est_server.est_url("iot"),
        "--ca-file",
        est_server.ca_file,
        "--user",
        device.user,
        "--password-file",
        device.password_file,
        "--subject",
        f"CN={device.user}",
        "--out-cert",
        cert,
        "--out-key",
        key,
        check=False,
    )
    assert enroll.returncode == 0, enroll.stderr
    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    assert leaf.subject.rfc4514_string() == f"CN={device.user}"

    # The operator commands say what is missing instead of failing with a traceback.
    operator = run(estkit, "user", "list", "--dir", tmp_path / "nowhere", check=False)
    assert operator.returncode == 1
    assert "pip install 'estkit[server]'" in operator.stderr
