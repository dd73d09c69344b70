"""estkit.toml: read into typed settings, validated at start, written by ``estkit init``.

Every bad setting is refused with the file, the key and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estkit.authority.crl_settings import CrlSettingError, CrlSettings, parse_crl_settings
from estkit.authority.labels import DEFAULT_LABEL
from estkit.authority.ocsp_settings import OcspSettingError, OcspSettings, parse_ocsp_settings
from estkit.authority.token_settings import (
    DEFAULT_PIN_ENV,
    URI_SCHEME,
    KeyRef,
    Pkcs11Uri,
    TokenKeyRef,
    TokenSettings,
)
from estkit.config_file import CONFIG_NAME as CONFIG_NAME
from estkit.config_file import ConfigError as ConfigError
from estkit.config_file import config_table, read_config_file, store_settings

if TYPE_CHECKING:
    from estkit.authority.profile import Profile


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8443
    http_port: int = 8080
    public_host: str = "localhost"
    public_http_url: str = ""
    """Base URL of the plain-HTTP listener put in certificates; default http://public_host:port."""
    header_timeout: float = 15.0
    body_timeout: float = 30.0
    tls_handshake_timeout: float = 10.0
    tls_max_version: str = "1.3"
    retry_after: int = 5


@dataclass(frozen=True)
class Config:
    path: Path
    directory: Path
    server: ServerSettings
    root_cert: Path
    issuing_cert: Path
    issuing_key: KeyRef
    """A PEM file, or a key in a PKCS#11 token (``pkcs11:`` URI and the ``[pkcs11]`` table)."""
    tls_cert: Path
    tls_key: Path
    store_url: str
    store_busy_timeout: float
    profiles: Mapping[str, Profile]
    anchors: Mapping[str, Path] = field(default_factory=dict)
    anchor_crls: Mapping[str, Path] = field(default_factory=dict)
    """``[anchors.<name>] crl``: the CRL file of an anchor, for those that have one."""
    crl: CrlSettings = field(default_factory=CrlSettings)
    ocsp: OcspSettings = field(default_factory=OcspSettings)
    key_archive_recipient: Path | None = None
    """``[key_archive] recipient_cert``: server-generated keys are archived encrypted to it."""


_SERVER_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,),
    "port": (int,),
    "http_port": (int,),
    "public_host": (str,),
    "public_http_url": (str,),
    "header_timeout": (int, float),
    "body_timeout": (int, float),
    "tls_handshake_timeout": (int, float),
    "tls_max_version": (str,),
    "retry_after": (int,),
}


def _server_settings(path: Path, table: Mapping[str, Any]) -> ServerSettings:
    values: dict[str, Any] = {}
    for key, value in table.items():
        types = _SERVER_TYPES.get(key)
        if types is None:
            raise ConfigError(path, f"server.{key}", "unknown setting")
        if not isinstance(value, types) or isinstance(value, bool):
            raise ConfigError(path, f"server.{key}", f"must be a {types[0].__name__}")
        values[key] = value
    settings = ServerSettings(**values)
    for key in ("port", "http_port"):
        port = getattr(settings, key)
        if not 0 <= port <= 65535:
            raise ConfigError(path, f"server.{key}", "must be a port number from 0 to 65535")
    if settings.tls_max_version not in ("1.2", "1.3"):
        raise ConfigError(path, "server.tls_max_version", "must be '1.2' or '1.3'")
    for key in ("header_timeout", "body_timeout", "tls_handshake_timeout"):
        if getattr(settings, key) <= 0:
            raise ConfigError(path, f"server.{key}", "must be positive")
    if not 1 <= settings.retry_after <= 86400:
        raise ConfigError(path, "server.retry_after", "must be from 1 to 86400 seconds")
    return settings


def _path(path: Path, directory: Path, table: Mapping[str, Any], key: str, where: str) -> Path:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{where}.{key}", "must be a file path")
    return directory / value


def load_config(directory: Path) -> Config:
    """Read and validate DIR/estkit.toml."""
    # The profiles' EKU OIDs import cryptography.x509: only a whole configuration needs it.
    from estkit.authority.profile import ProfileError, parse_profile

    path, data = read_config_file(directory)
    known = {
        "server",
        "ca",
        "tls",
        "store",
        "profile",
        "labels",
        "anchors",
        "crl",
        "key_archive",
        "ocsp",
        "pkcs11",
    }
    for key in data:
        if key not in known:
            raise ConfigError(path, key, f"unknown table (known: {', '.join(sorted(known))})")
    ca = config_table(path, data, "ca")
    tls = config_table(path, data, "tls")
    store = store_settings(path, directory, data)

    profiles: dict[str, Profile] = {}
    try:
        profiles[DEFAULT_LABEL] = parse_profile(DEFAULT_LABEL, config_table(path, data, "profile"))
    except ProfileError as exc:
        raise ConfigError(path, f"profile.{exc.key}", exc.reason) from None
    for label, table in config_table(path, data, "labels").items():
        if not isinstance(table, dict):
            raise ConfigError(path, f"labels.{label}", "must be a table")
        try:
            profiles[label] = parse_profile(label, table)
        except ProfileError as exc:
            key = f"labels.{label}" if exc.key == label else f"labels.{label}.{exc.key}"
            raise ConfigError(path, key, exc.reason) from None

    anchors: dict[str, Path] = {}
    anchor_crls: dict[str, Path] = {}
    for name, table in config_table(path, data, "anchors").items():
        if not isinstance(table, dict):
            raise ConfigError(path, f"anchors.{name}", "must be a table")
        for key in table:
            if key not in ("certificates", "crl"):
                raise ConfigError(path, f"anchors.{name}.{key}", "unknown setting")
        anchor_file = _path(path, directory, table, "certificates", f"anchors.{name}")
        if not anchor_file.is_file():
            raise ConfigError(path, f"anchors.{name}.certificates", f"{anchor_file} not found")
        anchors[name] = anchor_file
        if "crl" in table:
            crl_file = _path(path, directory, table, "crl", f"anchors.{name}")
            if not crl_file.is_file():
                raise ConfigError(path, f"anchors.{name}.crl", f"{crl_file} not found")
            anchor_crls[name] = crl_file
    try:
        crl = parse_crl_settings(config_table(path, data, "crl"))
    except CrlSettingError as exc:
        raise ConfigError(path, f"crl.{exc.key}", exc.reason) from None
    try:
        ocsp = parse_ocsp_settings(config_table(path, data, "ocsp"))
    except OcspSettingError as exc:
        raise ConfigError(path, f"ocsp.{exc.key}", exc.reason) from None
    if ocsp.responder_key_in_token and not str(ca.get("issuing_key", "")).startswith(URI_SCHEME):
        raise ConfigError(
            path,
            "ocsp.responder_key",
            "'token' needs the issuing CA key in a token (ca.issuing_key = \"pkcs11:...\")",
        )
    for profile in profiles.values():
        for anchor in profile.allow_anchors:
            if anchor != "estkit" and anchor not in anchors:
                where = f"labels.{profile.label}" if profile.label else "profile"
                raise ConfigError(
                    path, f"{where}.allow_anchors", f"no [anchors.{anchor}] table is configured"
                )

    return Config(
        path=path,
        directory=directory,
        server=_server_settings(path, config_table(path, data, "server")),
        root_cert=_path(path, directory, ca, "root_cert", "ca"),
        issuing_cert=_path(path, directory, ca, "issuing_cert", "ca"),
        issuing_key=_signing_key(path, directory, data, ca, "issuing_key", "ca"),
        tls_cert=_path(path, directory, tls, "cert", "tls"),
        tls_key=_path(path, directory, tls, "key", "tls"),
        store_url=store.url,
        store_busy_timeout=store.busy_timeout,
        profiles=profiles,
        anchors=anchors,
        anchor_crls=anchor_crls,
        crl=crl,
        ocsp=ocsp,
        key_archive_recipient=_key_archive_recipient(
            path, directory, config_table(path, data, "key_archive"), profiles
        ),
    )


def _token_settings(path: Path, directory: Path, data: Mapping[str, Any]) -> TokenSettings:
    """The ``[pkcs11]`` table: module, and pin_file or pin_env (default ESTKIT_PKCS11_PIN)."""
    if "pkcs11" not in data:
        raise ConfigError(
            path, "pkcs11", "a pkcs11: key needs a [pkcs11] table with the module path"
        )
    table = config_table(path, data, "pkcs11")
    for key in table:
        if key not in ("module", "pin_file", "pin_env"):
            raise ConfigError(
                path, f"pkcs11.{key}", "unknown setting (known: module, pin_file, pin_env)"
            )
    module = table.get("module")
    if not isinstance(module, str) or not module:
        raise ConfigError(path, "pkcs11.module", "must be the path of the PKCS#11 module (.so)")
    if "pin_file" in table and "pin_env" in table:
        raise ConfigError(path, "pkcs11.pin_file", "set pin_file or pin_env, not both")
    if "pin_file" in table:
        pin_file = _path(path, directory, table, "pin_file", "pkcs11")
        return TokenSettings(module=Path(module), pin_file=pin_file)
    pin_env = table.get("pin_env", DEFAULT_PIN_ENV)
    if not isinstance(pin_env, str) or not pin_env:
        raise ConfigError(path, "pkcs11.pin_env", "must be an environment variable name")
    return TokenSettings(module=Path(module), pin_env=pin_env)


def _signing_key(
    path: Path,
    directory: Path,
    data: Mapping[str, Any],
    table: Mapping[str, Any],
    key: str,
    where: str,
) -> KeyRef:
    """A key file path, or a ``pkcs11:token=...;object=...`` URI with the [pkcs11] table."""
    value = table.get(key)
    if not isinstance(value, str) or not value.startswith(URI_SCHEME):
        return _path(path, directory, table, key, where)
    try:
        uri = Pkcs11Uri.parse(value)
    except ValueError as exc:
        raise ConfigError(path, f"{where}.{key}", str(exc)) from None
    return TokenKeyRef(_token_settings(path, directory, data), uri)


def _key_archive_recipient(
    path: Path, directory: Path, table: Mapping[str, Any], profiles: Mapping[str, Profile]
) -> Path | None:
    """The archive certificate, required as soon as one label archives serverkeygen keys."""
    for key in table:
        if key != "recipient_cert":
            raise ConfigError(path, f"key_archive.{key}", "unknown setting")
    recipient = None
    if "recipient_cert" in table:
        recipient = _path(path, directory, table, "recipient_cert", "key_archive")
        if not recipient.is_file():
            raise ConfigError(path, "key_archive.recipient_cert", f"{recipient} not found")
    for profile in profiles.values():
        if profile.serverkeygen_archive and recipient is None:
            where = f"labels.{profile.label}" if profile.label else "profile"
            raise ConfigError(
                path,
                f"{where}.serverkeygen_archive",
                "needs [key_archive] recipient_cert: the certificate keys are archived to",
            )
    return recipient


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string


def _token_tables(settings: TokenSettings, root_key: str) -> str:
    """The ``[pkcs11]`` and ``[ocsp]`` tables of an instance whose CA keys are in a token."""
    pin = (
        f"pin_file = {_toml_string(str(settings.pin_file))}"
        if settings.pin_file is not None
        else f"pin_env = {_toml_string(settings.pin_env or DEFAULT_PIN_ENV)}"
    )
    return f"""
# The CA keys are in a PKCS#11 token and never leave it. The root CA key is not needed
# to serve; it is {root_key}
[pkcs11]
module = {_toml_string(str(settings.module))}
{pin}

# OCSP responder keys are made in the same token.
[ocsp]
responder_key = "token"
"""


def default_config_text(
    public_host: str,
    store_url: str = "sqlite:///estkit.db",
    issuing_key: str = "ca/issuing.key",
    token: tuple[TokenSettings, str] | None = None,
) -> str:
    """The estkit.toml that ``estkit init`` writes: the default profile and two labels.
    ``token``: the [pkcs11] settings and the root key's URI when the CA keys are in a token."""
    store_line = "url = " + _toml_string(store_url)
    token_tables = "" if token is None else _token_tables(*token)
    return f"""\
# estkit instance configuration. Every setting is documented in the README's reference.

[server]
host = "127.0.0.1"
port = 8443
# Plain-HTTP listener for CA certificates (AIA) and CRLs (CDP); never serves EST.
http_port = 8080
# Host name put in issued certificates' AIA and CRL URLs.
public_host = "{public_host}"
# Seconds a client has to send its request headers (also the keep-alive idle time).
header_timeout = 15
# Seconds a client has to send its request body.
body_timeout = 30
# "1.2" for fleets whose labels require proof-of-possession linking (tls-unique).
tls_max_version = "1.3"

[ca]
root_cert = "ca/root.pem"
issuing_cert = "ca/issuing.pem"
issuing_key = {_toml_string(issuing_key)}

[tls]
cert = "tls/server.pem"
key = "tls/server.key"

[store]
{store_line}

# Certificate revocation lists, served on the plain-HTTP listener at the URL in issued
# certificates: each CRL is valid for `validity` and re-signed when less than
# `refresh_before` of it is left (and at once on every revocation).
[crl]
validity = "7d"
refresh_before = "1d"
{token_tables}
# The profile of the unlabelled path /.well-known/est/
[profile]
validity = "365d"
extended_key_usage = ["clientAuth"]

# Devices: short-lived client certificates whose CN is the enrolling user's name.
[labels.iot]
validity = "30d"
key_types = ["ec-p256"]
extended_key_usage = ["clientAuth"]
cn_must_equal_identity = true

# Servers: TLS server certificates with DNS and IP subjectAltNames. clientAuth lets a
# server present its certificate as a TLS client certificate to renew it (simplereenroll).
[labels.server]
validity = "90d"
extended_key_usage = ["serverAuth", "clientAuth"]
san_types = ["dns", "ip"]
allowed_dns = ["*"]
allowed_ips = ["0.0.0.0/0", "::/0"]
"""
