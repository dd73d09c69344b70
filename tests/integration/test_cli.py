"""The operator command line: estkit init, user add/list/remove, and serve's start-up checks."""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from estkit.config import ConfigError, load_config
from estkit.config_file import load_store_settings
from tests.esthttp import Reply, enroll_basic, make_csr
from tests.estserver import EstServer, run_estkit, start_server

ESTKIT = [sys.executable, "-m", "estkit"]
SECRET_LINE = re.compile(
    r"user (\S+) added; (password|one-time bootstrap secret) \(shown only now\): (\S+)$"
)

# --- helpers -------------------------------------------------------------------------------


def estkit(
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the estkit command; never raises on a non-zero exit."""
    base_env = {k: v for k, v in os.environ.items() if k != "ESTKIT_DIR"}
    return subprocess.run(
        [*ESTKIT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=cwd,
        env={**base_env, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_pem(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def enroll(server: EstServer, user: str, password: str, label: str | None = None) -> Reply:
    _, der = make_csr(user)
    return enroll_basic(server, der, label, user, password)


def user_add(directory: Path, *args: str, stdin: str | None = None) -> str:
    """`estkit user add`; returns the secret it printed (or '' with --password-stdin)."""
    result = ok(estkit("user", "add", "--dir", str(directory), *args, stdin=stdin))
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    match = SECRET_LINE.match(lines[0])
    return match.group(3) if match else ""


def user_rows(directory: Path) -> dict[str, sqlite3.Row]:
    connection = sqlite3.connect(directory / "estkit.db")
    connection.row_factory = sqlite3.Row
    try:
        return {row["name"]: row for row in connection.execute("SELECT * FROM users")}
    finally:
        connection.close()


def issued_to(directory: Path, user: str) -> int:
    """How many certificates the store records for a Basic user."""
    connection = sqlite3.connect(directory / "estkit.db")
    try:
        query = "SELECT count(*) FROM certificates WHERE requester = ?"
        return int(connection.execute(query, (f"user:{user}",)).fetchone()[0])
    finally:
        connection.close()


def listing(directory: Path) -> dict[str, list[str]]:
    """`estkit user list` parsed into {name: [labels, once, state, created]}."""
    result = ok(estkit("user", "list", "--dir", str(directory)))
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "LABELS", "ONCE", "STATE", "CREATED"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


# --- estkit init ----------------------------------------------------------------------------


def test_init_creates_a_complete_instance(tmp_path):
    directory = tmp_path / "inst"
    result = ok(estkit("init", "--dir", str(directory)))
    assert str(directory) in result.stdout

    root = load_pem(directory / "ca" / "root.pem")[0]
    issuing = load_pem(directory / "ca" / "issuing.pem")[0]
    tls_chain = load_pem(directory / "tls" / "server.pem")
    tls = tls_chain[0]
    assert tls_chain[1:] == [issuing]
    root.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(root)
    tls.verify_directly_issued_by(issuing)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not tls.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    for name, cert in (("root", root), ("issuing", issuing)):
        key = serialization.load_pem_private_key(
            (directory / "ca" / f"{name}.key").read_bytes(), None
        )
        assert key.public_key() == cert.public_key()
    tls_key = serialization.load_pem_private_key(
        (directory / "tls" / "server.key").read_bytes(), None
    )
    assert tls_key.public_key() == tls.public_key()

    for key_file in ("ca/root.key", "ca/issuing.key", "tls/server.key"):
        assert mode(directory / key_file) == 0o600, key_file
    assert mode(directory / "estkit.db") == 0o600
    assert mode(directory / "ca") == 0o700

    config = tomllib.loads((directory / "estkit.toml").read_text())
    assert config["server"]["public_host"] == "localhost"
    assert config["ca"]["issuing_key"] == "ca/issuing.key"
    assert set(config["labels"]) == {"iot", "server"}

    connection = sqlite3.connect(directory / "estkit.db")
    try:
        tables = {
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        rows = connection.execute(
            "SELECT kind, serial, requester, der FROM certificates"
        ).fetchall()
    finally:
        connection.close()
    assert {"certificates", "users", "audit_events"} <= tables
    assert rows == [
        (
            "init",
            format(tls.serial_number, "x"),
            f"operator:{getpass.getuser()}",
            tls.public_bytes(serialization.Encoding.DER),
        )
    ]


def test_init_hostnames_go_into_the_tls_certificate(tmp_path):
    directory = tmp_path / "named"
    ok(
        estkit(
            "init",
            "--dir",
            str(directory),
            "--hostname",
            "est.example.com",
            "--hostname",
            "10.1.2.3",
            "--hostname",
            "::1",
        )
    )
    tls = load_pem(directory / "tls" / "server.pem")[0]
    sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["est.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    ]
    config = tomllib.loads((directory / "estkit.toml").read_text())
    assert config["server"]["public_host"] == "est.example.com"


def test_init_refuses_to_overwrite(tmp_path):
    directory = tmp_path / "twice"
    ok(estkit("init", "--dir", str(directory)))
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.suffix != ".db"}
    result = estkit("init", "--dir", str(directory))
    assert result.returncode != 0
    assert "already holds an estkit instance" in result.stderr
    assert str(directory) in result.stderr
    after = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.suffix != ".db"}
    assert after == before


KEY_CLASSES = {
    "ec-p256": (ec.EllipticCurvePrivateKey, 256),
    "ec-p384": (ec.EllipticCurvePrivateKey, 384),
    "rsa-2048": (rsa.RSAPrivateKey, 2048),
    "rsa-3072": (rsa.RSAPrivateKey, 3072),  # rsa-4096 works the same way, ~3 s slower
    "ed25519": (ed25519.Ed25519PrivateKey, None),
}


@pytest.mark.parametrize("key_type", list(KEY_CLASSES))
def test_init_key_types_make_working_instances(tmp_path, key_type):
    directory = tmp_path / f"kt-{key_type}"
    ok(estkit("init", "--dir", str(directory), "--key-type", key_type))
    kind, size = KEY_CLASSES[key_type]
    for key_file in ("ca/root.key", "ca/issuing.key", "tls/server.key"):
        key = serialization.load_pem_private_key((directory / key_file).read_bytes(), None)
        assert isinstance(key, kind), key_file
        if size is not None:
            assert key.key_size == size
    # Serve it and enroll: the TLS handshake and the CA signature work with this key type.
    config = directory / "estkit.toml"
    config.write_text(config.read_text().replace("http_port = 8080", "http_port = 0"))
    server = start_server(directory)
    try:
        password = server.add_user("kt-user")
        reply = enroll(server, "kt-user", password)
        assert reply.status == 200, reply.text
        [cert] = reply.certificates()
        issuing = load_pem(directory / "ca" / "issuing.pem")[0]
        cert.verify_directly_issued_by(issuing)
    finally:
        server.stop()


def test_dir_defaults_to_estkit_dir_then_est_data(tmp_path):
    target = tmp_path / "from-env"
    ok(estkit("init", env={"ESTKIT_DIR": str(target)}, cwd=tmp_path))
    assert (target / "estkit.toml").is_file()
    assert not (tmp_path / "est-data").exists()
    ok(estkit("user", "add", "env-user", env={"ESTKIT_DIR": str(target)}, cwd=tmp_path))
    assert "env-user" in user_rows(target)

    ok(estkit("init", cwd=tmp_path))
    assert (tmp_path / "est-data" / "estkit.toml").is_file()
    ok(estkit("user", "add", "cwd-user", cwd=tmp_path))
    assert "cwd-user" in user_rows(tmp_path / "est-data")
    assert "cwd-user" not in user_rows(target)
    # An explicit --dir wins over the environment.
    explicit = tmp_path / "explicit"
    ok(estkit("init", "--dir", str(explicit), env={"ESTKIT_DIR": str(target)}))
    assert (explicit / "estkit.toml").is_file()


# --- estkit user ----------------------------------------------------------------------------


def test_user_add_prints_a_working_secret_once(est_server):
    directory = est_server.data_dir
    result = ok(estkit("user", "add", "--dir", str(directory), "cli-alice"))
    [line] = result.stdout.strip().splitlines()
    match = SECRET_LINE.match(line)
    assert match, line
    secret = match.group(3)
    assert len(secret) >= 20
    assert result.stdout.count(secret) == 1
    assert secret not in result.stderr

    row = user_rows(directory)["cli-alice"]
    assert row["secret_hash"].startswith("$argon2id$")
    assert secret not in row["secret_hash"]
    reply = enroll(est_server, "cli-alice", secret)
    assert reply.status == 200, reply.text
    assert enroll(est_server, "cli-alice", secret + "x").status == 401

    listed = ok(estkit("user", "list", "--dir", str(directory))).stdout
    assert "cli-alice" in listed
    assert secret not in listed
    assert "$argon2" not in listed
    assert row["secret_hash"] not in listed


def test_user_add_generates_distinct_secrets(est_server):
    first = user_add(est_server.data_dir, "cli-gen-1")
    second = user_add(est_server.data_dir, "cli-gen-2")
    assert first and second
    assert first != second


def test_user_add_password_stdin(est_server):
    directory = est_server.data_dir
    secret = "correct horse battery staple"
    result = ok(
        estkit(
            "user",
            "add",
            "--dir",
            str(directory),
            "cli-stdin",
            "--password-stdin",
            stdin=secret + "\n",
        )
    )
    assert secret not in result.stdout + result.stderr
    assert "cli-stdin" in result.stdout
    assert user_rows(directory)["cli-stdin"]["secret_hash"].startswith("$argon2id$")
    reply = enroll(est_server, "cli-stdin", secret)
    assert reply.status == 200, reply.text


def test_user_add_labels_and_once_in_list(est_server):
    directory = est_server.data_dir
    user_add(directory, "cli-labels", "--label", "iot", "--label", "server")
    user_add(directory, "cli-default-only", "--label", "default")
    secret = user_add(directory, "cli-once", "--once")
    users = listing(directory)
    assert users["cli-labels"][:3] == ["iot,server", "no", "active"]
    assert users["cli-default-only"][:3] == ["default", "no", "active"]
    assert users["cli-once"][:3] == ["*", "yes", "active"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", users["cli-once"][3])

    rows = user_rows(directory)
    assert rows["cli-labels"]["labels"] == '["iot", "server"]'
    assert rows["cli-once"]["once"] == 1

    assert enroll(est_server, "cli-once", secret).status == 200
    assert listing(directory)["cli-once"][:3] == ["*", "yes", "consumed"]
    # A user limited to the default label cannot use another label.
    secret = user_add(directory, "cli-default-2", "--label", "default")
    assert enroll(est_server, "cli-default-2", secret, "server").status == 403
    assert enroll(est_server, "cli-default-2", secret).status == 200


def test_user_add_refuses_unknown_label_duplicates_and_bad_names(est_server):
    directory = est_server.data_dir
    result = estkit("user", "add", "--dir", str(directory), "cli-nolabel", "--label", "nope")
    assert result.returncode != 0
    assert "no label 'nope'" in result.stderr
    assert "iot" in result.stderr  # lists the labels that exist
    assert "cli-nolabel" not in user_rows(directory)

    user_add(directory, "cli-dup")
    result = estkit("user", "add", "--dir", str(directory), "cli-dup")
    assert result.returncode != 0
    assert "exists already" in result.stderr

    result = estkit("user", "add", "--dir", str(directory), "bad:name")
    assert result.returncode != 0
    assert "user names" in result.stderr
    assert "bad:name" not in user_rows(directory)


def test_user_remove(est_server):
    """The server remembers a verified account (Accounts.recall), yet its secret stops
    working at once when another process removes or replaces it."""
    directory = est_server.data_dir
    secret = user_add(directory, "cli-gone")
    assert enroll(est_server, "cli-gone", secret).status == 200
    assert enroll(est_server, "cli-gone", secret).status == 200  # recalled from memory
    assert issued_to(directory, "cli-gone") == 2
    result = ok(estkit("user", "remove", "--dir", str(directory), "cli-gone"))
    assert "cli-gone removed" in result.stdout
    assert "cli-gone" not in user_rows(directory)
    assert "cli-gone" not in listing(directory)
    for _ in range(2):  # refused in the issuing transaction, then by the store's read
        reply = enroll(est_server, "cli-gone", secret)
        assert reply.status == 401
        assert reply.text.strip().endswith("wrong user name or password")
        assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'
    assert issued_to(directory, "cli-gone") == 2
    new_secret = user_add(directory, "cli-gone")  # the same name, a new secret
    assert enroll(est_server, "cli-gone", secret).status == 401
    assert enroll(est_server, "cli-gone", new_secret).status == 200
    ok(estkit("user", "remove", "--dir", str(directory), "cli-gone"))
    result = estkit("user", "remove", "--dir", str(directory), "cli-gone")
    assert result.returncode != 0
    assert "no user 'cli-gone'" in result.stderr


# --- estkit serve: refusing a bad instance at start -----------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli-template") / "est-data"
    ok(estkit("init", "--dir", str(directory)))
    return directory


def instance_copy(template: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "est-data"
    shutil.copytree(template, directory)
    config = directory / "estkit.toml"
    config.write_text(config.read_text().replace("http_port = 8080", "http_port = 0"))
    return directory


def refused_serve(directory: Path) -> str:
    result = estkit("serve", "--dir", str(directory), "--port", "0", timeout=30)
    assert result.returncode != 0, result.stdout
    assert "serving EST" not in result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr


BAD_CONFIGS = [
    (
        '[labels.simpleenroll]\nvalidity = "30d"\n',
        "labels.simpleenroll",
        "named after an EST operation",
    ),
    ('[labels.x]\nvalidity = "forever"\n', "labels.x.validity", "'forever' is not a duration"),
    ('[labels.x]\ncolour = "blue"\n', "labels.x.colour", "unknown setting"),
    ('[labels.x]\nkey_types = ["dsa"]\n', "labels.x.key_types", "'dsa' is not one of"),
    ('[labels.x]\nallow_anchors = ["idevid"]\n', "labels.x.allow_anchors", "[anchors.idevid]"),
]


@pytest.mark.parametrize(("extra", "key", "reason"), BAD_CONFIGS)
def test_serve_refuses_bad_configuration(template, tmp_path, extra, key, reason):
    directory = instance_copy(template, tmp_path)
    config = directory / "estkit.toml"
    config.write_text(config.read_text() + "\n" + extra)
    stderr = refused_serve(directory)
    assert str(config) in stderr
    assert f": {key}: " in stderr
    assert reason in stderr


# More bad settings, checked in-process through the loader `estkit serve` runs first (the
# subprocess cases above prove that its ConfigError reaches the operator as exit status 1).
MORE_BAD_CONFIGS = [
    ('[labels.cacerts]\nvalidity = "30d"\n', "labels.cacerts", "named after an EST operation"),
    ('[labels."a b"]\nvalidity = "30d"\n', "labels.a b", "labels are 1-64 characters"),
    ('[labels.x]\nvalidity = "30s"\n', "labels.x.validity", "at least one minute"),
    ('[labels.x]\nvalidity = "99999999999d"\n', "labels.x.validity", "longer than 36500d"),
    ("[labels.x]\nrequire_pop = 1\n", "labels.x.require_pop", "true or false"),
    ('[labels.x]\nextended_key_usage = ["anyUsage"]\n', "labels.x.extended_key_usage", "anyUsage"),
    ("[labels.x]\nrsa_min_bits = 1024\n", "labels.x.rsa_min_bits", "2048"),
    ('[labels.x]\nallowed_ips = ["10.0.0.300/8"]\n', "labels.x.allowed_ips", "10.0.0.300"),
    ('[labels.x]\nsan_types = ["uri"]\n', "labels.x.san_types", "'uri' is not one of"),
    ("[profile.extra]\nx = 1\n", "profile.extra", "unknown setting"),
    (
        '[anchors.idevid]\ncertificates = "missing.pem"\n',
        "anchors.idevid.certificates",
        "not found",
    ),
    ("[nonsense]\nx = 1\n", "nonsense", "unknown table"),
    ("anchors = 3\n", "anchors", "must be a table"),
]


@pytest.mark.parametrize(("extra", "key", "reason"), MORE_BAD_CONFIGS)
def test_loader_refuses_bad_configuration(template, tmp_path, extra, key, reason):
    directory = instance_copy(template, tmp_path)
    config = directory / "estkit.toml"
    text = config.read_text()
    # Top-level keys must come before the first table to stay top-level.
    config.write_text(extra + text if not extra.startswith("[") else text + "\n" + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    assert caught.value.path == config
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value) == f"{config}: {key}: {caught.value.reason}"


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ('validity = "365d"', 'validity = "forever"', "profile.validity", "not a duration"),
        ("port = 8443", 'port = "8443"', "server.port", "must be a int"),
        ("port = 8443", "port = 70000", "server.port", "port number"),
        ("header_timeout = 15", "header_timeout = -1", "server.header_timeout", "positive"),
        ('tls_max_version = "1.3"', 'tls_max_version = "1.1"', "server.tls_max_version", "1.2"),
        ("[server]\n", "[server]\nretry_after = 0\n", "server.retry_after", "1 to 86400"),
        ("[store]\n", "[store]\nbusy_timeout = 0\n", "store.busy_timeout", "positive"),
        ("[store]\n", "[store]\ncolour = 1\n", "store.colour", "unknown setting"),
        ('url = "sqlite:///estkit.db"', 'url = "mysql://x"', "store.url", "sqlite"),
        ('issuing_key = "ca/issuing.key"', "", "ca.issuing_key", "file path"),
    ],
)
def test_loader_refuses_bad_existing_setting(template, tmp_path, old, new, key, reason):
    directory = instance_copy(template, tmp_path)
    config = directory / "estkit.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(config) in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ("[store]\n", "[store]\nbusy_timeout = 0\n", "store.busy_timeout", "positive"),
        ("[store]\n", "[store]\ncolour = 1\n", "store.colour", "unknown setting"),
        ('url = "sqlite:///estkit.db"', 'url = "mysql://x"', "store.url", "sqlite"),
    ],
)
def test_the_store_table_alone_is_checked_the_same_way(template, tmp_path, old, new, key, reason):
    """``cert list`` reads only [store] (load_store_settings): the same refusals, and the
    same settings as the whole configuration, whatever the other tables say."""
    directory = instance_copy(template, tmp_path)
    config = directory / "estkit.toml"
    text = config.read_text()
    whole = load_config(directory)
    alone = load_store_settings(directory)
    assert (alone.url, alone.busy_timeout) == (whole.store_url, whole.store_busy_timeout)
    config.write_text(text.replace('validity = "365d"', 'validity = "forever"', 1))
    assert load_store_settings(directory) == alone  # a broken profile is not its concern
    config.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_store_settings(directory)
    assert caught.value.key == key
    assert reason in caught.value.reason
    listed = run_estkit("cert", "list", "--dir", str(directory), check=False)
    assert listed.returncode != 0
    assert f"{key}: " in listed.stderr
    assert "Traceback" not in listed.stderr


def test_serve_refuses_ca_key_readable_by_others(template, tmp_path):
    directory = instance_copy(template, tmp_path)
    key_file = directory / "ca" / "issuing.key"
    key_file.chmod(0o644)
    stderr = refused_serve(directory)
    assert str(key_file) in stderr
    assert "0644" in stderr
    assert "0600" in stderr
    key_file.chmod(0o600)
    server = start_server(directory)
    server.stop()
