"""Operator commands for manual approval: ``estkit request list|show|approve|reject``.

A decision only changes the stored request: the certificate is signed by the server when the
client resends the identical request (RFC 7030 §4.2.3), so these commands never need the CA
key and work while the server runs, or while it is stopped.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.approval import DecisionError, approve, reject
from estkit.authority.keys import describe_public_key, spki_sha256
from estkit.authority.service import san_strings
from estkit.cli.common import CommandError, add_dir_option, operator_actor, utc_text
from estkit.cli.instance_access import instance_config, instance_store
from estkit.store import REQUEST_STATUSES, RequestRecord


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    request = commands.add_parser(
        "request", help="list, approve and reject requests awaiting approval"
    )
    actions = request.add_subparsers(dest="request_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list enrollment requests of manual labels")
    add_dir_option(listing)
    listing.add_argument("--status", choices=REQUEST_STATUSES, help="only requests in this state")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(handler=cmd_request_list)

    show = actions.add_parser("show", help="everything known about one request")
    add_dir_option(show)
    show.add_argument("id", help="request ID (from 'estkit request list')")
    output = show.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="JSON instead of text")
    output.add_argument(
        "--pem", action="store_true", help="only the CSR, as PEM (for openssl req -text)"
    )
    show.set_defaults(handler=cmd_request_show)

    approve_parser = actions.add_parser(
        "approve", help="approve; the client gets its certificate when it asks again"
    )
    add_dir_option(approve_parser)
    approve_parser.add_argument("id", help="request ID")
    approve_parser.set_defaults(handler=cmd_request_approve)

    reject_parser = actions.add_parser(
        "reject", help="reject; the client is answered 403 with the reason"
    )
    add_dir_option(reject_parser)
    reject_parser.add_argument("id", help="request ID")
    reject_parser.add_argument(
        "--reason", required=True, help="told to the client (one line, at most 300 characters)"
    )
    reject_parser.set_defaults(handler=cmd_request_reject)


# Formatting -------------------------------------------------------------------------------------


def _summary(record: RequestRecord) -> dict[str, Any]:
    csr = x509.load_der_x509_csr(record.csr_der)
    try:
        sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    return {
        "id": record.id,
        "status": record.status,
        "label": record.label or "default",
        "requester": record.requester,
        "source": record.source,
        "subject": csr.subject.rfc4514_string(),
        "sans": list(san_strings(sans)),
        "key": describe_public_key(csr.public_key()),
        "key_fingerprint_sha256": spki_sha256(csr.public_key()),
        "created_at": utc_text(record.created_at),
        "decided_at": utc_text(record.decided_at),
        "decided_by": record.decided_by,
        "reason": record.reason,
        "serial": record.serial,
        "request_fingerprint": record.fingerprint,
    }


def _request_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise CommandError(f"request IDs are positive whole numbers, not {text!r}")
    return int(text)


# Commands ---------------------------------------------------------------------------------------


def cmd_request_list(args: argparse.Namespace) -> int:
    with instance_store(instance_config(args.dir)) as store:
        records = store.requests(status=args.status)
    summaries = [_summary(record) for record in records]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    print(f"{'ID':>6} {'STATUS':<9} {'LABEL':<12} {'CREATED':<20} {'REQUESTER':<28} SUBJECT")
    for info in summaries:
        print(
            f"{info['id']:>6} {info['status']:<9} {info['label']:<12} {info['created_at']:<20} "
            f"{info['requester']:<28} {info['subject'] or '-'}"
        )
    return 0


def cmd_request_show(args: argparse.Namespace) -> int:
    request_id = _request_id(args.id)
    with instance_store(instance_config(args.dir)) as store:
        record = store.request(request_id)
    if record is None:
        raise CommandError(f"no request {request_id}")
    if args.pem:
        csr = x509.load_der_x509_csr(record.csr_der)
        print(csr.public_bytes(Encoding.PEM).decode("ascii"), end="")
        return 0
    info = _summary(record)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [
        ("id", info["id"]),
        ("status", info["status"]),
        ("label", info["label"]),
        ("requester", info["requester"]),
        ("from", info["source"] or "-"),
        ("subject", info["subject"] or "-"),
        ("SANs", ", ".join(info["sans"]) or "-"),
        ("key", info["key"]),
        ("key SHA-256", info["key_fingerprint_sha256"]),
        ("created at", info["created_at"]),
        ("decided at", info["decided_at"] or "-"),
        ("decided by", info["decided_by"] or "-"),
        ("reason", info["reason"] or "-"),
        ("certificate", info["serial"] or "-"),
    ]
    for name, value in rows:
        print(f"{name + ':':<13} {value}")
    return 0


def cmd_request_approve(args: argparse.Namespace) -> int:
    request_id = _request_id(args.id)
    with instance_store(instance_config(args.dir)) as store:
        try:
            record = approve(store, request_id, operator_actor(), datetime.now(UTC))
        except DecisionError as exc:
            raise CommandError(str(exc)) from None
    print(
        f"request {record.id} approved; {record.requester} receives the certificate when it "
        "resends the request"
    )
    return 0


def cmd_request_reject(args: argparse.Namespace) -> int:
    request_id = _request_id(args.id)
    with instance_store(instance_config(args.dir)) as store:
        try:
            record = reject(store, request_id, operator_actor(), args.reason, datetime.now(UTC))
        except DecisionError as exc:
            raise CommandError(str(exc)) from None
    print(f"request {record.id} rejected; {record.requester} is told: {record.reason}")
    return 0
