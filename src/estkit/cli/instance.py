"""Operator commands that create and run an instance: ``estkit init``, ``estkit serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from estkit.authority.ca import CertificateAuthority
from estkit.authority.keys import KEY_TYPES, KeyFileError
from estkit.authority.pki import create_pki
from estkit.authority.profile import DEFAULT_LABEL
from estkit.authority.service import certificate_record
from estkit.cli.common import CommandError, add_dir_option, operator_actor
from estkit.cli.db import DEFAULT_STORE_URL, check_new_database, create_sqlite_file
from estkit.cli.instance_access import instance_config, instance_store
from estkit.config import CONFIG_NAME, default_config_text
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


def cmd_init(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    hostnames: list[str] = args.hostname or ["localhost", "127.0.0.1"]
    if (directory / CONFIG_NAME).exists() or (directory / "ca").exists():
        raise CommandError(f"{directory} already holds an estkit instance; refusing to overwrite")
    store_url: str = args.db or DEFAULT_STORE_URL
    check_new_database(store_url, directory)  # before anything is created
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files, tls_cert = create_pki(directory, args.ca_name, args.key_type, hostnames)
    config_text = default_config_text(hostnames[0], store_url)
    (directory / CONFIG_NAME).write_text(config_text, encoding="utf-8")
    config = instance_config(directory)
    create_sqlite_file(config.store_url)
    actor = operator_actor()
    with instance_store(config) as store:
        store.create_schema()
        ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
        now = datetime.now(UTC)
        store.record_certificate(
            certificate_record(tls_cert, DEFAULT_LABEL, actor, "init", ca.issuing_id, now),
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
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    config = with_overrides(instance_config(args.dir), args.host, args.port)
    # The pid tells the lines of `serve --workers` workers (and their supervisor) apart.
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s [%(process)d] %(name)s %(message)s",
    )
    workers: int = args.workers or default_workers()

    def ready(listening: Listening) -> None:
        print(f"estkit: serving EST on {listening.https_url}/.well-known/est/", flush=True)
        print(f"estkit: CA certificates over HTTP on {listening.http_url}/ca/", flush=True)

    try:
        if workers > 1:
            return run_workers(config, workers, ready)
        asyncio.run(serve(config, ready))
    except (KeyFileError, ValueError, OSError, StartupFailed) as exc:
        raise CommandError(str(exc)) from None
    return 0
