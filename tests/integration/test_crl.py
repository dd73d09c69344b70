"""CRLs (RFC 5280 §5): served at the CDP URL of issued certificates, checked with openssl,
current after `estkit cert revoke` and after revocations by other processes, re-signed before
nextUpdate, and written by `estkit crl`."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.authority.revocation import revoke
from tests.esthttp import b64, make_csr, request
from tests.estserver import EstServer, init_instance, start_server
from tests.revocation import (
    Enrolled,
    chain_file,
    crl_number,
    enroll,
    estkit,
    failed,
    fetch_crl,
    http_get,
    ok,
    openssl,
    openssl_serial,
)

CRL_TOML_DEFAULTS = 'validity = "7d"\nrefresh_before = "1d"'


def revoke_cli(server: EstServer, serial: str, reason: str) -> subprocess.CompletedProcess[str]:
    return ok(estkit("cert", "revoke", "--dir", str(server.data_dir), serial, "--reason", reason))


def wait_for(predicate, timeout: float = 10.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # a CRL is falsy when it lists nothing: test against None
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(step)


def openssl_verify_with_crl(server: EstServer, directory: Path, holder: Enrolled, crl_pem: Path):
    return openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        str(server.ca_file),
        "-untrusted",
        str(server.data_dir / "ca" / "issuing.pem"),
        "-CRLfile",
        str(crl_pem),
        str(holder.cert_path),
    )


def crl_der_to_pem(der: bytes, directory: Path, name: str = "crl.pem") -> Path:
    der_path = directory / (name + ".der")
    der_path.write_bytes(der)
    pem = directory / name
    ok_ssl = openssl("crl", "-inform", "DER", "-in", str(der_path), "-out", str(pem))
    assert ok_ssl.returncode == 0, ok_ssl.stderr
    return pem


# Serving ----------------------------------------------------------------------------------------


def test_crl_at_the_cdp_url_verifies_with_openssl(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    crl = fetch_crl(holder.cert)
    assert crl.issuer == holder.cert.issuer
    der_path = tmp_path / "served.crl"
    der_path.write_bytes(crl.public_bytes(Encoding.DER))
    checked = openssl(
        "crl",
        "-inform",
        "DER",
        "-in",
        str(der_path),
        "-CAfile",
        str(chain_file(est_server, tmp_path)),
        "-verify",
        "-noout",
    )
    assert checked.returncode == 0, checked.stderr
    assert "verify OK" in checked.stderr + checked.stdout

    # RFC 5280 §5: v2, cRLNumber and an AKI naming the issuing CA's key, nextUpdate present.
    text = openssl("crl", "-inform", "DER", "-in", str(der_path), "-text", "-noout").stdout
    assert "Version 2" in text
    assert "X509v3 CRL Number" in text
    assert "X509v3 Authority Key Identifier" in text
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    cert_aki = holder.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == cert_aki.key_identifier
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)


def test_crl_url_answers_head_and_refuses_other_names(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    path = urlsplit(
        holder.cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        .value[0]
        .full_name[0]
        .value
    ).path
    get = http_get(est_server, path)
    head = http_get(est_server, path, "HEAD")
    assert head.status == 200
    assert head.headers["Content-Type"] == "application/pkix-crl"
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    root_ski = (
        x509.load_pem_x509_certificate(est_server.ca_file.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        .value.digest.hex()
    )
    for name in ("deadbeef", root_ski, path.rsplit("/", 1)[1][:-4].upper(), "%0aforged"):
        reply = http_get(est_server, f"/crl/{name}.crl")
        assert reply.status == 404, (name, reply.status)
        assert reply.headers["Content-Type"].startswith("text/plain")
        assert "no CRL for a CA named" in reply.text
    assert http_get(est_server, path, "POST", b"x").status == 405


# Revocation through the operator command --------------------------------------------------------


def test_revoke_publishes_a_new_crl_at_once(est_server, tmp_path):
    revoked, kept = enroll(est_server, tmp_path), enroll(est_server, tmp_path)
    before = crl_number(fetch_crl(kept.cert))

    result = revoke_cli(est_server, revoked.serial, "keyCompromise")
    assert "revoked at" in result.stdout
    published = re.search(r"CRL number (\d+) published", result.stdout)
    assert published, result.stdout

    # No waiting: the command signed and stored the CRL the server serves.
    crl = fetch_crl(kept.cert)
    assert crl_number(crl) == int(published.group(1)) > before
    entry = crl.get_revoked_certificate_by_serial_number(revoked.cert.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(kept.cert.serial_number) is None

    pem = crl_der_to_pem(crl.public_bytes(Encoding.DER), tmp_path)
    text = openssl("crl", "-in", str(pem), "-text", "-noout").stdout
    assert f"Serial Number: {openssl_serial(revoked.cert)}" in text
    assert "Key Compromise" in text
    assert re.search(rf"CRL Number:\s*\n\s*{crl_number(crl)}\b", text)

    # openssl's own revocation check with the served CRL.
    refused = openssl_verify_with_crl(est_server, tmp_path, revoked, pem)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl_verify_with_crl(est_server, tmp_path, kept, pem)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert f"{kept.cert_path}: OK" in accepted.stdout


def test_crl_number_increments_with_each_revocation(est_server, tmp_path):
    first, second = enroll(est_server, tmp_path), enroll(est_server, tmp_path)
    revoke_cli(est_server, first.serial, "superseded")
    after_first = fetch_crl(first.cert)
    revoke_cli(est_server, second.serial, "cessationOfOperation")
    after_second = fetch_crl(first.cert)
    assert crl_number(after_second) > crl_number(after_first)
    for holder, flag in (
        (first, x509.ReasonFlags.superseded),
        (second, x509.ReasonFlags.cessation_of_operation),
    ):
        entry = after_second.get_revoked_certificate_by_serial_number(holder.cert.serial_number)
        assert entry is not None
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == flag


def test_unspecified_reason_is_listed_without_a_reason_code(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    revoke_cli(est_server, holder.serial, "unspecified")
    entry = fetch_crl(holder.cert).get_revoked_certificate_by_serial_number(
        holder.cert.serial_number
    )
    assert entry is not None
    # RFC 5280 §5.3.1: the extension SHOULD be absent rather than say unspecified (0).
    with pytest.raises(x509.ExtensionNotFound):
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_revocation_by_another_process_is_published_by_the_server(est_server, tmp_path):
    """A process that revokes without signing (no CA key) still gets a current CRL: the
    server's refresh task sees the store's revocation count move within a second."""
    holder = enroll(est_server, tmp_path)
    before = crl_number(fetch_crl(holder.cert))
    store = est_server.store()
    try:
        revoke(store, holder.serial, "affiliationChanged", "test", datetime.now(UTC))
    finally:
        store.close()
    started = time.monotonic()

    def listed():
        crl = fetch_crl(holder.cert)
        return (
            crl if crl.get_revoked_certificate_by_serial_number(holder.cert.serial_number) else None
        )

    crl = wait_for(listed, timeout=10, step=0.1)
    assert crl is not None, "the server never published the revocation"
    assert time.monotonic() - started < 5  # polled every second; generous for a busy machine
    assert crl_number(crl) > before


def test_reenroll_with_a_certificate_revoked_by_the_cli_is_403(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    revoke_cli(est_server, holder.serial, "privilegeWithdrawn")
    _, der = make_csr(holder.cert.subject.rfc4514_string()[3:], key=holder.key)
    reply = request(
        est_server.est_url() + "/simplereenroll",
        est_server.ca_file,
        "POST",
        b64(der),
        {"Content-Type": "application/pkcs10"},
        cert=holder.cert_path,
        key=holder.key_path,
    )
    assert reply.status == 403, reply.text
    assert "certificate revoked" in reply.text


# Scheduled refresh ------------------------------------------------------------------------------


def set_crl_settings(directory: Path, validity: str, refresh_before: str) -> None:
    config = directory / "estkit.toml"
    text = config.read_text()
    assert CRL_TOML_DEFAULTS in text
    config.write_text(
        text.replace(
            CRL_TOML_DEFAULTS, f'validity = "{validity}"\nrefresh_before = "{refresh_before}"'
        )
    )


def test_crl_is_re_signed_before_next_update(tmp_path):
    directory = init_instance(tmp_path / "est-data")
    set_crl_settings(directory, "1m", "57s")  # due 3 seconds after each signing
    server = start_server(directory)
    try:
        holder = enroll(server, tmp_path)
        first = fetch_crl(holder.cert)

        def newer():
            crl = fetch_crl(holder.cert)
            return crl if crl_number(crl) > crl_number(first) else None

        later = wait_for(newer, timeout=15, step=0.5)
        assert later is not None, "no CRL was signed before nextUpdate approached"
        assert later.last_update_utc > first.last_update_utc
        assert later.next_update_utc - later.last_update_utc == timedelta(minutes=1)
        assert later.next_update_utc - datetime.now(UTC) > timedelta(seconds=50)
    finally:
        server.stop()
    log = server.log()
    assert "published CRL number" in log
    assert "Traceback" not in log


# estkit crl --------------------------------------------------------------------------------------


def test_crl_command_writes_der_and_pem(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    revoke_cli(est_server, holder.serial, "keyCompromise")
    der_file, pem_file = tmp_path / "out.crl", tmp_path / "out.pem"
    result = ok(estkit("crl", "--dir", str(est_server.data_dir), "--out", str(der_file)))
    assert f"written to {der_file}" in result.stdout
    ok(estkit("crl", "--dir", str(est_server.data_dir), "--out", str(pem_file), "--pem"))
    der_crl = x509.load_der_x509_crl(der_file.read_bytes())
    pem_crl = x509.load_pem_x509_crl(pem_file.read_bytes())
    served = fetch_crl(holder.cert)
    assert crl_number(der_crl) == crl_number(pem_crl) == crl_number(served)
    assert der_crl.get_revoked_certificate_by_serial_number(holder.cert.serial_number)
    refused = openssl_verify_with_crl(est_server, tmp_path, holder, pem_file)
    assert "certificate revoked" in refused.stdout + refused.stderr
    # Re-running replaces the file (a CRL is meant to be refreshed).
    ok(estkit("crl", "--dir", str(est_server.data_dir), "--out", str(der_file)))


def test_crl_command_to_a_missing_directory_is_one_line(est_server, tmp_path):
    message = failed(
        estkit("crl", "--dir", str(est_server.data_dir), "--out", str(tmp_path / "no" / "x.crl"))
    )
    assert "cannot write" in message


def test_bad_crl_settings_are_refused(tmp_path):
    for validity, refresh_before, key in (
        ("1d", "1d", "crl.refresh_before"),
        ("10s", "5s", "crl.validity"),
        ("soon", "1d", "crl.validity"),
    ):
        directory = init_instance(tmp_path / f"d-{validity}-{refresh_before}")
        set_crl_settings(directory, validity, refresh_before)
        message = failed(estkit("serve", "--dir", str(directory), "--port", "0"))
        assert key in message, message
