"""Fixtures for client tests: the estkit command run in-process, devices, a scripted proxy."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from estkit.cli.main import main
from tests.client.estproxy import EstProxy, Script
from tests.estserver import EstServer, init_instance, start_server


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("estkit: error:")]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `estkit ARGS...` in this process; returns exit status, stdout and stderr."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@dataclass
class Device:
    """A Basic user on the shared server, with its password in a file."""

    user: str
    password: str
    password_file: Path
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name


def new_device(server: EstServer, directory: Path) -> Device:
    user = f"dev-{uuid.uuid4().hex[:10]}"
    password = server.add_user(user)
    password_file = directory / "password"
    password_file.write_text(password + "\n")
    return Device(user, password, password_file, directory)


@pytest.fixture
def device(est_server: EstServer, tmp_path: Path) -> Device:
    """A user of the shared server (labels: default, iot, server, pop, rsa)."""
    return new_device(est_server, tmp_path)


CLIENT_EXTRA_TOML = """
[labels.short]
validity = "2m"

[labels.tls]
extended_key_usage = ["serverAuth", "clientAuth"]
san_types = ["dns", "ip"]

[labels.pop]
require_pop = true
san_types = ["dns", "ip"]

[labels.mtls]
allow_anchors = ["estkit"]

[labels.serveronly]
extended_key_usage = ["serverAuth"]
san_types = ["dns", "ip"]
"""


@pytest.fixture(scope="session")
def client_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstServer]:
    """A second server per worker with labels for renewal tests.

    `short` issues 2-minute certificates (due for renewal at once under the default 33%:
    with the 5-minute backdating, 2 of 7 minutes are left), `tls` issues certificates with
    SANs that are also good for TLS client authentication, which reenrollment needs, and
    `mtls` lets certificates of this CA enroll with simpleenroll, and `serveronly` issues
    certificates that are not good for TLS client authentication.
    """
    directory = init_instance(tmp_path_factory.mktemp("client") / "est-data", CLIENT_EXTRA_TOML)
    server = start_server(directory)
    yield server
    server.stop()


@pytest.fixture
def renewing_device(client_server: EstServer, tmp_path: Path) -> Device:
    """A user of `client_server`."""
    return new_device(client_server, tmp_path)


def server_args(server: EstServer, label: str | None = None) -> list[str]:
    args = ["--server", server.url, "--ca-file", str(server.ca_file)]
    return [*args, "--label", label] if label else args


def basic_args(device: Device) -> list[str]:
    return ["--user", device.user, "--password-file", str(device.password_file)]


@pytest.fixture
def proxy_factory(est_server: EstServer) -> Iterator[Callable[..., EstProxy]]:
    """Start scripted EST servers in front of the shared real server."""
    proxies: list[EstProxy] = []

    def start(
        script: Script | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> EstProxy:
        tls = est_server.data_dir / "tls"
        proxy = EstProxy(
            "127.0.0.1",
            est_server.port,
            est_server.ca_file,
            cert_file or tls / "server.pem",
            key_file or tls / "server.key",
            script,
        ).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


def file_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
