"""Operator commands: init, serve, user. They need the server extra."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.accounts import Accounts, generate_secret
from estkit.authority.ca import CertificateAuthority
from estkit.authority.keys import KeyFileError, spki_sha256
from estkit.authority.pki import create_pki
from estkit.authority.profile import DEFAULT_LABEL
from estkit.authority.service import san_strings, serial_hex
from estkit.cli.main import CommandError
from estkit.config import CONFIG_NAME, Config, ConfigError, default_config_text, load_config
from estkit.server.runner import Listening, serve, with_overrides
from estkit.store import AuditEvent, CertificateRecord, Store, StoreUnavailable, UserExists

OPERATOR = "operator"


def run(args: argparse.Namespace) -> int:
    if args.command == "init":
        return cmd_init(args.dir, args.ca_name, args.key_type, args.hostname)
    if args.command == "serve":
        return cmd_serve(args.dir, args.host, args.port)
    if args.user_command == "add":
        return cmd_user_add(args.dir, args.name, args.label, args.once, args.password_stdin)
    if args.user_command == "list":
        return cmd_user_list(args.dir)
    return cmd_user_remove(args.dir, args.name)


def _config(directory: Path) -> Config:
    try:
        return load_config(directory)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def cmd_init(directory: Path, ca_name: str, key_type: str, hostnames: list[str] | None) -> int:
    hostnames = hostnames or ["localhost", "127.0.0.1"]
    if (directory / CONFIG_NAME).exists() or (directory / "ca").exists():
        raise CommandError(f"{directory} already holds an estkit instance; refusing to overwrite")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files, tls_cert = create_pki(directory, ca_name, key_type, hostnames)
    (directory / CONFIG_NAME).write_text(default_config_text(hostnames[0]), encoding="utf-8")
    config = _config(directory)
    _create_private_file(directory / "estkit.db")
    store = Store(config.store_url, busy_timeout=config.store_busy_timeout)
    try:
        store.create_schema()
        ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
        now = datetime.now(UTC)
        serial = serial_hex(tls_cert.serial_number)
        sans = tls_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        store.record_certificate(
            CertificateRecord(
                serial=serial,
                label=DEFAULT_LABEL,
                subject=tls_cert.subject.rfc4514_string(),
                sans=san_strings(list(sans)),
                not_before=tls_cert.not_valid_before_utc,
                not_after=tls_cert.not_valid_after_utc,
                key_fingerprint=spki_sha256(tls_cert.public_key()),
                requester=OPERATOR,
                kind="init",
                der=tls_cert.public_bytes(Encoding.DER),
                issuer_id=ca.issuing_id,
                issued_at=now,
            ),
            audit=AuditEvent(
                actor=OPERATOR,
                action="instance.init",
                subject=str(directory),
                at=now,
                detail={"ca_name": ca_name, "key_type": key_type},
            ),
        )
    finally:
        store.close()
    print(f"estkit: created instance in {directory}")
    print(f"  trust anchor (root CA): {directory / files.root_cert}")
    print(f"  configuration:          {directory / CONFIG_NAME}")
    print(f"  TLS certificate for:    {', '.join(hostnames)}")
    return 0


def _create_private_file(path: Path) -> None:
    """The database holds secret hashes: create it readable by its owner only."""
    path.touch(mode=0o600, exist_ok=False)


def cmd_serve(directory: Path, host: str | None, port: int | None) -> int:
    config = with_overrides(_config(directory), host, port)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )

    def ready(listening: Listening) -> None:
        print(f"estkit: serving EST on {listening.https_url}/.well-known/est/", flush=True)
        print(f"estkit: CA certificates over HTTP on {listening.http_url}/ca/", flush=True)

    try:
        asyncio.run(serve(config, ready))
    except (KeyFileError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
    return 0


def _labels(config: Config, labels: list[str]) -> list[str]:
    resolved = [DEFAULT_LABEL if label == "default" else label for label in labels]
    for label in resolved:
        if label not in config.profiles:
            known = ", ".join(["default", *sorted(p for p in config.profiles if p)])
            raise CommandError(f"no label '{label}' in {config.path} (labels: {known})")
    return resolved


def cmd_user_add(
    directory: Path, name: str, labels: list[str], once: bool, password_stdin: bool
) -> int:
    config = _config(directory)
    resolved = _labels(config, labels)
    secret = sys.stdin.readline().rstrip("\r\n") if password_stdin else generate_secret()
    store = Store(config.store_url, busy_timeout=config.store_busy_timeout)
    try:
        Accounts(store).add(name, secret, resolved or None, once, actor=OPERATOR)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except UserExists:
        raise CommandError(f"user '{name}' exists already") from None
    except StoreUnavailable as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    kind = "one-time bootstrap secret" if once else "password"
    if password_stdin:
        print(f"user {name} added")
    else:
        print(f"user {name} added; {kind} (shown only now): {secret}")
    return 0


def cmd_user_list(directory: Path) -> int:
    config = _config(directory)
    store = Store(config.store_url, busy_timeout=config.store_busy_timeout)
    try:
        users = Accounts(store).list()
    finally:
        store.close()
    print(f"{'NAME':<24} {'LABELS':<24} {'ONCE':<5} {'STATE':<9} CREATED")
    for user in users:
        labels = ",".join(label or "default" for label in user.labels) if user.labels else "*"
        state = "consumed" if user.consumed_at else "active"
        created = user.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        print(
            f"{user.name:<24} {labels:<24} {'yes' if user.once else 'no':<5} {state:<9} {created}"
        )
    return 0


def cmd_user_remove(directory: Path, name: str) -> int:
    config = _config(directory)
    store = Store(config.store_url, busy_timeout=config.store_busy_timeout)
    try:
        removed = Accounts(store).remove(name, actor=OPERATOR)
    finally:
        store.close()
    if not removed:
        raise CommandError(f"no user '{name}'")
    print(f"user {name} removed")
    return 0
