"""Shared fixtures: real estkit servers on loopback, real TLS, real SQLite files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from estkit.store import Store
from tests.estserver import EstServer, init_instance, start_server

SHARED_EXTRA_TOML = """
[labels.pop]
require_pop = true

[labels.rsa]
key_types = ["rsa"]
rsa_min_bits = 3072

[labels.mtls]
allow_anchors = ["estkit"]
"""


@pytest.fixture(scope="session")
def est_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstServer]:
    """One running server per test worker: the default configuration plus `pop`, `rsa` and
    `mtls` (initial enrollment with this CA's certificates allowed)."""
    directory = init_instance(tmp_path_factory.mktemp("shared") / "est-data", SHARED_EXTRA_TOML)
    server = start_server(directory)
    yield server
    server.stop()


@pytest.fixture
def est_server_factory(tmp_path: Path) -> Iterator[Callable[..., EstServer]]:
    """Start fresh instances with extra TOML appended to their estkit.toml."""
    servers: list[EstServer] = []

    def start(extra_toml: str = "", *init_args: str) -> EstServer:
        directory = init_instance(tmp_path / f"est-data-{len(servers)}", extra_toml, *init_args)
        server = start_server(directory)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped after it); skips with the
    reason where no PostgreSQL server answers."""
    from tests.postgres import fresh_database, unreachable_reason

    reason = unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL on each backend: a new SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A store with the current schema on each backend (closed afterwards)."""
    store = Store(store_url)
    store.create_schema()
    yield store
    store.close()
