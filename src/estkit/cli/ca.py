"""Operator commands for the CA hierarchy: ``estkit ca show``, ``estkit ca rollover [--root]``.

A rollover (RFC 7030 §4.1.3) makes a new issuing CA — and with ``--root`` a new root plus the
OldWithNew and NewWithOld link certificates — while the replaced generation moves to
``ca/retired/<issuing id>/`` with its key, so its certificates stay valid and revocable.  New
files are written to ``ca/.rollover/`` first and then renamed into place; a rollover that was
interrupted is completed by running the command again.  A running server picks up the new
generation when restarted.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.ca import LINKS_DIR, RETIRED_DIR, CertificateAuthority, subject_key_id
from estkit.authority.keys import KEY_TYPES, KeyFileError, load_private_key, write_private_key
from estkit.authority.rollover import roll_issuing, roll_root
from estkit.cli.common import CommandError, add_dir_option, operator_actor
from estkit.cli.instance_access import instance_config, instance_store
from estkit.config import Config
from estkit.store import AuditEvent
from estkit.wire.keytypes import key_type_of

STAGING_DIR = ".rollover"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = commands.add_parser("ca", help="the CA hierarchy: show it, roll it over")
    actions = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="list the CA generations and link certificates")
    add_dir_option(show)
    show.set_defaults(handler=cmd_ca_show)
    rollover = actions.add_parser(
        "rollover", help="make a new issuing CA (with --root, a new root CA as well)"
    )
    add_dir_option(rollover)
    rollover.add_argument(
        "--root", action="store_true", help="also replace the root CA (needs its key)"
    )
    rollover.add_argument(
        "--key-type", choices=KEY_TYPES, default=None, help="key type (default: as before)"
    )
    rollover.set_defaults(handler=cmd_ca_rollover)


def _load(config: Config) -> CertificateAuthority:
    try:
        return CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
    except (KeyFileError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None


def _describe(cert: x509.Certificate) -> str:
    return (
        f"{cert.subject.rfc4514_string()}  id {subject_key_id(cert)}  "
        f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}"
    )


def cmd_ca_show(args: argparse.Namespace) -> int:
    ca = _load(instance_config(args.dir))
    print(f"current issuing CA: {_describe(ca.issuing)}")
    print(f"current root CA:    {_describe(ca.root)}")
    for generation in ca.retired:
        print(f"retired issuing CA: {_describe(generation.issuing)}")
        if generation.root != ca.root:
            print(f"  under root:       {_describe(generation.root)}")
    for link in ca.links:
        print(f"link certificate:   {_describe(link)}  issued by {link.issuer.rfc4514_string()}")
    return 0


def _pem(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(Encoding.PEM))


def _retire(ca: CertificateAuthority, ca_dir: Path, root_key_path: Path | None) -> Path:
    """Copy the current generation (root cert, issuing cert and key) to retired/<id>/; on a
    root rollover also the old root key, which is never destroyed: take it offline."""
    target = ca_dir / RETIRED_DIR / ca.issuing_id
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    _pem(target / "root.pem", ca.root)
    _pem(target / "issuing.pem", ca.issuing)
    (target / "issuing.key").unlink(missing_ok=True)
    write_private_key(target / "issuing.key", ca.issuing_key)
    if root_key_path is not None:
        (target / "root.key").unlink(missing_ok=True)
        shutil.copy2(root_key_path, target / "root.key")  # keeps mode 0600
    return target


def _serve_link(tls_chain: Path, old_with_new: x509.Certificate) -> None:
    """Append OldWithNew to the server's TLS chain: its certificate still chains to the old
    root, and clients that already moved to the new root need the link to verify it."""
    chain = tls_chain.read_bytes()
    link = old_with_new.public_bytes(Encoding.PEM)
    if link not in chain:
        partial = tls_chain.with_name(tls_chain.name + ".new")
        partial.write_bytes(chain.rstrip(b"\n") + b"\n" + link)
        partial.replace(tls_chain)


def _key_file(config: Config) -> Path:
    """The issuing CA key file: a rollover writes the new key beside the certificates."""
    if not isinstance(config.issuing_key, Path):
        raise CommandError(
            f"the issuing CA key is in a PKCS#11 token ({config.issuing_key}); 'estkit ca "
            "rollover' supports key files only so far"
        )
    return config.issuing_key


def _commit(ca_dir: Path, config: Config) -> list[str]:
    """Rename every staged file into place (root first), then drop the staging directory."""
    stage = ca_dir / STAGING_DIR
    moved = []
    targets = {
        "root.pem": config.root_cert,
        "root.key": config.root_cert.with_suffix(".key"),
        "issuing.pem": config.issuing_cert,
        "issuing.key": _key_file(config),
    }
    for name, target in targets.items():
        if (stage / name).exists():
            (stage / name).replace(target)
            moved.append(target.name)
    if stage.exists():
        shutil.rmtree(stage)
    return moved


def cmd_ca_rollover(args: argparse.Namespace) -> int:
    config = instance_config(args.dir)
    _key_file(config)
    ca_dir = config.issuing_cert.parent
    if (ca_dir / STAGING_DIR).exists():
        moved = _commit(ca_dir, config)
        _load(config)  # the completed generation must load, or say why
        print(f"completed an interrupted rollover ({', '.join(moved) or 'nothing left to move'})")
        print("restart 'estkit serve' to issue under the new CA")
        return 0
    ca = _load(config)
    root_key_path = config.root_cert.with_suffix(".key")
    try:
        root_key = load_private_key(root_key_path)
    except KeyFileError as exc:
        raise CommandError(
            f"the root CA key is needed to sign the new CA: {exc} (bring the offline root key "
            "back for the rollover)"
        ) from None
    now = datetime.now(UTC)
    key_type = args.key_type or key_type_of(ca.issuing_key)
    stage = ca_dir / STAGING_DIR
    stage.mkdir(mode=0o700)
    root, signing_key, links = ca.root, root_key, []
    if args.root:
        rolled = roll_root(ca.root, root_key, args.key_type or key_type_of(root_key), now)
        root, signing_key = rolled.new_root.certificate, rolled.new_root.key
        links = [rolled.old_with_new, rolled.new_with_old]
        _pem(stage / "root.pem", root)
        write_private_key(stage / "root.key", signing_key)
    issuing = roll_issuing(root, signing_key, ca.issuing, key_type, now)
    _pem(stage / "issuing.pem", issuing.certificate)
    write_private_key(stage / "issuing.key", issuing.key)

    retired = _retire(ca, ca_dir, root_key_path if args.root else None)
    if links:
        (ca_dir / LINKS_DIR).mkdir(mode=0o755, exist_ok=True)
        for name, link in zip(("old-with-new", "new-with-old"), links, strict=True):
            _pem(ca_dir / LINKS_DIR / f"{subject_key_id(root)}-{name}.pem", link)
        _serve_link(config.tls_cert, links[0])
    _commit(ca_dir, config)
    new = _load(config)

    detail = {
        "root": args.root,
        "old_issuing": ca.issuing_id,
        "new_issuing": new.issuing_id,
        "old_root": ca.root_id,
        "new_root": new.root_id,
    }
    with instance_store(config) as store:
        store.record_audit(
            AuditEvent(
                actor=operator_actor(),
                action="ca.rollover",
                subject=new.issuing_id,
                at=now,
                detail=detail,
            )
        )
    print(f"new issuing CA: {_describe(new.issuing)}")
    if args.root:
        print(f"new root CA:    {_describe(new.root)}")
        print(f"link certificates (OldWithNew, NewWithOld) in {ca_dir / LINKS_DIR}")
        print(f"the old root key was moved to {retired / 'root.key'}: take it offline")
    print(f"retired issuing CA kept in {retired} (it signs CRLs and OCSP for its certificates)")
    print("restart 'estkit serve' to issue under the new CA")
    return 0
