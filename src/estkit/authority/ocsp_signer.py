"""The delegated OCSP responder certificate: issued by the issuing CA, kept short-lived.

RFC 6960 §4.2.2.2: a CA may delegate signing OCSP responses to a certificate it issues with
the id-kp-OCSPSigning extended key usage. Such a certificate carries id-pkix-ocsp-nocheck
(§4.2.2.2.1), so clients never ask about its own revocation; the RFC's answer to a lost key
is then a short lifetime, so it is renewed (with a new key) once less than a third of
``[ocsp] responder_validity`` is left. The issuing CA key signs only the responder
certificate; every response is signed by the responder key, which never leaves ca/ — or,
with ``[ocsp] responder_key = "token"``, the issuing CA key's PKCS#11 token: each responder
key is then made in the token, found again by its CKA_ID (the certificate's
SubjectKeyIdentifier), and destroyed two renewals later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.authority.ca import CertificateAuthority, is_issued_by
from estkit.authority.issue import CLOCK_SKEW_ALLOWANCE, IssuedCertificate
from estkit.authority.keys import (
    generate_key,
    load_private_key,
    write_private_key,
)
from estkit.authority.labels import DEFAULT_LABEL
from estkit.authority.ocsp_settings import OcspSettings
from estkit.authority.service import Clock, certificate_record, utc_now
from estkit.authority.signing import sign_builder
from estkit.authority.token import Token, TokenEcKey, TokenError, TokenRsaKey, find_token_key
from estkit.store import AuditEvent, SerialCollision, Store
from estkit.wire.keytypes import key_type_of

log = logging.getLogger("estkit.ocsp")

CERT_FILE = "ocsp-responder.pem"
KEY_FILE = "ocsp-responder.key"
ACTOR = "server"
KIND = "ocsp-responder"
SERIAL_ATTEMPTS = 5
MAX_CHECK_INTERVAL = timedelta(hours=1)
MIN_CHECK_INTERVAL = timedelta(seconds=1)


@dataclass(frozen=True)
class Responder:
    """One responder certificate with its key: what signs responses right now."""

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


def responder_certificate(
    ca: CertificateAuthority,
    key: CertificateIssuerPrivateKeyTypes,
    validity: timedelta,
    now: datetime,
    serial: int,
) -> x509.Certificate:
    """A certificate for key that may sign OCSP responses for the issuing CA's certificates."""
    issuing = ca.issuing
    names = [a for a in issuing.subject if a.oid != NameOID.COMMON_NAME]
    subject = x509.Name([*names, x509.NameAttribute(NameOID.COMMON_NAME, "OCSP Responder")])
    not_before = max(now - CLOCK_SKEW_ALLOWANCE, issuing.not_valid_before_utc)
    not_after = min(now + validity, issuing.not_valid_after_utc)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuing.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before.replace(microsecond=0))
        .not_valid_after(not_after.replace(microsecond=0))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.issuing_key.public_key()),
            critical=False,
        )
    )
    return sign_builder(builder, ca.issuing_key)


def _replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """Write next to path, then rename over it: a reader sees the old file or the new one."""
    partial = path.with_name(path.name + ".new")
    partial.unlink(missing_ok=True)
    write(partial)
    partial.replace(path)


def _key_id(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _token_label(ca: CertificateAuthority) -> str:
    """The label of a CA generation's responder keys in its token."""
    return f"estkit-ocsp-{ca.issuing_id[:16]}"


def _token_of(ca: CertificateAuthority) -> Token:
    if not isinstance(ca.issuing_key, TokenEcKey | TokenRsaKey):
        raise TokenError(
            f'[ocsp] responder_key = "token", but the key of issuing CA {ca.issuing_id} '
            "is not in a PKCS#11 token"
        )
    return ca.issuing_key.token


class ResponderKeeper:
    """Loads, issues and renews the responder certificate in the instance's ca/ directory.

    Every certificate it issues is recorded in the store with its audit event, like any other
    certificate the CA signs (kind ``ocsp-responder``).
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        store: Store,
        directory: Path,
        settings: OcspSettings,
        clock: Clock = utc_now,
    ) -> None:
        self.ca = ca
        self.store = store
        self.cert_path = directory / CERT_FILE
        self.key_path = directory / KEY_FILE
        self.settings = settings
        self.clock = clock
        self._current: Responder | None = None

    @property
    def current(self) -> Responder:
        assert self._current is not None, "start() loads or issues the responder first"
        return self._current

    @property
    def check_interval(self) -> float:
        """Seconds between renewal checks: often enough to renew well before expiry."""
        interval = self.settings.responder_validity / 10
        return max(MIN_CHECK_INTERVAL, min(MAX_CHECK_INTERVAL, interval)).total_seconds()

    def start(self) -> Responder:
        """Use the responder in ca/ if it is sound and not due; else issue a new one.

        A key file others may read is refused (KeyFileError), as for the CA keys.
        """
        loaded, why = self._load()
        if loaded is not None and why is None:
            self._current = loaded
            why = self._renewal_reason(loaded.certificate, self.clock())
            if why is None:
                return loaded
        return self._issue(why or "first start")

    def renew_if_due(self) -> Responder | None:
        """Issue a new responder when the current one is due; returns it, or None."""
        why = self._renewal_reason(self.current.certificate, self.clock())
        return None if why is None else self._issue(why)

    # Internals ------------------------------------------------------------------------------

    @property
    def in_token(self) -> bool:
        return self.settings.responder_key_in_token

    def _load(self) -> tuple[Responder | None, str | None]:
        if not self.cert_path.exists() or not (self.in_token or self.key_path.exists()):
            return None, "first start"
        key = None if self.in_token else load_private_key(self.key_path)
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except (OSError, ValueError):
            return None, f"{self.cert_path} was unreadable"
        if key is None:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            try:
                key = find_token_key(_token_of(self.ca), _token_label(self.ca), ski.digest)
            except TokenError as exc:
                if not isinstance(self.ca.issuing_key, TokenEcKey | TokenRsaKey):
                    raise
                return None, f"its key was not found in the token ({exc})"
        if cert.public_key() != key.public_key():
            return None, f"{self.key_path} did not match {self.cert_path}"
        if not is_issued_by(cert, self.ca.issuing):
            return None, "the issuing CA changed"
        return Responder(cert, key), None

    def _renewal_reason(self, cert: x509.Certificate, now: datetime) -> str | None:
        """Why cert should be replaced now, or None while it is good for a while yet."""
        validity = self.settings.responder_validity
        remaining = cert.not_valid_after_utc - now
        if remaining > validity + CLOCK_SKEW_ALLOWANCE:
            return "responder_validity was shortened"
        if remaining >= validity / 3:
            return None
        # Near the issuing CA's own end the new one would end no later: keep this one.
        if min(now + validity, self.ca.issuing.not_valid_after_utc) <= cert.not_valid_after_utc:
            return None
        return "renewal" if remaining > timedelta(0) else "renewal after expiry"

    def _new_key(self) -> CertificateIssuerPrivateKeyTypes:
        key_type = key_type_of(self.ca.issuing_key)
        if self.in_token:
            return _token_of(self.ca).generate(key_type, _token_label(self.ca))
        return generate_key(key_type)

    def _store_key(self, key: CertificateIssuerPrivateKeyTypes) -> None:
        """Keep the new key: a file in ca/, or (in a token) drop all but it and the one
        it replaces, which other processes may still sign with until they renew."""
        if not self.in_token:
            _replace_file(self.key_path, lambda path: write_private_key(path, key))
            return
        keep = {_key_id(key)}
        if self._current is not None:
            keep.add(_key_id(self._current.key))
        _token_of(self.ca).destroy(_token_label(self.ca), keep)

    def _issue(self, why: str) -> Responder:
        key = self._new_key()
        for _ in range(SERIAL_ATTEMPTS):
            now = self.clock()
            serial = x509.random_serial_number()
            cert = responder_certificate(
                self.ca, key, self.settings.responder_validity, now, serial
            )
            issued = IssuedCertificate.read_off(cert)
            record = certificate_record(issued, DEFAULT_LABEL, ACTOR, KIND, self.ca.issuing_id, now)
            event = AuditEvent(
                actor=ACTOR,
                action=f"certificate.{KIND}",
                subject=record.serial,
                at=now,
                detail={"reason": why, "not_after": record.not_after.isoformat()},
            )
            try:
                self.store.record_certificate(record, audit=event)
            except SerialCollision:
                continue
            break
        else:
            raise RuntimeError("could not allocate a unique serial for the OCSP responder")
        self._store_key(key)
        pem = cert.public_bytes(Encoding.PEM)
        _replace_file(self.cert_path, lambda path: _write_public(path, pem))
        responder = Responder(cert, key)
        self._current = responder
        log.info(
            "issued OCSP responder certificate %s (%s), valid until %s",
            record.serial,
            why,
            record.not_after.isoformat(),
        )
        return responder


__all__ = ["Responder", "ResponderKeeper", "responder_certificate"]
