"""Device commands: cacerts, csrattrs, enroll, reenroll, serverkeygen, renew.

They use only the client library (``estkit.client``), so they work on a device that installed
``pip install estkit`` without the server extra. Every failure prints one line saying what
failed and what to do, and exits non-zero (see EXIT_* below and docs/client.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509

from estkit.client import (
    AuthenticationRefused,
    AuthenticationRequired,
    BadResponse,
    BasicAuth,
    ClientCertificate,
    CsrAttributes,
    CsrTemplate,
    EstClient,
    EstClientError,
    RequestRejected,
    RetryLater,
    ServerError,
    ServerUnreachable,
    TlsVerificationFailed,
    generate_key,
)
from estkit.client.client import with_retries
from estkit.client.csr import KEY_TYPES, signing_key
from estkit.client.errors import GaveUpWaiting, OperationNotOffered
from estkit.client.files import (
    KEY_MODE,
    CannotWrite,
    Pair,
    PairError,
    certificates_pem,
    check_new_files,
    key_pem,
    load_key,
    write_file,
    write_key,
)
from estkit.client.renewal import (
    RenewalResult,
    Renewer,
    Threshold,
    parse_duration,
    run_hook,
    watch,
)
from estkit.client.results import (
    OID_CHALLENGE_PASSWORD,
    OID_EC_PUBLIC_KEY,
    OID_ED25519,
    OID_EXTENSION_REQUEST,
    OID_RSA_ENCRYPTION,
)
from estkit.client.trust import (
    anchors_from_pin,
    bootstrap_cacerts,
    chain_for,
    fingerprint,
    is_self_signed,
    matching_certificate,
    parse_fingerprint,
)

EXIT_OK = 0
EXIT_FAILURE = 1  # a local problem: files, arguments, an unconfirmed or mismatching bootstrap
EXIT_USAGE = 2  # wrong or missing options (also argparse's own status)
EXIT_UNREACHABLE = 3  # no connection, or TLS verification failed
EXIT_AUTH = 4  # 401: credentials missing or refused
EXIT_REJECTED = 5  # 4xx or 501: the server refused the request and said why
EXIT_SERVER = 6  # 5xx, a malformed answer, or still pending after --max-wait
EXIT_HOOK = 7  # renewed, but the --exec command failed

OID_NAMES = {
    OID_CHALLENGE_PASSWORD: "challengePassword",
    OID_EXTENSION_REQUEST: "extensionRequest",
    OID_EC_PUBLIC_KEY: "id-ecPublicKey",
    OID_RSA_ENCRYPTION: "rsaEncryption",
    OID_ED25519: "id-Ed25519",
    "1.3.101.113": "id-Ed448",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.10": "RSASSA-PSS",
    "1.2.840.10045.3.1.7": "secp256r1 (P-256)",
    "1.3.132.0.34": "secp384r1 (P-384)",
    "1.3.132.0.35": "secp521r1 (P-521)",
    "2.5.29.17": "subjectAltName",
    "2.5.29.15": "keyUsage",
    "2.5.29.37": "extKeyUsage",
    "2.5.29.19": "basicConstraints",
    "2.5.29.14": "subjectKeyIdentifier",
    "1.3.6.1.5.5.7.1.1": "authorityInfoAccess",
    "2.5.4.3": "commonName",
    "2.5.4.5": "serialNumber",
    "1.2.840.113549.1.9.1": "emailAddress",
}
KEY_TYPE_NAMES = {
    "ec-p256": "EC P-256",
    "ec-p384": "EC P-384",
    "ec-p521": "EC P-521",
    "rsa": "RSA",
    "ed25519": "Ed25519",
}
# csrattrs says "RSA" without a size; 3072 bits is accepted by every profile we know.
DEFAULT_FOR_FAMILY = {"rsa": "rsa-3072"}


class CliError(Exception):
    """A failure already phrased for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def is_interactive() -> bool:
    """Whether a person can answer a question (a seam for tests)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def watch_sleep(seconds: float) -> None:
    """The pause between rounds of ``renew --watch`` (a seam for tests)."""
    time.sleep(seconds)


def ask(question: str) -> str:
    try:
        return input(question)
    except EOFError:
        return ""


def say(line: str) -> None:
    print(line, flush=True)


def note(line: str) -> None:
    print(f"estkit: {line}", file=sys.stderr, flush=True)


# Helpers --------------------------------------------------------------------------------------


def _read_password(path: Path) -> str:
    try:
        text = sys.stdin.readline() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the password file {path}: {exc}") from exc
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise CliError(f"the password file {path} is empty")
    return lines[0]


def _auth(args: argparse.Namespace) -> BasicAuth | ClientCertificate | None:
    if args.user is not None and args.cert is not None:
        raise CliError("give either --user or --cert, not both", EXIT_USAGE)
    if args.user is not None:
        if args.password_file is None:
            raise CliError("--user needs --password-file", EXIT_USAGE)
        return BasicAuth(args.user, _read_password(args.password_file))
    if args.password_file is not None:
        raise CliError("--password-file needs --user", EXIT_USAGE)
    if args.cert is not None:
        if args.key is None:
            raise CliError("--cert needs --key (the certificate's private key)", EXIT_USAGE)
        return ClientCertificate(args.cert, args.key)
    return None


def _existing_key_path(args: argparse.Namespace) -> Path | None:
    if args.csr_key is not None:
        return Path(args.csr_key)
    if args.cert is None and args.key is not None:
        return Path(args.key)
    return None


def parse_subject(text: str) -> x509.Name:
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise CliError(
            f'--subject {text!r} is not an RFC 4514 name (e.g. "CN=device-1,O=Example"): {exc}',
            EXIT_USAGE,
        ) from exc


def parse_san(text: str) -> x509.GeneralName:
    kind, _, value = text.partition(":")
    kind = kind.strip().upper()
    value = value.strip()
    if not value:
        raise CliError(f"--san {text!r}: expected TYPE:VALUE, e.g. DNS:host.example", EXIT_USAGE)
    try:
        if kind == "DNS":
            return x509.DNSName(value)
        if kind == "IP":
            return x509.IPAddress(ipaddress.ip_address(value))
        if kind == "URI":
            return x509.UniformResourceIdentifier(value)
        if kind in ("EMAIL", "RFC822"):
            return x509.RFC822Name(value)
    except ValueError as exc:
        raise CliError(f"--san {text!r}: {exc}", EXIT_USAGE) from exc
    raise CliError(f"--san {text!r}: the type must be DNS, IP, URI or EMAIL", EXIT_USAGE)


def _key_type(requested: str | None, attributes: CsrAttributes) -> str:
    if requested:
        return requested
    wanted = attributes.key_type
    if wanted is None:
        return "ec-p256"
    key_type = DEFAULT_FOR_FAMILY.get(wanted, wanted)
    if key_type not in KEY_TYPES:
        raise CliError(
            f"the server asks for {KEY_TYPE_NAMES.get(wanted, wanted)} keys, which estkit "
            "cannot make; give an existing key with --key"
        )
    return key_type


def _show_oid(oid: str) -> str:
    name = OID_NAMES.get(oid)
    return f"{name} ({oid})" if name else oid


def describe_csrattrs(attributes: CsrAttributes) -> list[str]:
    """Human-readable lines for what csrattrs asks for."""
    if not attributes.items:
        return ["The server asks for nothing in particular (any key type the label accepts)."]
    lines: list[str] = []
    key_type = attributes.key_type
    if key_type:
        lines.append(f"key type:           {KEY_TYPE_NAMES.get(key_type, key_type)}")
    else:
        lines.append("key type:           not specified")
    if attributes.wants_pop_linking:
        lines.append(
            "PoP linking:        required (challengePassword = the TLS 1.2 tls-unique value, "
            "RFC 7030 §3.5)"
        )
    else:
        lines.append("PoP linking:        not required")
    extensions = attributes.requested_extensions
    lines.append(
        "extensions:         "
        + (", ".join(_show_oid(o) for o in extensions) if extensions else "none requested")
    )
    shown = {OID_CHALLENGE_PASSWORD, OID_EXTENSION_REQUEST}
    if key_type:
        shown |= {OID_EC_PUBLIC_KEY, OID_RSA_ENCRYPTION, OID_ED25519}
    others = [o for o in attributes.oids if o not in shown]
    if others:
        lines.append("other:              " + ", ".join(_show_oid(o) for o in others))
    return lines


def _progress(error: RetryLater, waited: float) -> None:
    what = "the request is pending" if error.status == 202 else "the server is busy"
    delay = max(1, error.delay)
    note(f"{what} ({error.status}); asking again in {delay} s (waited {waited:.0f} s so far)")


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _describe_issued(cert: x509.Certificate) -> str:
    return (
        f"{cert.subject.rfc4514_string() or '(empty subject)'}, serial "
        f"{cert.serial_number:x}, valid until {_when(cert.not_valid_after_utc)}"
    )


# Commands -------------------------------------------------------------------------------------


def cmd_cacerts(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.bootstrap and args.ca_file is not None:
        raise CliError("give either --ca-file or --bootstrap, not both", EXIT_USAGE)
    if not args.bootstrap and args.ca_file is None:
        raise CliError(
            "give --ca-file TA, or --bootstrap to fetch a first trust anchor", EXIT_USAGE
        )
    if args.fingerprint and not args.bootstrap:
        raise CliError("--fingerprint is for --bootstrap", EXIT_USAGE)
    check_new_files([out], args.force)
    if not args.bootstrap:
        answer = EstClient(args.server, args.ca_file, label=args.label).cacerts()
        write_file(out, certificates_pem(answer.certificates), overwrite=args.force)
        say(f"saved {len(answer.certificates)} CA certificate(s) to {out}")
        return EXIT_OK

    digest: bytes | None = None
    if args.fingerprint:
        try:
            digest = parse_fingerprint(args.fingerprint)
        except ValueError as exc:
            raise CliError(f"--fingerprint: {exc}", EXIT_USAGE) from exc
    elif not is_interactive():
        raise CliError(
            "refusing to trust CA certificates fetched without verification: no terminal to "
            "confirm them on; give --fingerprint SHA256:<hex of the root CA certificate>, "
            "or run on a terminal"
        )
    answer = bootstrap_cacerts(args.server, args.label)
    certificates = list(answer.certificates)
    say(f"The server sent {len(certificates)} CA certificate(s), NOT verified:")
    for index, cert in enumerate(certificates, 1):
        kind = "root" if is_self_signed(cert) else f"issued by {cert.issuer.rfc4514_string()}"
        say(f"  [{index}] {cert.subject.rfc4514_string()} ({kind})")
        say(f"      {fingerprint(cert)}")
        say(f"      valid {_when(cert.not_valid_before_utc)} to {_when(cert.not_valid_after_utc)}")
    if digest is not None:
        pinned = matching_certificate(certificates, digest)
        if pinned is None:
            raise CliError(
                f"fingerprint mismatch: none of the {len(certificates)} certificates the server "
                "sent has the fingerprint given; nothing saved (this may not be the server you "
                "expect; check --server and the fingerprint)"
            )
        anchors = anchors_from_pin(certificates, pinned)
        say(f"The fingerprint matches {pinned.subject.rfc4514_string()}.")
        if not is_self_signed(pinned):
            note("the fingerprint is of an intermediate CA; pinning the root is more robust")
    else:
        reply = ask(
            "Compare these fingerprints with ones obtained out of band. "
            "Trust these certificates? [y/N] "
        )
        if reply.strip().lower() not in ("y", "yes"):
            raise CliError("not confirmed; nothing saved")
        anchors = certificates
    write_file(out, certificates_pem(anchors), overwrite=args.force)
    say(f"saved {len(anchors)} trust anchor(s) to {out}")
    try:
        EstClient(args.server, anchors, label=args.label).cacerts()
    except TlsVerificationFailed as exc:
        note(
            f"warning: the server's own TLS certificate does not chain to the saved anchors "
            f"({exc}); EST requests to it will fail with --ca-file {out}"
        )
    return EXIT_OK


def cmd_csrattrs(args: argparse.Namespace) -> int:
    client = EstClient(args.server, args.ca_file, label=args.label)
    attributes = client.csrattrs()
    say(f"{client.host}:{client.port}{client.base_path}/csrattrs asks for:")
    for line in describe_csrattrs(attributes):
        say(f"  {line}")
    return EXIT_OK


def _post_csr_command(args: argparse.Namespace, serverkeygen: bool) -> int:
    auth = _auth(args)
    if serverkeygen and args.cert is None and args.key is not None:
        raise CliError("the server makes the key; --key is only the key of --cert", EXIT_USAGE)
    existing = None if serverkeygen else _existing_key_path(args)
    out_cert = Path(args.out_cert)
    out_key = None if args.out_key is None else Path(args.out_key)
    if not serverkeygen and existing is not None and out_key is not None:
        raise CliError(
            "--out-key is for a generated key; with an existing key (--key or --csr-key) "
            "leave it out",
            EXIT_USAGE,
        )
    if existing is None and out_key is None:
        raise CliError(
            "give --out-key for the new key (or --key to use an existing one)", EXIT_USAGE
        )
    check_new_files([out_cert, out_key], args.force)
    subject = parse_subject(args.subject)
    sans = [parse_san(s) for s in args.san]
    if existing is not None:
        try:
            key = signing_key(load_key(existing))
        except (PairError, ValueError) as exc:
            raise CliError(str(exc)) from exc

    client = EstClient(args.server, args.ca_file, auth, label=args.label)
    cacerts = client.cacerts()
    attributes = client.csrattrs()
    if existing is None:
        key = signing_key(generate_key(_key_type(args.key_type, attributes)))
    if "2.5.29.17" in attributes.requested_extensions and not sans:
        note("the server asks for a subjectAltName extension; consider --san")
    template = CsrTemplate(key, subject, sans, attributes.wants_pop_linking)
    # Resend the identical request on 202/503 (RFC 7030 §4.2.3); only tls-unique linking,
    # which is bound to each connection, forces a new signature.
    csr = template if template.link_pop else template.build(None)
    if serverkeygen:
        generated = with_retries(lambda: client.serverkeygen(csr), args.max_wait, on_wait=_progress)
        issued, extra, key_out = generated.certificate, generated.extra_certificates, None
        assert out_key is not None
        write_file(out_key, key_pem(generated.private_key), KEY_MODE, overwrite=args.force)
    else:
        enrollment = with_retries(lambda: client.enroll(csr), args.max_wait, on_wait=_progress)
        issued, extra, key_out = enrollment.certificate, enrollment.extra_certificates, key
        if issued.public_key() != key.public_key():
            raise BadResponse("the server's certificate is not for the key in the request")
        if out_key is not None:
            write_key(out_key, key_out, overwrite=args.force)
    pool = [*extra, *cacerts.certificates]
    write_file(out_cert, certificates_pem([issued, *chain_for(issued, pool)]), overwrite=args.force)
    say(f"certificate {_describe_issued(issued)}")
    say(f"  written to {out_cert}" + (f", key to {out_key}" if out_key is not None else ""))
    return EXIT_OK


def cmd_enroll(args: argparse.Namespace) -> int:
    return _post_csr_command(args, serverkeygen=False)


def cmd_serverkeygen(args: argparse.Namespace) -> int:
    return _post_csr_command(args, serverkeygen=True)


def _renewer(args: argparse.Namespace, threshold: Threshold | None = None) -> Renewer:
    return Renewer(
        args.server,
        args.ca_file,
        Pair(Path(args.cert), Path(args.key)),
        label=args.label,
        threshold=threshold,
        rekey=args.rekey,
        max_wait=args.max_wait,
        on_wait=_progress,
    )


def cmd_reenroll(args: argparse.Namespace) -> int:
    renewer = _renewer(args)
    result = renewer.reenroll(args.out_cert, args.out_key, args.force)
    if result.recovered:
        note(result.recovered)
    say(f"certificate {_describe_issued(result.certificate)}")
    key_note = "new key" if result.rekeyed else "same key"
    say(f"  written to {result.cert_path} ({key_note}: {result.key_path})")
    if args.out_cert is None:
        pair = renewer.pair
        say(f"  previous pair kept as {pair.backup_cert} and {pair.backup_key}")
    return EXIT_OK


def _report_renewal(result: RenewalResult, pair: Pair, threshold: Threshold, now: datetime) -> None:
    if result.recovered:
        note(result.recovered)
    if result.renewed:
        say(f"renewed {pair.cert}: {_describe_issued(result.certificate)}")
        say(f"  previous pair kept as {pair.backup_cert} and {pair.backup_key}")
        if result.renew_at <= now:
            note(
                f"warning: the new certificate is due for renewal at once ({threshold} is "
                "more than its lifetime); lower --before"
            )
    else:
        say(
            f"{pair.cert} is valid until {_when(result.certificate.not_valid_after_utc)}; "
            f"renewal is due from {_when(result.renew_at)} ({threshold}); nothing to do"
        )


def cmd_renew(args: argparse.Namespace) -> int:
    try:
        threshold = Threshold.parse(args.before)
        interval = parse_duration(args.interval).total_seconds()
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    renewer = _renewer(args, threshold)
    pair = renewer.pair

    def after(result: RenewalResult) -> int:
        _report_renewal(result, pair, threshold, renewer.now())
        if result.renewed and args.exec_command:
            status = run_hook(args.exec_command, pair)
            if status != 0:
                note(
                    f"error: renew: the certificate was renewed, but --exec "
                    f"{args.exec_command!r} failed with status {status}"
                )
                return EXIT_HOOK
        return EXIT_OK

    if not args.watch:
        return after(renewer.renew_if_due())

    def failed(error: Exception, delay: float) -> None:
        note(f"error: renew: {_one_line(_message(error))}; next attempt in {delay:.0f} s")

    watch(renewer, interval, sleep=watch_sleep, on_result=after, on_error=failed)
    return EXIT_OK  # pragma: no cover - watch returns only when bounded (tests)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "cacerts": cmd_cacerts,
    "csrattrs": cmd_csrattrs,
    "enroll": cmd_enroll,
    "reenroll": cmd_reenroll,
    "serverkeygen": cmd_serverkeygen,
    "renew": cmd_renew,
}

HINTS: Sequence[tuple[type[Exception], str, int]] = (
    (GaveUpWaiting, "run the same command later, or allow more time with --max-wait", 6),
    (ServerUnreachable, "check --server and that the EST server is running", 3),
    (
        TlsVerificationFailed,
        "check --ca-file and that the --server host name is in the server's certificate",
        3,
    ),
    (AuthenticationRequired, "give --user and --password-file, or --cert and --key", 4),
    (AuthenticationRefused, "check --user and --password-file", 4),
    (OperationNotOffered, "", 5),
    (RequestRejected, "", 5),
    (ServerError, "try again later; if it persists, tell the server's operator", 6),
    (BadResponse, "check that --server is an EST server", 6),
    (RetryLater, "try again later", 6),
    (EstClientError, "", 1),
)


def _message(error: Exception) -> str:
    if isinstance(error, OperationNotOffered):
        return f"the server does not offer {error.operation} ({error.status}: {error.reason})"
    return str(error)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def explain(command: str, error: Exception) -> tuple[str, int]:
    """The one line printed for a failure, and the exit status."""
    message = _message(error)
    for kind, hint, code in HINTS:
        if isinstance(error, kind):
            if hint and "check" not in message:
                message = f"{message}; {hint}"
            return _one_line(f"{command}: {message}"), code
    return _one_line(f"{command}: {message}"), EXIT_FAILURE


def run(args: argparse.Namespace) -> int:
    """Run one device command; failures become one line on standard error."""
    command: str = args.command
    try:
        return HANDLERS[command](args)
    except CliError as exc:
        note(f"error: {command}: {_one_line(str(exc))}")
        return exc.code
    except (EstClientError, CannotWrite, PairError, ValueError, OSError) as exc:
        line, code = explain(command, exc)
        note(f"error: {line}")
        return code
