"""estkit.toml as a file: reading it, its errors, and its ``[store]`` table.

Apart from config.py, which validates every other table into typed settings, so that
``cert list`` (a whole process whose time is mostly start-up) reads the store's location
without defining the configuration's dataclasses or loading the profiles' cryptography.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_NAME = "estkit.toml"


class ConfigError(Exception):
    """A setting is missing or invalid: names the file, the key and the reason."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class StoreSettings:
    """The ``[store]`` table: the database URL (a relative SQLite path resolved against the
    instance directory) and how long to wait for a lock or a connection."""

    url: str
    busy_timeout: float


def read_config_file(directory: Path) -> tuple[Path, dict[str, Any]]:
    """(path, parsed TOML) of DIR/estkit.toml; ConfigError if it is missing or not TOML."""
    path = directory / CONFIG_NAME
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "-", "no estkit instance here; run 'estkit init' first") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"not valid TOML: {exc}") from None


def config_table(path: Path, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A top-level table of the file (empty when absent)."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(path, key, "must be a table")
    return value


def store_settings(path: Path, directory: Path, data: Mapping[str, Any]) -> StoreSettings:
    store = config_table(path, data, "store")
    busy = store.get("busy_timeout", 5.0)
    if not isinstance(busy, int | float) or isinstance(busy, bool) or busy <= 0:
        raise ConfigError(path, "store.busy_timeout", "must be a positive number of seconds")
    for key in store:
        if key not in ("url", "busy_timeout"):
            raise ConfigError(path, f"store.{key}", "unknown setting")
    return StoreSettings(_store_url(path, directory, store), float(busy))


def load_store_settings(directory: Path) -> StoreSettings:
    """Only the ``[store]`` table of DIR/estkit.toml (``cert list``); the other tables are
    config.load_config's to check."""
    path, data = read_config_file(directory)
    return store_settings(path, directory, data)


def _store_url(path: Path, directory: Path, table: Mapping[str, Any]) -> str:
    url = table.get("url", "sqlite:///estkit.db")
    if not isinstance(url, str):
        raise ConfigError(path, "store.url", "must be a database URL")
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        return prefix + str((directory / url[len(prefix) :]).resolve())
    if not url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(path, "store.url", "must be a sqlite:/// or postgresql:// URL")
    return url
