"""Operator commands for archived server-generated keys: ``estkit key-archive list|export``.

The store holds each archived key only as a CMS EnvelopedData to the archive certificate
(``[key_archive] recipient_cert``); the server cannot open it.  ``export`` writes that blob
to a file, and the operator decrypts it where the archive private key is kept.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from estkit.cli.common import CommandError, add_dir_option, operator_actor
from estkit.cli.instance_access import instance_config, instance_store
from estkit.store import AuditEvent


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    archive = commands.add_parser("key-archive", help="archived server-generated keys")
    actions = archive.add_subparsers(dest="key_archive_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list archived keys (serial, label, time)")
    add_dir_option(listing)
    listing.set_defaults(handler=cmd_list)
    export = actions.add_parser(
        "export", help="write an archived key (CMS EnvelopedData, DER) to a file"
    )
    add_dir_option(export)
    export.add_argument("serial", help="serial number (hex) of the key's certificate")
    export.add_argument("--out", type=Path, required=True, help="file to write (mode 0600)")
    export.set_defaults(handler=cmd_export)


def cmd_list(args: argparse.Namespace) -> int:
    with instance_store(instance_config(args.dir)) as store:
        entries = store.archived_keys()
    print(f"{'SERIAL':<42} {'LABEL':<16} {'ARCHIVED':<21} RECIPIENT (SHA-256)")
    for entry in entries:
        archived = entry.archived_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{entry.serial:<42} {entry.label or 'default':<16} {archived:<21} {entry.recipient}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    serial = args.serial.lower().removeprefix("0x").lstrip("0") or "0"
    if args.out.exists():
        raise CommandError(f"{args.out} exists already; choose a new file")
    event = AuditEvent(
        actor=operator_actor(),
        action="key_archive.export",
        subject=serial,
        at=datetime.now(UTC),
        detail={"file": str(args.out)},
    )
    # Who took which key out matters, so the export is audited like a change.
    with instance_store(instance_config(args.dir)) as store:
        entry = store.export_archived_key(serial, event)
    if entry is None:
        raise CommandError(f"no archived key for certificate serial {serial}")
    try:
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CommandError(f"cannot create {args.out}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as out:
        out.write(entry.der)
    print(
        f"wrote the archived key of {serial} to {args.out}, encrypted to the archive "
        f"certificate with SHA-256 fingerprint {entry.recipient}; decrypt it where that "
        "certificate's private key is kept:"
    )
    print(
        f"  openssl cms -decrypt -inform DER -in {args.out} -recip ARCHIVE_CERT.pem "
        "-inkey ARCHIVE_KEY.pem | openssl pkey -inform DER -out recovered.key"
    )
    return 0
