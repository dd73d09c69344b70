"""Interop: the Bouncy Castle EST client (org.bouncycastle.est) against estkit's server.

A small Java driver (tests/interop/bc/EstDriver.java) wraps BC's ESTService; it is compiled
once per module into pytest's tmp dir and run once per operation.  Needs a JDK and the Debian
packages of Bouncy Castle (bcprov, bcutil, bcpkix for EST, bctls for the BCJSSE provider that
exposes tls-unique).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.wire.csrattrs import decode_csrattrs

pytestmark = pytest.mark.interop

PACKAGES = "default-jdk-headless libbcpkix-java libbctls-java"
JAVA_DIR = Path(os.environ.get("ESTKIT_BC_JAVA_DIR", "/usr/share/java"))
JARS = ("bcprov.jar", "bcutil.jar", "bcpkix.jar", "bctls.jar")
DRIVER_SRC = Path(__file__).parent / "bc" / "EstDriver.java"

CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"
POP_TOML = "[labels.pop]\nrequire_pop = true\n"
JAVA_TIMEOUT = 120


@dataclass
class DriverRun:
    """One EstDriver invocation: exit code and its output lines."""

    rc: int
    out: list[str]
    err: str

    def records(self, tag: str) -> list[str]:
        """The rest of every stdout line starting with ``tag``."""
        return [line[len(tag) + 1 :] for line in self.out if line.split(" ", 1)[0] == tag]

    def one(self, tag: str) -> str:
        found = self.records(tag)
        assert len(found) == 1, f"expected one {tag} line, got {self.out}\nstderr:\n{self.err}"
        return found[0]

    @property
    def tls_protocols(self) -> list[str]:
        """Negotiated protocol of each TLS connection BC made, in order."""
        return [record.split()[0] for record in self.records("TLS")]


class BcDriver:
    def __init__(self, classpath: str, java: str) -> None:
        self.classpath = classpath
        self.java = java

    def __call__(
        self,
        server: Any,
        op: str,
        *op_args: str,
        label: str | None = None,
        tls: str | None = None,
        jsse: str | None = None,
        expect_rc: int = 0,
    ) -> DriverRun:
        cmd = [
            self.java, "-cp", self.classpath, "EstDriver",
            "--server", server.url, "--trust", str(server.ca_file),
        ]  # fmt: skip
        if label is not None:
            cmd += ["--label", label]
        if tls is not None:
            cmd += ["--tls", tls]
        if jsse is not None:
            cmd += ["--jsse", jsse]
        cmd += [op, *op_args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=JAVA_TIMEOUT)
        run = DriverRun(proc.returncode, proc.stdout.splitlines(), proc.stderr)
        hint = ""
        if "Stream closed before limit fully read" in proc.stderr:
            hint = (
                "\nhint: BC's HttpAuth closes a 401 response without reading its body and "
                "fails unless that body is empty (Content-Length: 0)"
            )
        assert run.rc == expect_rc, (
            f"EstDriver {op} exited {run.rc}, expected {expect_rc}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}{hint}"
        )
        return run


@pytest.fixture(scope="module")
def bc(tmp_path_factory: pytest.TempPathFactory) -> BcDriver:
    javac, java = shutil.which("javac"), shutil.which("java")
    missing = [str(JAVA_DIR / jar) for jar in JARS if not (JAVA_DIR / jar).is_file()]
    if javac is None or java is None or missing:
        what = "javac/java" if javac is None or java is None else ", ".join(missing)
        pytest.skip(f"Bouncy Castle interop needs {what} (Debian: apt install {PACKAGES})")
    classes = tmp_path_factory.mktemp("bc-driver")
    jar_path = os.pathsep.join(str(JAVA_DIR / jar) for jar in JARS)
    proc = subprocess.run(
        [javac, "-nowarn", "-encoding", "UTF-8", "-cp", jar_path, "-d", str(classes),
         str(DRIVER_SRC)],
        capture_output=True, text=True, timeout=JAVA_TIMEOUT,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"javac EstDriver.java failed:\n{proc.stdout}\n{proc.stderr}")
    return BcDriver(os.pathsep.join([str(classes), jar_path]), java)


@pytest.fixture
def pop_server(est_server: Any, request: pytest.FixtureRequest) -> Any:
    """A server with a `require_pop = true` label named `pop`: the shared one if it has it."""
    if "[labels.pop]" in (Path(est_server.data_dir) / "estkit.toml").read_text():
        return est_server
    return request.getfixturevalue("est_server_factory")(POP_TOML)


# ---------------------------------------------------------------- helpers


def _fetch(server: Any, label: str | None, op: str) -> tuple[int, bytes]:
    """GET an EST resource with Python's own TLS stack, for cross-checking what BC parsed."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    url = server.est_url(label).rstrip("/") + "/" + op
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ca_certs(server: Any) -> list[x509.Certificate]:
    status, body = _fetch(server, None, "cacerts")
    assert status == 200
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


def _root(server: Any) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(server.ca_file).read_bytes())


def _assert_chains(cert: x509.Certificate, server: Any) -> None:
    """The cert was signed by one of the server's CA certs, which chains to the trust anchor."""
    root = _root(server)
    issuers = [ca for ca in _ca_certs(server) if ca.subject == cert.issuer]
    assert issuers, f"no CA cert from /cacerts has subject {cert.issuer.rfc4514_string()}"
    issuer = issuers[0]
    cert.verify_directly_issued_by(issuer)
    if issuer != root:
        issuer.verify_directly_issued_by(root)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _check_issued(record: str, cert_file: Path, server: Any) -> x509.Certificate:
    """``<serial hex> <subject>`` printed by the driver matches the first cert it wrote."""
    certs = x509.load_pem_x509_certificates(cert_file.read_bytes())
    cert = certs[0]
    serial, _, subject = record.partition(" ")
    assert int(serial, 16) == cert.serial_number
    assert subject == cert.subject.rfc4514_string()
    _assert_chains(cert, server)
    return cert


def _enroll(
    bc: BcDriver, server: Any, tmp_path: Path, cn: str, **kw: Any
) -> tuple[DriverRun, Path, Path]:
    password = server.add_user(cn)
    cert_file, key_file = tmp_path / f"{cn}.pem", tmp_path / f"{cn}.key"
    pop = ["--pop"] if kw.pop("pop", False) else []
    run = bc(
        server, "enroll", "--user", cn, "--password", password,
        "--subject", f"CN={cn}", "--realm", "estkit", *pop,
        "--out-cert", str(cert_file), "--out-key", str(key_file), **kw,
    )  # fmt: skip
    return run, cert_file, key_file


# ---------------------------------------------------------------- tests


def test_cacerts(bc: BcDriver, est_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "cacerts.pem"
    run = bc(est_server, "cacerts", "--out", str(out))
    count = int(run.one("CERTS"))
    certs = x509.load_pem_x509_certificates(out.read_bytes())
    assert count == len(certs) >= 2
    root = _root(est_server)
    assert root in certs, "the trust anchor is not among the certificates BC parsed"
    issuing = [c for c in certs if c != root and c.issuer == root.subject]
    assert issuing, "no issuing CA below the root in /cacerts"
    for ca in issuing:
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        ca.verify_directly_issued_by(root)
    assert len(run.tls_protocols) == 1


@pytest.mark.parametrize("label", [None, "pop"])
def test_csrattrs(bc: BcDriver, pop_server: Any, label: str | None) -> None:
    run = bc(pop_server, "csrattrs", label=label)
    status, body = _fetch(pop_server, label, "csrattrs")
    if status in (204, 404):
        expected: set[str] = set()
    else:
        assert status == 200
        items = decode_csrattrs(base64.b64decode(body))
        expected = {item if isinstance(item, str) else item.oid for item in items}
    got = set(run.records("ATTR"))
    if not expected:
        assert run.out[-1] == "NONE"
    assert got == expected, f"BC parsed {sorted(got)}, the server sent {sorted(expected)}"
    if label == "pop":
        assert CHALLENGE_PASSWORD in got
    else:
        assert CHALLENGE_PASSWORD not in got


def test_enroll_basic_after_401(bc: BcDriver, est_server: Any, tmp_path: Path) -> None:
    run, cert_file, key_file = _enroll(bc, est_server, tmp_path, "bc-enroll-1")
    # BC sends no credentials until challenged: one connection gets the 401, a second one
    # carries the Authorization header.
    assert len(run.tls_protocols) == 2
    cert = _check_issued(run.one("ENROLLED"), cert_file, est_server)
    assert _cn(cert) == "bc-enroll-1"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert cert.public_key() == key.public_key()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


def test_enroll_wrong_password(bc: BcDriver, est_server: Any, tmp_path: Path) -> None:
    est_server.add_user("bc-wrong")
    run = bc(
        est_server, "enroll", "--user", "bc-wrong", "--password", "not-the-password",
        "--subject", "CN=bc-wrong", "--out-cert", str(tmp_path / "c.pem"),
        "--out-key", str(tmp_path / "k.pem"), expect_rc=2,
    )  # fmt: skip
    assert run.one("ERROR").startswith("401 ")
    assert not (tmp_path / "c.pem").exists()


@pytest.mark.parametrize("jsse", ["sun", "bc"])
def test_reenroll(bc: BcDriver, est_server: Any, tmp_path: Path, jsse: str) -> None:
    cn = f"bc-reenroll-{jsse}"
    enrolled, cert_file, key_file = _enroll(bc, est_server, tmp_path, cn)
    old = _check_issued(enrolled.one("ENROLLED"), cert_file, est_server)
    new_file = tmp_path / "renewed.pem"
    run = bc(
        est_server, "reenroll", "--cert", str(cert_file), "--key", str(key_file),
        "--out-cert", str(new_file), jsse=jsse,
    )  # fmt: skip
    assert len(run.tls_protocols) == 1  # TLS client authentication, no 401 round trip
    new = _check_issued(run.one("REENROLLED"), new_file, est_server)
    assert new.serial_number != old.serial_number
    assert new.subject == old.subject
    assert _cn(new) == cn
    assert new.public_key() == old.public_key()


def test_pop_enroll_tls12(bc: BcDriver, pop_server: Any, tmp_path: Path) -> None:
    run, cert_file, _ = _enroll(
        bc, pop_server, tmp_path, "bc-pop-1", pop=True, label="pop", tls="1.2"
    )
    assert run.tls_protocols == ["TLSv1.2", "TLSv1.2"]
    cert = _check_issued(run.one("ENROLLED"), cert_file, pop_server)
    assert _cn(cert) == "bc-pop-1"


def test_pop_label_rejects_unlinked_csr(bc: BcDriver, pop_server: Any, tmp_path: Path) -> None:
    password = pop_server.add_user("bc-nopop")
    run = bc(
        pop_server, "enroll", "--user", "bc-nopop", "--password", password,
        "--subject", "CN=bc-nopop", "--out-cert", str(tmp_path / "c.pem"),
        "--out-key", str(tmp_path / "k.pem"), label="pop", tls="1.2", expect_rc=2,
    )  # fmt: skip
    status, _, reason = run.one("ERROR").partition(" ")
    assert status == "400"
    assert re.search(r"challengePassword|tls-unique|link", reason, re.IGNORECASE), reason
    assert not (tmp_path / "c.pem").exists()


SERVERKEYGEN_TOML = '[labels.rsakg]\nkey_types = ["rsa"]\nserverkeygen_key_type = "rsa-2048"\n'


@pytest.mark.parametrize("label", [None, "rsakg"])
def test_serverkeygen(bc: BcDriver, est_server_factory: Any, tmp_path: Path, label) -> None:
    """BC's simpleEnrollWithServersideCreation reads the multipart answer and the PKCS#8 key."""
    server = est_server_factory(SERVERKEYGEN_TOML)
    cn = f"bc-keygen-{label or 'default'}"
    password = server.add_user(cn)
    cert_file, key_file = tmp_path / "kg.pem", tmp_path / "kg.key"
    run = bc(
        server, "serverkeygen", "--user", cn, "--password", password,
        "--subject", f"CN={cn}", "--realm", "estkit",
        "--out-cert", str(cert_file), "--out-key", str(key_file), label=label,
    )  # fmt: skip
    record = run.one("SERVERKEYGEN")
    serial_subject, _, algorithm = record.rpartition(" ")
    cert = _check_issued(serial_subject, cert_file, server)
    assert _cn(cert) == cn
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    expected = "1.2.840.113549.1.1.1" if label == "rsakg" else "1.2.840.10045.2.1"
    assert algorithm == expected  # rsaEncryption / id-ecPublicKey: BC parsed true PKCS#8
