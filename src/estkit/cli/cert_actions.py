"""``estkit cert show|revoke`` and ``estkit crl`` (registered by cli/certs.py).

``estkit cert revoke`` signs and stores the new CRL itself (it reads the CA key through the
instance configuration, as ``estkit serve`` does), so the CRL the server serves is current
when the command returns.  If it cannot sign — the key is unreadable for this account, say —
the revocation still stands and a running server publishes the CRL within a second: the
server's refresh task compares the store's revocations with the newest CRL every second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.ca import CertificateAuthority, load_pem_certificates, subject_key_id
from estkit.authority.crl import CrlPublisher
from estkit.authority.keys import KeyFileError, describe_public_key
from estkit.authority.revocation import canonical_reason, parse_serial, revoke
from estkit.cli.certs import record_summary
from estkit.cli.common import CommandError, operator_actor, utc_text
from estkit.cli.instance_access import instance_config, instance_store
from estkit.config import Config
from estkit.errors import EstError
from estkit.store import (
    AlreadyRevoked,
    CertificateRecord,
    CrlRecord,
    Store,
    UnknownCertificate,
)


def _colons(serial: str) -> str:
    digits = serial if len(serial) % 2 == 0 else "0" + serial
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2)).upper()


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _decoded(cert: x509.Certificate) -> dict[str, Any]:
    """What the certificate itself says, for comparison with the record."""
    eku = _extension(cert, x509.ExtendedKeyUsage)
    cdp = _extension(cert, x509.CRLDistributionPoints)
    hash_algorithm = cert.signature_hash_algorithm
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial_colons": _colons(format(cert.serial_number, "x")),
        "not_before": utc_text(cert.not_valid_before_utc),
        "not_after": utc_text(cert.not_valid_after_utc),
        "key": describe_public_key(cert.public_key()),
        "signature": cert.signature_algorithm_oid._name
        + (f" ({hash_algorithm.name})" if hash_algorithm else ""),
        "extended_key_usage": [oid._name for oid in eku] if eku else [],
        "crl_urls": [name.value for point in cdp or [] for name in point.full_name or []],
        "sha256_fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
    }


# Commands ---------------------------------------------------------------------------------------


def _serial(text: str) -> str:
    try:
        return parse_serial(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _record(store: Store, serial: str) -> CertificateRecord:
    record = store.certificate(serial)
    if record is None:
        raise CommandError(f"no certificate with serial {serial} in the store")
    return record


def cmd_cert_show(args: argparse.Namespace) -> int:
    serial = _serial(args.serial)
    now = datetime.now(UTC)
    with instance_store(instance_config(args.dir)) as store:
        record = _record(store, serial)
        renewals = [r.serial for r in store.renewals_of(serial)]
    info = record_summary(record, now)
    info["renewed_by"] = renewals
    info["certificate"] = _decoded(x509.load_der_x509_certificate(record.der))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    decoded = info.pop("certificate")
    rows: list[tuple[str, Any]] = [
        ("serial", f"{record.serial} ({decoded['serial_colons']})"),
        ("status", info["status"]),
        ("subject", record.subject),
        ("SANs", ", ".join(record.sans) or "-"),
        ("issuer", decoded["issuer"]),
        ("not before", info["not_before"]),
        ("not after", info["not_after"]),
        ("key", decoded["key"]),
        ("signature", decoded["signature"]),
        ("extended key usage", ", ".join(decoded["extended_key_usage"]) or "-"),
        ("CRL", ", ".join(decoded["crl_urls"]) or "-"),
        ("label", info["label"]),
        ("kind", record.kind),
        ("requester", record.requester),
        ("issued at", info["issued_at"]),
        ("replaces", record.replaces_serial or "-"),
        ("renewed by", ", ".join(renewals) or "-"),
        ("revoked at", info["revoked_at"] or "-"),
        ("revocation reason", record.revocation_reason or "-"),
        ("key SHA-256", record.key_fingerprint),
        ("cert SHA-256", decoded["sha256_fingerprint"]),
    ]
    for name, value in rows:
        print(f"{name + ':':<20} {value}")
    return 0


def _publisher(config: Config, store: Store, issuer_id: str | None = None) -> CrlPublisher:
    """The CRL publisher of the current issuing CA, or of the generation issuer_id names."""
    try:
        ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
    except (KeyFileError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    generation = ca if issuer_id is None else ca.generation(issuer_id)
    if generation is None:
        raise CommandError(f"the issuing CA {issuer_id} is no longer loaded (expired?)")
    return CrlPublisher(generation, store, config.crl)


def cmd_cert_revoke(args: argparse.Namespace) -> int:
    serial = _serial(args.serial)
    try:
        reason = canonical_reason(args.reason)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    config = instance_config(args.dir)
    actor = operator_actor()
    with instance_store(config) as store:
        try:
            record = revoke(store, serial, reason, actor, datetime.now(UTC))
        except UnknownCertificate:
            raise CommandError(f"no certificate with serial {serial} in the store") from None
        except AlreadyRevoked as exc:
            earlier = exc.record
            raise CommandError(
                f"certificate {serial} was already revoked at {utc_text(earlier.revoked_at)} "
                f"(reason: {earlier.revocation_reason})"
            ) from None
        print(
            f"certificate {serial} ({record.subject}) revoked at {utc_text(record.revoked_at)}, "
            f"reason {reason}"
        )
        try:
            # None: not due any more, because a running server published the CRL that
            # lists this revocation in the moment since it was committed.
            crl = _publisher(config, store, record.issuer_id).refresh(actor) or store.latest_crl(
                record.issuer_id
            )
        except (CommandError, EstError) as exc:
            print(
                f"estkit: warning: the CRL was not re-signed here ({exc}); a running server "
                "publishes it within a second",
                file=sys.stderr,
            )
            return 0
    if crl is not None:
        print(f"CRL number {crl.number} published ({_entries(crl.entries)})")
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace path in one rename: a reader (a web server, a cron copy) never sees half."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).chmod(0o644)  # a CRL is public
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_crl(config: Config, store: Store, actor: str) -> CrlRecord:
    """The newest CRL, re-signed first if due; the stored one if this account cannot sign."""
    try:
        publisher = _publisher(config, store)
    except CommandError as exc:
        try:
            issuer_id = subject_key_id(load_pem_certificates(config.issuing_cert)[0])
        except ValueError as unreadable:
            raise CommandError(str(unreadable)) from None
        record = store.latest_crl(issuer_id)
        if record is None:
            raise CommandError(
                f"no CRL has been published yet, and none can be signed: {exc}"
            ) from None
        print(f"estkit: warning: cannot re-sign the CRL ({exc})", file=sys.stderr)
        return record
    publisher.refresh(actor)
    return publisher.current(actor)


def cmd_crl(args: argparse.Namespace) -> int:
    config = instance_config(args.dir)
    with instance_store(config) as store:
        record = _current_crl(config, store, operator_actor())
    crl = x509.load_der_x509_crl(record.der)
    data = crl.public_bytes(Encoding.PEM) if args.pem else record.der
    try:
        _write_atomically(args.out, data)
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror}") from None
    print(
        f"CRL number {record.number} ({_entries(record.entries)}, next update "
        f"{utc_text(record.next_update)}) written to {args.out}"
    )
    return 0
