"""`estkit cert list|show|revoke`: filters, serial forms, what a record shows, bad input; and
revocation taking effect for TLS client authentication (own CA and third-party anchor CRLs)."""

from __future__ import annotations

import getpass
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.esthttp import enroll_with_cert, make_csr, write_pair
from tests.estserver import EstServer, init_instance, start_server
from tests.pki import make_ca, make_leaf
from tests.revocation import Enrolled, enroll, estkit, failed, fetch_crl, ok


def cert_cli(server: EstServer, *args: str):
    return estkit("cert", args[0], "--dir", str(server.data_dir), *args[1:])


def listed(server: EstServer, *filters: str) -> list[dict]:
    return json.loads(ok(cert_cli(server, "list", *filters, "--json")).stdout)


def db_execute(server: EstServer, sql: str, params: tuple = ()) -> None:
    connection = sqlite3.connect(server.data_dir / "estkit.db", timeout=10)
    try:
        connection.execute(sql, params)
        connection.commit()
    finally:
        connection.close()


def with_colons(serial: str) -> str:
    digits = serial.zfill(len(serial) + len(serial) % 2).upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


# cert list --------------------------------------------------------------------------------------


def test_list_filters_by_label_subject_and_status(est_server, tmp_path):
    tag = uuid.uuid4().hex[:8]
    device = enroll(est_server, tmp_path, f"Dev-{tag}-A", label="iot")
    other = enroll(est_server, tmp_path, f"srv-{tag}-b", label="server")
    gone = enroll(est_server, tmp_path, f"dev-{tag}-c")
    old = enroll(est_server, tmp_path, f"dev-{tag}-d")
    ok(cert_cli(est_server, "revoke", gone.serial, "--reason", "superseded"))
    db_execute(
        est_server,
        "UPDATE certificates SET not_after = ? WHERE serial = ?",
        ((datetime.now(UTC) - timedelta(days=1)).isoformat(sep=" "), old.serial),
    )

    mine = {row["serial"]: row for row in listed(est_server, "--subject", tag.upper())}
    assert set(mine) == {device.serial, other.serial, gone.serial, old.serial}
    assert mine[device.serial]["status"] == "valid"
    assert mine[gone.serial]["status"] == "revoked"
    assert mine[gone.serial]["revocation_reason"] == "superseded"
    assert mine[old.serial]["status"] == "expired"
    assert mine[device.serial]["label"] == "iot"
    assert mine[gone.serial]["label"] == "default"

    def serials(*filters: str) -> set[str]:
        return {row["serial"] for row in listed(est_server, "--subject", tag, *filters)}

    assert serials("--label", "iot") == {device.serial}
    assert serials("--label", "default") == {gone.serial, old.serial}
    assert serials("--status", "revoked") == {gone.serial}
    assert serials("--status", "expired") == {old.serial}
    assert serials("--status", "valid") == {device.serial, other.serial}
    assert serials("--status", "valid", "--label", "server") == {other.serial}
    # Case-insensitive substring of the whole RFC 4514 subject.
    assert {row["serial"] for row in listed(est_server, "--subject", f"cn=dev-{tag}-a")} == {
        device.serial
    }

    table = ok(cert_cli(est_server, "list", "--subject", tag)).stdout.splitlines()
    assert table[0].split() == ["SERIAL", "STATUS", "LABEL", "KIND", "NOT", "AFTER", "SUBJECT"]
    assert any(line.startswith(gone.serial) and " revoked " in line for line in table)


def test_subject_search_takes_like_wildcards_literally(est_server, tmp_path):
    tag = uuid.uuid4().hex[:8]
    plain = enroll(est_server, tmp_path, f"pct-{tag}-x")
    assert listed(est_server, "--subject", f"pct-{tag}%") == []
    assert listed(est_server, "--subject", f"pct_{tag}") == []
    assert [row["serial"] for row in listed(est_server, "--subject", f"pct-{tag}")] == [
        plain.serial
    ]


def test_list_refuses_unknown_status(est_server):
    result = cert_cli(est_server, "list", "--status", "gone")
    assert result.returncode == 2
    assert "valid" in result.stderr and "expired" in result.stderr


LOAD_PROBE = """
import sys
from estkit.cli.main import main
main(sys.argv[1:])
heavy = ("sqlalchemy", "alembic", "pkcs11", "pyasn1_modules", "aiohttp", "argon2", "cryptography")
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


def probe_loaded(*args: str) -> str:
    process = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return process.stdout.splitlines()[-1]


def test_list_starts_without_the_store_and_ca_machinery(est_server, tmp_path):
    """A listing is a whole process: it reads the table with the DBAPI driver alone, and
    of the configuration only the store's table, so neither the profiles nor cryptography
    load (the 200 ms budget of bench/RESULTS.md's large store), while ``cert show`` still
    loads the store's SQLAlchemy layer, so the probe can tell the two apart."""
    holder = enroll(est_server, tmp_path)
    directory = str(est_server.data_dir)
    assert probe_loaded("cert", "list", "--dir", directory, "--json") == "LOADED []"
    shown = probe_loaded("cert", "show", holder.serial, "--dir", directory, "--json")
    assert "sqlalchemy" in shown
    assert "cryptography" in shown


def test_list_without_its_database_file_is_a_one_line_error(tmp_path):
    data_dir = init_instance(tmp_path / "instance")
    (data_dir / "estkit.db").unlink()
    line = failed(estkit("cert", "list", "--dir", str(data_dir)))
    assert line == "estkit: error: cannot read the certificate store: unable to open database file"
    assert not (data_dir / "estkit.db").exists()  # a listing never creates an empty store


def test_list_with_an_unreachable_postgresql_is_a_one_line_error(tmp_path):
    data_dir = init_instance(tmp_path / "instance")
    config = data_dir / "estkit.toml"
    text = config.read_text().replace(
        'url = "sqlite:///estkit.db"', 'url = "postgresql://postgres@127.0.0.1:1/estkit"'
    )
    assert "127.0.0.1:1" in text
    config.write_text(text)
    line = failed(estkit("cert", "list", "--dir", str(data_dir)))
    assert line.startswith("estkit: error: cannot read the certificate store: ")
    assert "127.0.0.1" in line


# cert show --------------------------------------------------------------------------------------


def test_show_has_the_record_and_the_decoded_certificate(est_server, tmp_path):
    holder = enroll(est_server, tmp_path, label="server")
    info = json.loads(ok(cert_cli(est_server, "show", holder.serial, "--json")).stdout)
    assert info["serial"] == holder.serial
    assert info["status"] == "valid"
    assert info["label"] == "server"
    assert info["kind"] == "enroll"
    assert info["requester"].startswith("user:")
    assert info["revoked_at"] is None
    decoded = info["certificate"]
    assert decoded["subject"] == holder.cert.subject.rfc4514_string()
    assert decoded["issuer"] == holder.cert.issuer.rfc4514_string()
    assert decoded["key"] == "EC secp256r1"
    assert set(decoded["extended_key_usage"]) == {"serverAuth", "clientAuth"}
    assert decoded["sha256_fingerprint"] == holder.cert.fingerprint(hashes.SHA256()).hex()
    assert decoded["not_after"] == holder.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")

    text = ok(cert_cli(est_server, "show", holder.serial)).stdout
    for field in ("subject:", "SANs:", "issuer:", "not after:", "key:", "status:", "requester:"):
        assert field in text, field
    assert "revocation reason:   -" in text


def test_show_links_renewals_both_ways(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    _, der = make_csr(holder.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    reply = enroll_with_cert(est_server, "simplereenroll", der, holder.cert_path, holder.key_path)
    assert reply.status == 200, reply.text
    [renewed] = reply.certificates()
    new_serial = format(renewed.serial_number, "x")
    old = json.loads(ok(cert_cli(est_server, "show", holder.serial, "--json")).stdout)
    new = json.loads(ok(cert_cli(est_server, "show", new_serial, "--json")).stdout)
    assert old["renewed_by"] == [new_serial]
    assert new["replaces_serial"] == holder.serial
    assert new["kind"] == "rekey"


@pytest.fixture(scope="module")
def serial_holder(est_server, tmp_path_factory) -> Enrolled:
    return enroll(est_server, tmp_path_factory.mktemp("serial-forms"))


@pytest.mark.parametrize(
    "form",
    [
        lambda s: s.upper(),
        with_colons,
        lambda s: with_colons(s).lower(),
        lambda s: "0x" + s,
        lambda s: "0000" + s,
        lambda s: f"  {s}  ",
    ],
    ids=["upper", "colons", "lower-colons", "0x", "leading-zeros", "spaces"],
)
def test_serial_forms(est_server, serial_holder, form):
    holder: Enrolled = serial_holder
    info = json.loads(ok(cert_cli(est_server, "show", form(holder.serial), "--json")).stdout)
    assert info["serial"] == holder.serial


@pytest.mark.parametrize("bad", ["xyz", "12:3g", "", ":", "1" * 41])
def test_show_refuses_what_is_not_a_serial(est_server, bad):
    message = failed(cert_cli(est_server, "show", bad))
    assert "serial number" in message


def test_show_unknown_serial(est_server):
    message = failed(cert_cli(est_server, "show", "ab:cd:ef"))
    assert message == "estkit: error: no certificate with serial abcdef in the store"


# cert revoke ------------------------------------------------------------------------------------


def test_revoke_records_time_reason_and_operator(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    before = datetime.now(UTC).replace(microsecond=0)
    result = ok(
        cert_cli(est_server, "revoke", with_colons(holder.serial), "--reason", "KEYcompromise")
    )
    assert f"certificate {holder.serial}" in result.stdout
    assert "reason keyCompromise" in result.stdout
    info = json.loads(ok(cert_cli(est_server, "show", holder.serial, "--json")).stdout)
    assert info["status"] == "revoked"
    assert info["revocation_reason"] == "keyCompromise"
    revoked_at = datetime.fromisoformat(info["revoked_at"].replace("Z", "+00:00"))
    assert before <= revoked_at <= datetime.now(UTC)

    store = est_server.store()
    try:
        events = [e for e in store.audit_events() if e.subject == holder.serial]
    finally:
        store.close()
    [event] = [e for e in events if e.action == "certificate.revoke"]
    assert event.actor == f"operator:{getpass.getuser()}"
    assert event.detail["reason"] == "keyCompromise"
    assert event.detail["subject"] == holder.cert.subject.rfc4514_string()


def test_revoking_twice_says_when_and_why(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    ok(cert_cli(est_server, "revoke", holder.serial, "--reason", "superseded"))
    first = json.loads(ok(cert_cli(est_server, "show", holder.serial, "--json")).stdout)
    message = failed(cert_cli(est_server, "revoke", holder.serial, "--reason", "keyCompromise"))
    assert f"already revoked at {first['revoked_at']}" in message
    assert "reason: superseded" in message
    # The first revocation stands unchanged.
    again = json.loads(ok(cert_cli(est_server, "show", holder.serial, "--json")).stdout)
    assert again["revocation_reason"] == "superseded"


def test_revoke_unknown_serial(est_server):
    message = failed(cert_cli(est_server, "revoke", "0badc0de", "--reason", "superseded"))
    assert message == "estkit: error: no certificate with serial badc0de in the store"


@pytest.mark.parametrize("reason", ["compromised", "remove_from_crl", ""])
def test_revoke_unknown_reason_lists_the_valid_ones(est_server, tmp_path, reason):
    message = failed(cert_cli(est_server, "revoke", "abc", "--reason", reason))
    assert "choose one of unspecified, keyCompromise, cACompromise" in message
    assert "removeFromCRL" not in message.split("choose one of")[1]


def test_remove_from_crl_is_not_a_revocation_reason(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    message = failed(cert_cli(est_server, "revoke", holder.serial, "--reason", "removeFromCRL"))
    assert "delta CRLs" in message
    info = json.loads(ok(cert_cli(est_server, "show", holder.serial, "--json")).stdout)
    assert info["status"] == "valid"


def test_revoke_without_reason_is_a_usage_error(est_server):
    result = cert_cli(est_server, "revoke", "abc")
    assert result.returncode == 2
    assert "--reason" in result.stderr


def test_revoked_certificate_cannot_authenticate_initial_enrollment(est_server, tmp_path):
    holder = enroll(est_server, tmp_path)
    _, der = make_csr(f"next-{uuid.uuid4().hex[:6]}")

    def attempt():
        return enroll_with_cert(
            est_server, "simpleenroll", der, holder.cert_path, holder.key_path, "mtls"
        )

    assert attempt().status == 200
    ok(cert_cli(est_server, "revoke", holder.serial, "--reason", "keyCompromise"))
    reply = attempt()
    assert reply.status == 403, reply.text
    assert "certificate revoked" in reply.text


def test_revoke_when_the_ca_key_is_unreadable_still_revokes(tmp_path):
    """The revocation stands, the command says the CRL will come from the server, and the
    running server publishes it."""
    directory = init_instance(tmp_path / "est-data")
    server = start_server(directory)
    try:
        holder = enroll(server, tmp_path)
        key_file = directory / "ca" / "issuing.key"
        key_file.chmod(0o640)  # refused: CA keys must be 0600
        result = cert_cli(server, "revoke", holder.serial, "--reason", "keyCompromise")
        key_file.chmod(0o600)
        assert result.returncode == 0, result.stderr
        assert "revoked at" in result.stdout
        assert "warning: the CRL was not re-signed here" in result.stderr
        assert "within a second" in result.stderr
        for _ in range(100):
            if fetch_crl(holder.cert).get_revoked_certificate_by_serial_number(
                holder.cert.serial_number
            ):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server did not publish the revocation")
    finally:
        server.stop()


# Third-party anchors with a CRL -----------------------------------------------------------------


def make_crl(ca_key, ca_cert: x509.Certificate, revoked: list[x509.Certificate], number: int = 1):
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - timedelta(minutes=1))
        .next_update(now + timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - timedelta(minutes=1))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


ANCHOR_TOML = """
[anchors.idevid]
certificates = "idevid.pem"
crl = "idevid.crl"

[labels.mfg]
allow_anchors = ["idevid"]
"""


class AnchorInstance:
    def __init__(self, directory: Path, ca_key, ca_cert: x509.Certificate) -> None:
        self.directory = directory
        self.ca_key = ca_key
        self.ca_cert = ca_cert
        self.server: EstServer | None = None

    def write_crl(self, revoked: list[x509.Certificate], number: int, pem: bool = False) -> None:
        crl = make_crl(self.ca_key, self.ca_cert, revoked, number)
        encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
        # Replace in one rename, as an operator's deployment would.
        temporary = self.directory / "idevid.crl.new"
        temporary.write_bytes(crl.public_bytes(encoding))
        temporary.replace(self.directory / "idevid.crl")


def anchor_instance(tmp_path: Path, revoked_from_start: int = 0) -> tuple[AnchorInstance, list]:
    directory = init_instance(tmp_path / "est-data", ANCHOR_TOML)
    ca_key, ca_cert = make_ca("Example Maker IDevID CA")
    (directory / "idevid.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaves = []
    for index in range(3):
        key, cert = make_leaf(ca_key, ca_cert, f"maker-device-{index}")
        cert_path, key_path = write_pair(tmp_path, f"maker-device-{index}", key, cert)
        leaves.append((cert, cert_path, key_path))
    instance = AnchorInstance(directory, ca_key, ca_cert)
    instance.write_crl([leaf[0] for leaf in leaves[:revoked_from_start]], 1)
    return instance, leaves


def enroll_with_idevid(server: EstServer, leaf) -> object:
    cert, cert_path, key_path = leaf
    _, der = make_csr(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    return enroll_with_cert(server, "simpleenroll", der, cert_path, key_path, "mfg")


def test_anchor_crl_refuses_listed_certificates_and_follows_file_changes(tmp_path):
    instance, leaves = anchor_instance(tmp_path, revoked_from_start=1)
    server = start_server(instance.directory)
    try:
        refused = enroll_with_idevid(server, leaves[0])
        assert refused.status == 403, refused.text
        assert "certificate revoked" in refused.text
        assert "anchor 'idevid'" in refused.text
        assert enroll_with_idevid(server, leaves[1]).status == 200

        # A new CRL file (PEM this time) takes effect without a restart.
        instance.write_crl([leaves[0][0], leaves[1][0]], 2, pem=True)
        again = enroll_with_idevid(server, leaves[1])
        assert again.status == 403, again.text
        assert "certificate revoked" in again.text
        assert enroll_with_idevid(server, leaves[2]).status == 200

        # An unusable file refuses the anchor's certificates instead of letting them through.
        (instance.directory / "idevid.crl").write_bytes(b"not a CRL")
        broken = enroll_with_idevid(server, leaves[2])
        assert broken.status == 503, broken.text
        assert "cannot be checked" in broken.text
        # ... and a good one restores service.
        instance.write_crl([leaves[0][0]], 3)
        assert enroll_with_idevid(server, leaves[2]).status == 200
    finally:
        server.stop()
    log = server.log()
    assert "is not a CRL" in log
    assert "Traceback" not in log


def test_anchor_crl_signed_by_another_key_stops_the_start(tmp_path):
    instance, _ = anchor_instance(tmp_path)
    impostor_key, impostor = make_ca("Example Maker IDevID CA")  # same name, other key
    crl = make_crl(impostor_key, impostor, [], 1)
    (instance.directory / "idevid.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    message = failed(estkit("serve", "--dir", str(instance.directory), "--port", "0"))
    assert "anchors.idevid.crl" in message
    assert "does not verify" in message


def test_anchor_crl_from_a_ca_without_crl_sign_stops_the_start(tmp_path):
    directory = init_instance(tmp_path / "est-data", ANCHOR_TOML)
    ca_key, ca_cert = make_ca("No CRL Signing CA", crl_sign=False)
    (directory / "idevid.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    crl = make_crl(ca_key, ca_cert, [], 1)
    (directory / "idevid.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    message = failed(estkit("serve", "--dir", str(directory), "--port", "0"))
    assert "lacks cRLSign" in message


def test_anchor_crl_file_must_exist_and_keys_are_checked(tmp_path):
    instance, _ = anchor_instance(tmp_path)
    (instance.directory / "idevid.crl").unlink()
    message = failed(estkit("serve", "--dir", str(instance.directory), "--port", "0"))
    assert "anchors.idevid.crl" in message and "not found" in message

    config = instance.directory / "estkit.toml"
    config.write_text(config.read_text().replace('crl = "idevid.crl"', 'crls = "idevid.crl"'))
    message = failed(estkit("serve", "--dir", str(instance.directory), "--port", "0"))
    assert "anchors.idevid.crls: unknown setting" in message
