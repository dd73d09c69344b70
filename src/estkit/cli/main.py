"""``estkit``: argument parsing and dispatch.

Device commands (``estkit.cli.client_commands``) need only the client install.  Operator
commands live in one module per area (listed in OPERATOR_COMMANDS), each with a
``register(commands)`` that adds its parsers and sets ``handler``.  They need the server
extra: only the module of the command being run is imported, and on a client-only install
the command answers with what to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from estkit import __version__
from estkit.cli import client_parsers
from estkit.cli.common import CommandError, default_dir

OPERATOR_COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("estkit.cli.instance", "create a new instance: CAs, TLS certificate, config"),
    "serve": ("estkit.cli.instance", "run the EST server"),
    "user": ("estkit.cli.users", "manage HTTP Basic accounts"),
    "key-archive": ("estkit.cli.key_archive", "archived server-generated keys: list, export"),
    "cert": ("estkit.cli.certs", "list, show and revoke issued certificates"),
    "crl": ("estkit.cli.certs", "write the current CRL to a file"),
    "audit": ("estkit.cli.audit", "show the audit trail"),
    "request": ("estkit.cli.requests", "list, approve and reject requests awaiting approval"),
    "db": ("estkit.cli.db", "the store's database: upgrade its schema"),
    "ca": ("estkit.cli.ca", "the CA hierarchy: show it, roll it over (new issuing CA or root)"),
}
"""Operator commands: the module that registers each, and its one-line help."""

Handler = Callable[[argparse.Namespace], int]


def _register_operator_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], wanted: str | None
) -> None:
    """Import only the module of the command being run (server code stays unloaded for device
    commands); every other operator command is listed by name and help only."""
    registered: set[str] = set()
    if wanted in OPERATOR_COMMANDS:
        module_name = OPERATOR_COMMANDS[wanted][0]
        try:
            importlib.import_module(module_name).register(commands)
        except ImportError as exc:
            missing: str | None = exc.name or "a server dependency"
        else:
            missing = None
            registered = {n for n, (m, _) in OPERATOR_COMMANDS.items() if m == module_name}
    for name, (_, help_text) in OPERATOR_COMMANDS.items():
        if name in registered:
            continue
        parser = commands.add_parser(name, help=help_text, add_help=False)
        parser.add_argument("rest", nargs=argparse.REMAINDER)
        if name == wanted:
            parser.set_defaults(missing_module=missing)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estkit", description="EST (RFC 7030) server, certificate authority and client."
    )
    parser.add_argument("--version", action="version", version=f"estkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in (argv if argv is not None else sys.argv[1:]) if a[:1] != "-"), None)
    _register_operator_commands(commands, wanted)
    client_parsers.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    if args.command in client_parsers.COMMANDS:
        from estkit.cli import client_commands  # the client, only for a device command

        try:
            return client_commands.run(args)
        except KeyboardInterrupt:
            return 130
    missing = getattr(args, "missing_module", None)
    if missing is not None:
        print(
            f"estkit: {args.command} needs the server components: pip install 'estkit[server]' "
            f"({missing} is missing)",
            file=sys.stderr,
        )
        return 1
    if hasattr(args, "dir") and args.dir is None:
        args.dir = default_dir()
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"estkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
