"""The store's database: ``estkit db upgrade``, and the checks ``estkit init --db`` makes.

``serve`` refuses a database whose schema is not the one it was built for (several servers may
share one PostgreSQL database, so none of them changes it on its own); the operator runs
``estkit db upgrade`` once, then starts the new servers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from estkit.cli.common import CommandError, add_dir_option
from estkit.cli.instance_access import instance_config, instance_store
from estkit.store import Store, StoreUnavailable

DEFAULT_STORE_URL = "sqlite:///estkit.db"
_SQLITE = "sqlite:///"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser("db", help="the store's database: upgrade its schema")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = actions.add_parser(
        "upgrade", help="bring the database to the schema this estkit needs (run once)"
    )
    add_dir_option(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    with instance_store(instance_config(args.dir)) as store:
        before, after = store.upgrade_schema()
    if before == after:
        print(f"estkit: the database schema is current (revision {after})")
    else:
        print(f"estkit: upgraded the database schema from {before or 'unversioned'} to {after}")
    return 0


def sqlite_path(url: str, directory: Path) -> Path | None:
    """The file of a sqlite:/// URL (relative to the instance directory), else None."""
    if not url.startswith(_SQLITE):
        return None
    return directory / url[len(_SQLITE) :]


def check_new_database(url: str, directory: Path) -> None:
    """Refuse ``init --db`` URLs estkit cannot use, and databases that already hold a store
    (another instance's CA would be mixed with this one's)."""
    if not url.startswith(("postgresql://", "postgresql+psycopg://", _SQLITE)):
        raise CommandError(f"--db must be a postgresql:// or sqlite:/// URL, not {url!r}")
    path = sqlite_path(url, directory)
    if path is not None:
        if path.exists():
            raise CommandError(f"{path} exists already; refusing to overwrite")
        return
    store = Store(url)
    try:
        empty = store.is_empty()
    except StoreUnavailable as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    if not empty:
        raise CommandError(
            "that database already holds an estkit store; give init an empty database "
            "(to run another server on it, copy the instance directory instead)"
        )


def create_sqlite_file(url: str) -> None:
    """The database holds secret hashes: create its file readable by its owner only."""
    path = sqlite_path(url, Path())
    if path is not None:
        path.touch(mode=0o600, exist_ok=False)
