"""Opening an instance's configuration and store for an operator command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from estkit.cli.common import CommandError
from estkit.config_file import ConfigError, StoreSettings, load_store_settings
from estkit.store.unavailable import StoreUnavailable

if TYPE_CHECKING:
    from estkit.config import Config
    from estkit.store import Store


def instance_config(directory: Path) -> Config:
    # Imported here: ``cert list`` needs only instance_store_settings (config_file.py).
    from estkit.config import load_config

    try:
        return load_config(directory)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def instance_store_settings(directory: Path) -> StoreSettings:
    """The ``[store]`` table alone (see config_file.load_store_settings)."""
    try:
        return load_store_settings(directory)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def instance_store(config: Config) -> Iterator[Store]:
    """The instance's store, closed afterwards; an unreachable store is a one-line error."""
    from estkit.store import Store  # SQLAlchemy loads here, not for config-only commands

    store = Store(config.store_url, busy_timeout=config.store_busy_timeout)
    try:
        yield store
    except StoreUnavailable as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
