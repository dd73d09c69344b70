"""The device commands' arguments (``estkit cacerts``, ``enroll``, ``renew``, ...).

Apart from their implementations (cli/client_commands.py) so that building the ``estkit``
parser, which every command does, imports neither the client nor the server code: an
operator command pays only for what it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from estkit.durations import RENEW_BEFORE as DEFAULT_BEFORE
from estkit.wire.key_type_names import KEY_TYPES

COMMANDS = ("cacerts", "csrattrs", "enroll", "reenroll", "serverkeygen", "renew")
DEFAULT_MAX_WAIT = 600.0


def _server_options(parser: argparse.ArgumentParser, ca_required: bool = True) -> None:
    parser.add_argument(
        "--server",
        required=True,
        metavar="URL",
        help="https://host[:port] or https://host[:port]/.well-known/est[/label]",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        required=ca_required,
        metavar="TA",
        help="PEM trust anchor(s) that the server's TLS certificate must chain to",
    )
    parser.add_argument(
        "--label", default=None, help="EST label (CA profile); overrides a label in --server"
    )


def _auth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default=None, help="HTTP Basic user name")
    parser.add_argument(
        "--password-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="file whose first line is the password ('-': standard input)",
    )
    parser.add_argument(
        "--cert",
        type=Path,
        default=None,
        help="TLS client certificate (PEM) to authenticate with, instead of --user",
    )
    parser.add_argument(
        "--key",
        type=Path,
        default=None,
        help="with --cert: its private key; without --cert: an existing key for the new "
        "certificate (no key is generated)",
    )


def _request_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subject", required=True, help='subject, RFC 4514 (e.g. "CN=device-1,O=Example")'
    )
    parser.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="TYPE:VALUE",
        help="subjectAltName: DNS:name, IP:address, URI:uri or EMAIL:address (repeatable)",
    )
    parser.add_argument(
        "--key-type",
        choices=KEY_TYPES,
        default=None,
        help="key type (default: what the server's csrattrs asks for, else ec-p256)",
    )


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULT_MAX_WAIT,
        metavar="SECONDS",
        help="how long to keep asking while the server answers 202/503 with Retry-After "
        f"(default {DEFAULT_MAX_WAIT:g})",
    )


def _force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the device commands on the ``estkit`` command's subparsers."""
    cacerts = commands.add_parser(
        "cacerts", help="fetch the CA certificates; --bootstrap to get a first trust anchor"
    )
    _server_options(cacerts, ca_required=False)
    cacerts.add_argument(
        "--bootstrap",
        action="store_true",
        help="no trust anchor yet: fetch without verifying the server (nothing else is sent), "
        "then confirm the certificates on the terminal or with --fingerprint",
    )
    cacerts.add_argument(
        "--fingerprint",
        default=None,
        metavar="SHA256:HEX",
        help="with --bootstrap: SHA-256 fingerprint of a CA certificate (ideally the root) "
        "known in advance; the answer is refused unless it contains that certificate",
    )
    cacerts.add_argument("--out", type=Path, required=True, help="PEM file to write")
    _force_option(cacerts)

    csrattrs = commands.add_parser("csrattrs", help="show what the server wants in a CSR")
    _server_options(csrattrs)

    enroll = commands.add_parser("enroll", help="get a certificate (simpleenroll)")
    _server_options(enroll)
    _auth_options(enroll)
    _request_options(enroll)
    enroll.add_argument(
        "--csr-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="an existing key for the new certificate (same as --key without --cert)",
    )
    enroll.add_argument("--out-cert", type=Path, required=True, help="certificate + chain (PEM)")
    enroll.add_argument("--out-key", type=Path, default=None, help="the new key (PEM, mode 0600)")
    _wait_option(enroll)
    _force_option(enroll)

    reenroll = commands.add_parser(
        "reenroll", help="renew a certificate now (simplereenroll over mutual TLS)"
    )
    _server_options(reenroll)
    _pair_options(reenroll)
    reenroll.add_argument(
        "--out-cert", type=Path, default=None, help="write here instead of replacing --cert"
    )
    reenroll.add_argument(
        "--out-key", type=Path, default=None, help="with --rekey: write the new key here"
    )
    _wait_option(reenroll)
    _force_option(reenroll)

    keygen = commands.add_parser(
        "serverkeygen", help="get a certificate and a key made by the server"
    )
    _server_options(keygen)
    _auth_options(keygen)
    _request_options(keygen)
    keygen.add_argument("--out-cert", type=Path, required=True, help="certificate + chain (PEM)")
    keygen.add_argument("--out-key", type=Path, required=True, help="the key (PEM, mode 0600)")
    _wait_option(keygen)
    _force_option(keygen)

    renew = commands.add_parser(
        "renew", help="renew when the certificate nears expiry (for timers and daemons)"
    )
    _server_options(renew)
    _pair_options(renew)
    renew.add_argument(
        "--before",
        default=DEFAULT_BEFORE,
        help="renew when less than this is left: a share of the lifetime (33%%) or a "
        f"duration (7d, 12h) (default {DEFAULT_BEFORE.replace('%', '%%')})",
    )
    renew.add_argument("--watch", action="store_true", help="keep running: check every --interval")
    renew.add_argument(
        "--interval",
        default="1h",
        help="with --watch: time between checks, and the longest wait after failures (default 1h)",
    )
    renew.add_argument(
        "--exec",
        dest="exec_command",
        default=None,
        metavar="CMD",
        help="shell command to run after a renewal (e.g. 'systemctl reload nginx')",
    )
    _wait_option(renew)


def _pair_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cert", type=Path, required=True, help="current certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    parser.add_argument("--rekey", action="store_true", help="make a new key of the same type")
