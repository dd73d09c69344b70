"""``estkit`` command: argument parsing and dispatch; each command lives in its own module."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from estkit import __version__
from estkit.cli import client_commands

DEFAULT_DIR = "./est-data"


class CommandError(Exception):
    """A command failed in a way the user can fix; printed as one line, exit status 1."""


def default_dir() -> Path:
    return Path(os.environ.get("ESTKIT_DIR") or DEFAULT_DIR)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="instance directory (default: $ESTKIT_DIR, else ./est-data)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estkit", description="EST (RFC 7030) server, certificate authority and client."
    )
    parser.add_argument("--version", action="version", version=f"estkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create a new instance: CAs, TLS certificate, config")
    _add_dir(init)
    init.add_argument("--ca-name", default="estkit", help="name used in the CA subjects")
    init.add_argument(
        "--key-type",
        default="ec-p256",
        choices=["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"],
        help="key type of the CAs and the server's TLS key (default ec-p256)",
    )
    init.add_argument(
        "--hostname",
        action="append",
        default=None,
        help="name or address of the server for its TLS certificate (repeatable; "
        "default localhost and 127.0.0.1)",
    )

    serve = commands.add_parser("serve", help="run the EST server")
    _add_dir(serve)
    serve.add_argument("--host", default=None, help="address to listen on (default from config)")
    serve.add_argument("--port", type=int, default=None, help="HTTPS port (default from config)")

    user = commands.add_parser("user", help="manage HTTP Basic accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", help="add a user; prints a generated secret once")
    _add_dir(add)
    add.add_argument("name")
    add.add_argument(
        "--label",
        action="append",
        default=[],
        help="label the user may enroll on (repeatable; "
        "'default' for the unlabelled path; none given: every label)",
    )
    add.add_argument(
        "--once",
        action="store_true",
        help="one-time bootstrap secret, consumed by its first successful enrollment",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the secret from standard input"
    )
    listing = user_commands.add_parser("list", help="list users")
    _add_dir(listing)
    remove = user_commands.add_parser("remove", help="remove a user")
    _add_dir(remove)
    remove.add_argument("name")

    client_commands.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in client_commands.COMMANDS:
        try:
            return client_commands.run(args)
        except KeyboardInterrupt:
            return 130
    if getattr(args, "dir", None) is None and hasattr(args, "dir"):
        args.dir = default_dir()
    try:
        from estkit.cli import operator
    except ImportError as exc:
        print(
            f"estkit: {args.command} needs the server components: pip install 'estkit[server]' "
            f"({exc.name} is missing)",
            file=sys.stderr,
        )
        return 1
    try:
        return operator.run(args)
    except CommandError as exc:
        print(f"estkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
