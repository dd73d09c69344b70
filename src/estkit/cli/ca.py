"""Operator commands for the CA hierarchy: ``estkit ca show``, ``estkit ca rollover [--root]``.

A rollover (RFC 7030 §4.1.3) makes a new issuing CA — and with ``--root`` a new root plus the
OldWithNew and NewWithOld link certificates — while the replaced generation moves to
``ca/retired/<issuing id>/`` with its key, so its certificates stay valid and revocable.  New
files are written to ``ca/.rollover/`` first and then renamed into place; a rollover that was
interrupted is completed by running the command again.  A running server picks up the new
generation when restarted.

With the CA keys in a PKCS#11 token the new keys are made in the same token; the staged files
then include estkit.toml with ``issuing_key`` naming the new key, and the retired generation
keeps its key's URI (issuing.uri) instead of a key file.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.ca import (
    LINKS_DIR,
    RETIRED_DIR,
    RETIRED_KEY_URI,
    CertificateAuthority,
    subject_key_id,
)
from estkit.authority.keys import KEY_TYPES, KeyFileError, load_private_key, write_private_key
from estkit.authority.pki import new_ca_key
from estkit.authority.rollover import roll_issuing, roll_root
from estkit.authority.token import (
    Pkcs11Uri,
    Token,
    TokenError,
    TokenKeyRef,
    find_token_key,
    open_token,
)
from estkit.cli.common import CommandError, add_dir_option, operator_actor
from estkit.cli.instance_access import instance_config, instance_store
from estkit.config import CONFIG_NAME, Config
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


def _retire(
    ca: CertificateAuthority, ca_dir: Path, config: Config, root_key_path: Path | None
) -> Path:
    """Copy the current generation (root cert, issuing cert, and the issuing key or, for a
    key in a token, its URI) to retired/<id>/; on a root rollover with key files also the old
    root key, which is never destroyed: take it offline."""
    target = ca_dir / RETIRED_DIR / ca.issuing_id
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    _pem(target / "root.pem", ca.root)
    _pem(target / "issuing.pem", ca.issuing)
    if isinstance(config.issuing_key, TokenKeyRef):
        (target / RETIRED_KEY_URI).write_text(f"{config.issuing_key.uri}\n")
    else:
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


def _commit(ca_dir: Path, config: Config) -> list[str]:
    """Rename every staged file into place (root first, the configuration last), then drop
    the staging directory."""
    stage = ca_dir / STAGING_DIR
    moved = []
    targets = {
        "root.pem": config.root_cert,
        "root.key": config.root_cert.with_suffix(".key"),
        "issuing.pem": config.issuing_cert,
        "issuing.key": ca_dir / "issuing.key",
        CONFIG_NAME: config.path,
    }
    if isinstance(config.issuing_key, Path):
        targets["issuing.key"] = config.issuing_key
    for name, target in targets.items():
        if (stage / name).exists():
            (stage / name).replace(target)
            moved.append(target.name)
    if stage.exists():
        shutil.rmtree(stage)
    return moved


class _KeyMaker:
    """Where the rollover's keys are: key files in ca/, or objects in the CA's token."""

    def __init__(self, config: Config) -> None:
        self.token: Token | None = None
        if isinstance(config.issuing_key, TokenKeyRef):
            ref = config.issuing_key
            try:
                self.token = open_token(ref.settings, ref.uri.token)
            except TokenError as exc:
                raise CommandError(str(exc)) from None

    def root_key(
        self, config: Config, ca: CertificateAuthority
    ) -> CertificateIssuerPrivateKeyTypes:
        """The current root's key: ca/root.key, or the token's key whose CKA_ID is the root's
        key identifier (how estkit init and rollover make them)."""
        try:
            if self.token is None:
                return load_private_key(config.root_cert.with_suffix(".key"))
            return find_token_key(self.token, key_id=bytes.fromhex(ca.root_id))
        except KeyFileError as exc:
            raise CommandError(
                f"the root CA key is needed to sign the new CA: {exc} (bring the offline root "
                "key back for the rollover)"
            ) from None

    def new_key(self, key_type: str, role: str) -> tuple[CertificateIssuerPrivateKeyTypes, str]:
        """A new CA key, and its pkcs11: URI ('' for a key file)."""
        try:
            key, uri = new_ca_key(self.token, key_type, role)
        except TokenError as exc:
            raise CommandError(str(exc)) from None
        return key, uri or ""


def _with_issuing_key(config: Config, uri: str, root_uris: tuple[str, str] | None = None) -> str:
    """The configuration's text with [ca] issuing_key set to a token key's URI, and on a root
    rollover the old root key's URI (in the comment init writes) replaced by the new one's."""
    text = config.path.read_text()
    if root_uris is not None:
        text = text.replace(*root_uris)
    line = re.compile(r"^(\s*issuing_key\s*=).*$", re.MULTILINE)
    if len(line.findall(text)) != 1:
        raise CommandError(f"{config.path}: cannot find the one issuing_key setting to update")
    return line.sub(lambda match: f"{match.group(1)} {json.dumps(uri)}", text)


def cmd_ca_rollover(args: argparse.Namespace) -> int:
    config = instance_config(args.dir)
    ca_dir = config.issuing_cert.parent
    if (ca_dir / STAGING_DIR).exists():
        moved = _commit(ca_dir, config)
        _load(instance_config(args.dir))  # the completed generation must load, or say why
        print(f"completed an interrupted rollover ({', '.join(moved) or 'nothing left to move'})")
        print("restart 'estkit serve' to issue under the new CA")
        return 0
    ca = _load(config)
    keys = _KeyMaker(config)
    root_key = keys.root_key(config, ca)
    if keys.token is not None:
        _with_issuing_key(config, "")  # refuse a configuration it cannot update, before any key
    now = datetime.now(UTC)
    stage = ca_dir / STAGING_DIR
    stage.mkdir(mode=0o700)
    root, signing_key, links, root_uris = ca.root, root_key, [], None
    if args.root:
        new_root_key, new_root_uri = keys.new_key(args.key_type or key_type_of(root_key), "root")
        if keys.token is not None:
            old_label = keys.token.private_key(key_id=bytes.fromhex(ca.root_id)).label
            root_uris = (str(Pkcs11Uri(keys.token.label, old_label)), new_root_uri)
        rolled = roll_root(ca.root, root_key, new_root_key, now)
        root, signing_key = rolled.new_root.certificate, rolled.new_root.key
        links = [rolled.old_with_new, rolled.new_with_old]
        _pem(stage / "root.pem", root)
        if keys.token is None:
            write_private_key(stage / "root.key", signing_key)
    issuing_key, issuing_uri = keys.new_key(args.key_type or key_type_of(ca.issuing_key), "issuing")
    issuing = roll_issuing(root, signing_key, ca.issuing, issuing_key, now)
    _pem(stage / "issuing.pem", issuing.certificate)
    if issuing_uri:
        (stage / CONFIG_NAME).write_text(_with_issuing_key(config, issuing_uri, root_uris))
        shutil.copymode(config.path, stage / CONFIG_NAME)
    else:
        write_private_key(stage / "issuing.key", issuing.key)

    root_key_path = config.root_cert.with_suffix(".key") if keys.token is None else None
    retired = _retire(ca, ca_dir, config, root_key_path if args.root else None)
    if links:
        (ca_dir / LINKS_DIR).mkdir(mode=0o755, exist_ok=True)
        for name, link in zip(("old-with-new", "new-with-old"), links, strict=True):
            _pem(ca_dir / LINKS_DIR / f"{subject_key_id(root)}-{name}.pem", link)
        _serve_link(config.tls_cert, links[0])
    _commit(ca_dir, config)
    new = _load(instance_config(args.dir))

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
        if keys.token is None:
            print(f"the old root key was moved to {retired / 'root.key'}: take it offline")
        else:
            print(f"the old root key stays in token {keys.token.label!r}: it signs nothing more")
    print(f"retired issuing CA kept in {retired} (it signs CRLs and OCSP for its certificates)")
    print("restart 'estkit serve' to issue under the new CA")
    return 0
