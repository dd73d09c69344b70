"""Operator commands for issued certificates and the CRL: ``estkit cert list|show|revoke`` and
``estkit crl``.  ``cert list`` is here; the others are in cli/cert_actions.py, imported only
when one of them runs, so that a listing starts without the CA and store machinery.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from estkit.authority.labels import DEFAULT_LABEL
from estkit.cli.common import CommandError, add_dir_option, deferred, utc_text
from estkit.cli.instance_access import instance_store_settings
from estkit.store.certificate_listing import (
    STATUSES,
    CertificateFilter,
    certificate_status,
    list_certificates,
)
from estkit.store.records import CertificateRecord
from estkit.store.unavailable import StoreUnavailable

ACTIONS = "estkit.cli.cert_actions"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cert = commands.add_parser("cert", help="list, show and revoke issued certificates")
    actions = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list issued certificates")
    add_dir_option(listing)
    listing.add_argument("--label", help="only this label ('default': the unlabelled path)")
    listing.add_argument("--subject", help="only subjects containing TEXT (any case)")
    listing.add_argument("--status", choices=STATUSES, help="only certificates in this state")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(handler=cmd_cert_list)

    show = actions.add_parser("show", help="everything known about one certificate")
    add_dir_option(show)
    show.add_argument("serial", help="serial number in hex, with or without colons")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    show.set_defaults(handler=deferred(ACTIONS, "cmd_cert_show"))

    revoke_parser = actions.add_parser("revoke", help="revoke a certificate and publish a new CRL")
    add_dir_option(revoke_parser)
    revoke_parser.add_argument("serial", help="serial number in hex, with or without colons")
    revoke_parser.add_argument(
        "--reason",
        required=True,
        help="RFC 5280 reason: keyCompromise, cACompromise, affiliationChanged, superseded, "
        "cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise or "
        "unspecified",
    )
    revoke_parser.set_defaults(handler=deferred(ACTIONS, "cmd_cert_revoke"))

    crl = commands.add_parser("crl", help="write the current CRL to a file")
    add_dir_option(crl)
    crl.add_argument("--out", required=True, type=Path, help="file to write (replaced)")
    crl.add_argument("--pem", action="store_true", help="PEM instead of DER")
    crl.set_defaults(handler=deferred(ACTIONS, "cmd_crl"))


# Formatting -------------------------------------------------------------------------------------


def _label_name(label: str) -> str:
    return label or "default"


def record_summary(record: CertificateRecord, now: datetime) -> dict[str, Any]:
    return {
        "serial": record.serial,
        "status": certificate_status(record, now),
        "label": _label_name(record.label),
        "subject": record.subject,
        "sans": list(record.sans),
        "not_before": utc_text(record.not_before),
        "not_after": utc_text(record.not_after),
        "kind": record.kind,
        "requester": record.requester,
        "issued_at": utc_text(record.issued_at),
        "replaces_serial": record.replaces_serial,
        "revoked_at": utc_text(record.revoked_at),
        "revocation_reason": record.revocation_reason,
        "key_fingerprint_sha256": record.key_fingerprint,
    }


def cmd_cert_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    label = None if args.label is None else DEFAULT_LABEL if args.label == "default" else args.label
    store = instance_store_settings(args.dir)
    wanted = CertificateFilter(label=label, subject=args.subject, status=args.status)
    try:
        records = list_certificates(store.url, store.busy_timeout, wanted, now)
    except StoreUnavailable as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps([record_summary(r, now) for r in records], indent=2))
        return 0
    print(f"{'SERIAL':<40} {'STATUS':<8} {'LABEL':<12} {'KIND':<6} {'NOT AFTER':<20} SUBJECT")
    for record in records:
        print(
            f"{record.serial:<40} {certificate_status(record, now):<8} "
            f"{_label_name(record.label):<12} {record.kind:<6} {utc_text(record.not_after):<20} "
            f"{record.subject}"
        )
    return 0
