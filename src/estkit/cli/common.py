"""What every command module shares; light enough for the client-only install."""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_DIR = "./est-data"

Subcommands = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(Exception):
    """A command failed in a way the user can fix; printed as one line, exit status 1."""


def default_dir() -> Path:
    return Path(os.environ.get("ESTKIT_DIR") or DEFAULT_DIR)


def add_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="instance directory (default: $ESTKIT_DIR, else ./est-data)",
    )


def utc_text(value: datetime | None) -> str | None:
    """A time as operator commands print it (ISO 8601, UTC, seconds), None kept as None."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def operator_actor() -> str:
    """Who ran an operator command, for the audit trail: the local account name."""
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"operator:uid-{os.getuid()}"


def deferred(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command handler whose module is imported only when that command runs, so that a
    light command registered beside it (``cert list`` beside ``cert revoke``) starts fast."""

    def handler(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), name
        )
        return command(args)

    return handler
