"""Starting real estkit instances for tests: `estkit init` + `estkit serve` as subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from estkit.authority.accounts import Accounts
from estkit.config import load_config
from estkit.server.log_output import FLUSH_INTERVAL
from estkit.store import Store

ESTKIT = [sys.executable, "-m", "estkit"]
READY = re.compile(r"serving EST on (https://[^/]+)/")
HTTP_READY = re.compile(r"CA certificates over HTTP on (http://[^/]+)/")


def run_estkit(
    *args: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ESTKIT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
        env=env,
    )


def init_instance(directory: Path, extra_toml: str = "", *init_args: str) -> Path:
    """A fresh instance whose listeners take free ports, with extra TOML appended."""
    run_estkit("init", "--dir", str(directory), *init_args)
    config = directory / "estkit.toml"
    text = config.read_text().replace("http_port = 8080", "http_port = 0")
    config.write_text(text + "\n" + extra_toml)
    return directory


@dataclass
class EstServer:
    data_dir: Path
    process: subprocess.Popen[str]
    url: str = ""
    http_url: str = ""
    log_path: Path = field(default_factory=Path)
    _shared_user: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca" / "root.pem"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def est_url(self, label: str | None = None) -> str:
        return f"{self.url}/.well-known/est" + (f"/{label}" if label else "")

    def store(self) -> Store:
        config = load_config(self.data_dir)
        return Store(config.store_url)

    def add_user(
        self,
        name: str,
        labels: Sequence[str] = (),
        once: bool = False,
        password: str | None = None,
    ) -> str:
        """Add a Basic user straight into the instance's store; returns the password."""
        secret = password or f"pw-{name}-{os.urandom(6).hex()}"
        store = self.store()
        try:
            Accounts(store).add(name, secret, list(labels) or None, once, actor="test")
        finally:
            store.close()
        return secret

    def shared_user(self) -> tuple[str, str]:
        """(name, password) of one Basic account for the tests that need just some account on
        this server, made on first use (argon2 hashing is deliberately slow).  Kept on the
        server itself: a cache keyed by id(server) could hand a later server, which may reuse
        a dead one's id, an account its store does not have."""
        if self._shared_user is None:
            name = f"shared-{os.urandom(5).hex()}"
            self._shared_user = (name, self.add_user(name))
        return self._shared_user

    def log(self) -> str:
        """The server's log so far.  A running server writes the lines it logged on its
        event loop up to FLUSH_INTERVAL later (server/log_output.py): wait that out."""
        if self.process.poll() is None:
            time.sleep(4 * FLUSH_INTERVAL)
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    data_dir: Path, timeout: float = 30.0, workers: int = 1, wrapper: Sequence[str] = ()
) -> EstServer:
    """Run `estkit serve --port 0 --workers N` (one process unless asked) and wait for its
    ready lines.  ``wrapper``: a command the server runs under (the benchmark's valgrind)."""
    log_path = data_dir / "server.log"
    log = log_path.open("w")
    serve = ["serve", "--dir", str(data_dir), "--port", "0", "--workers", str(workers)]
    process = subprocess.Popen(
        [*wrapper, *ESTKIT, *serve],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    server = EstServer(data_dir=data_dir, process=process, log_path=log_path)
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if match := READY.search(line):
            server.url = match.group(1)
        if match := HTTP_READY.search(line):
            server.http_url = match.group(1)
        if server.url and server.http_url:
            return server
    server.stop()
    raise RuntimeError(f"estkit serve did not start:\n{server.log()}")
