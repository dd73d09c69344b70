"""Operator commands for HTTP Basic accounts: ``estkit user add|list|remove``."""

from __future__ import annotations

import argparse
import sys

from estkit.authority.accounts import Accounts, generate_secret
from estkit.authority.labels import DEFAULT_LABEL
from estkit.cli.common import CommandError, add_dir_option, operator_actor
from estkit.cli.instance_access import instance_config, instance_store
from estkit.config import Config
from estkit.store import UserExists


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = commands.add_parser("user", help="manage HTTP Basic accounts")
    actions = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user; prints a generated secret once")
    add_dir_option(add)
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
    add.set_defaults(handler=cmd_user_add)
    listing = actions.add_parser("list", help="list users")
    add_dir_option(listing)
    listing.set_defaults(handler=cmd_user_list)
    remove = actions.add_parser("remove", help="remove a user")
    add_dir_option(remove)
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_user_remove)


def _labels(config: Config, labels: list[str]) -> list[str]:
    resolved = [DEFAULT_LABEL if label == "default" else label for label in labels]
    for label in resolved:
        if label not in config.profiles:
            known = ", ".join(["default", *sorted(p for p in config.profiles if p)])
            raise CommandError(f"no label '{label}' in {config.path} (labels: {known})")
    return resolved


def cmd_user_add(args: argparse.Namespace) -> int:
    config = instance_config(args.dir)
    labels = _labels(config, args.label)
    secret = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else generate_secret()
    with instance_store(config) as store:
        try:
            Accounts(store).add(args.name, secret, labels or None, args.once, operator_actor())
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except UserExists:
            raise CommandError(f"user '{args.name}' exists already") from None
    kind = "one-time bootstrap secret" if args.once else "password"
    if args.password_stdin:
        print(f"user {args.name} added")
    else:
        print(f"user {args.name} added; {kind} (shown only now): {secret}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    with instance_store(instance_config(args.dir)) as store:
        users = Accounts(store).list()
    print(f"{'NAME':<24} {'LABELS':<24} {'ONCE':<5} {'STATE':<9} CREATED")
    for user in users:
        labels = ",".join(label or "default" for label in user.labels) if user.labels else "*"
        state = "consumed" if user.consumed_at else "active"
        created = user.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        once = "yes" if user.once else "no"
        print(f"{user.name:<24} {labels:<24} {once:<5} {state:<9} {created}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    with instance_store(instance_config(args.dir)) as store:
        removed = Accounts(store).remove(args.name, actor=operator_actor())
    if not removed:
        raise CommandError(f"no user '{args.name}'")
    print(f"user {args.name} removed")
    return 0
