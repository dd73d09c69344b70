"""``estkit audit``: the audit trail, newest last."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from estkit.cli.common import CommandError, add_dir_option
from estkit.cli.instance_access import instance_config, instance_store
from estkit.durations import parse_duration
from estkit.store import AuditEvent


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="show the audit trail")
    add_dir_option(audit)
    audit.add_argument(
        "--since",
        metavar="TIME",
        help="only events at or after TIME: ISO 8601 (UTC unless it has an offset) or a "
        "duration meaning that long ago (30m, 1h, 7d)",
    )
    audit.add_argument("--json", action="store_true", help="JSON instead of a table")
    audit.set_defaults(handler=cmd_audit)


def parse_since(text: str, now: datetime) -> datetime:
    """'7d' -> seven days before now; '2025-01-31T12:00:00Z' -> that instant."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"--since: {text!r} is neither an ISO 8601 time (2025-01-31T12:00:00Z) nor a "
            "duration (30m, 1h, 7d)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _at(event: AuditEvent) -> str:
    return event.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_audit(args: argparse.Namespace) -> int:
    since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
    with instance_store(instance_config(args.dir)) as store:
        events = store.audit_events(since=since)
    if args.json:
        rows = [
            {
                "at": event.at.astimezone(UTC).isoformat(),
                "actor": event.actor,
                "action": event.action,
                "subject": event.subject,
                "source": event.source,
                "detail": event.detail,
            }
            for event in events
        ]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'AT':<20} {'ACTOR':<24} {'ACTION':<20} {'SUBJECT':<40} {'SOURCE':<15} DETAIL")
    for event in events:
        detail = json.dumps(event.detail, sort_keys=True, separators=(",", ":"))
        print(
            f"{_at(event):<20} {event.actor:<24} {event.action:<20} {event.subject:<40} "
            f"{event.source or '-':<15} {detail}"
        )
    return 0
