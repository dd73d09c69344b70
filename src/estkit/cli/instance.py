"""Operator commands that create and run an instance: ``estkit init``, ``estkit serve``."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from estkit.authority.ca import CertificateAuthority
from estkit.authority.issue import IssuedCertificate
from estkit.authority.keys import KEY_TYPES, KeyFileError
from estkit.authority.labels import DEFAULT_LABEL
from estkit.authority.pki import create_pki
from estkit.authority.service import certificate_record
from estkit.authority.token import (
    DEFAULT_PIN_ENV,
    TOKEN_KEY_TYPES,
    Token,
    TokenSettings,
    open_token,
)
from estkit.cli.common import CommandError, add_dir_option, operator_actor
from estkit.cli.db import DEFAULT_STORE_URL, check_new_database, create_sqlite_file
from estkit.cli.instance_access import instance_config, instance_store
from estkit.config import CONFIG_NAME, default_config_text
from estkit.server import event_loop
from estkit.server.log_output import BatchedStreamHandler
from estkit.server.runner import Listening, serve, with_overrides
from estkit.server.supervisor import StartupFailed, default_workers, run_workers
from estkit.store import AuditEvent

MAX_WORKERS = 256


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = commands.add_parser("init", help="create a new instance: CAs, TLS certificate, config")
    add_dir_option(init)
    init.add_argument("--ca-name", default="estkit", help="name used in the CA subjects")
    init.add_argument(
        "--key-type",
        default="ec-p256",
        choices=KEY_TYPES,
        help="key type of the CAs and the server's TLS key (default ec-p256)",
    )
    init.add_argument(
        "--hostname",
        action="append",
        default=None,
        help="name or address of the server for its TLS certificate (repeatable; "
        "default localhost and 127.0.0.1)",
    )
    init.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="the store: an empty PostgreSQL database (postgresql://user@host/name) "
        "or a sqlite:/// file (default sqlite:///estkit.db in the instance directory)",
    )
    token = init.add_argument_group(
        "CA keys in a PKCS#11 token",
        "the root and issuing CA keys (and OCSP responder keys) are made in the token and "
        f"never leave it; the user PIN comes from --pin-file or ${DEFAULT_PIN_ENV}",
    )
    token.add_argument("--pkcs11-module", type=Path, metavar="PATH", help="the PKCS#11 module")
    token.add_argument("--token", metavar="LABEL", help="label of the token to use")
    token.add_argument(
        "--pin-file", type=Path, metavar="PATH", help="file holding the user PIN (mode 0600)"
    )
    init.set_defaults(handler=cmd_init)

    serve_parser = commands.add_parser("serve", help="run the EST server")
    add_dir_option(serve_parser)
    serve_parser.add_argument("--host", default=None, help="address to listen on")
    serve_parser.add_argument("--port", type=int, default=None, help="HTTPS port")
    serve_parser.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help="worker processes sharing the ports (default: one per CPU; 1: a single process)",
    )
    serve_parser.set_defaults(handler=cmd_serve)


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_WORKERS}")
    return count


def _init_token(args: argparse.Namespace) -> Token | None:
    """The token of --pkcs11-module/--token, logged in, or None: checked before anything is
    created, so a wrong module, label or PIN leaves no half-made instance behind."""
    if args.pkcs11_module is None and args.token is None:
        if args.pin_file is not None:
            raise CommandError("--pin-file needs --pkcs11-module and --token")
        return None
    if args.pkcs11_module is None or args.token is None:
        raise CommandError("--pkcs11-module and --token go together")
    if args.key_type not in TOKEN_KEY_TYPES:
        raise CommandError(
            f"--key-type {args.key_type} cannot be made in a token; use "
            f"{', '.join(TOKEN_KEY_TYPES)}"
        )
    pin_file = None if args.pin_file is None else args.pin_file.absolute()
    settings = TokenSettings(args.pkcs11_module.absolute(), pin_file=pin_file)
    token = open_token(settings, args.token)
    with token.session():
        return token


def cmd_init(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    hostnames: list[str] = args.hostname or ["localhost", "127.0.0.1"]
    if (directory / CONFIG_NAME).exists() or (directory / "ca").exists():
        raise CommandError(f"{directory} already holds an estkit instance; refusing to overwrite")
    store_url: str = args.db or DEFAULT_STORE_URL
    check_new_database(store_url, directory)  # before anything is created
    try:
        token = _init_token(args)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files, tls_cert = create_pki(directory, args.ca_name, args.key_type, hostnames, token=token)
    except KeyFileError as exc:
        raise CommandError(str(exc)) from None
    token_config = None if token is None else (token.settings, files.root_key)
    config_text = default_config_text(hostnames[0], store_url, files.issuing_key, token_config)
    (directory / CONFIG_NAME).write_text(config_text, encoding="utf-8")
    config = instance_config(directory)
    create_sqlite_file(config.store_url)
    actor = operator_actor()
    with instance_store(config) as store:
        store.create_schema()
        ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
        now = datetime.now(UTC)
        store.record_certificate(
            certificate_record(
                IssuedCertificate.read_off(tls_cert),
                DEFAULT_LABEL,
                actor,
                "init",
                ca.issuing_id,
                now,
            ),
            audit=AuditEvent(
                actor=actor,
                action="instance.init",
                subject=str(directory),
                at=now,
                detail={"ca_name": args.ca_name, "key_type": args.key_type},
            ),
        )
    print(f"estkit: created instance in {directory}")
    print(f"  trust anchor (root CA): {directory / files.root_cert}")
    print(f"  configuration:          {directory / CONFIG_NAME}")
    print(f"  TLS certificate for:    {', '.join(hostnames)}")
    if token is not None:
        print(f"  CA keys in the token:   {files.root_key}, {files.issuing_key}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    config = with_overrides(instance_config(args.dir), args.host, args.port)
    # The pid tells the lines of `serve --workers` workers (and their supervisor) apart.
    logging.basicConfig(
        level=logging.INFO,
        handlers=[BatchedStreamHandler(sys.stderr)],
        format="%(asctime)s [%(process)d] %(name)s %(message)s",
    )
    workers: int = args.workers or default_workers()

    def ready(listening: Listening) -> None:
        print(f"estkit: serving EST on {listening.https_url}/.well-known/est/", flush=True)
        print(f"estkit: CA certificates over HTTP on {listening.http_url}/ca/", flush=True)

    try:
        if workers > 1:
            return run_workers(config, workers, ready)
        event_loop.run(serve(config, ready))
    except (KeyFileError, ValueError, OSError, StartupFailed) as exc:
        raise CommandError(str(exc)) from None
    return 0
