"""Revocation of third-party anchors' certificates: the CRL file of ``[anchors.<name>] crl``.

A device maker publishes a CRL for its IDevID CA; the operator drops it in a file.  The file
is verified against the anchor's key when loaded and re-read whenever it changes (a stat per
check), so replacing it takes effect without a restart.  A CRL past its nextUpdate is still
used — its revocations stay true, and many manufacturer CRLs are rarely reissued — with a
warning in the log.  A file that cannot be used refuses the anchor's certificates (503) rather
than letting a revoked one through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from estkit.authority.ca import is_issued_by
from estkit.errors import Forbidden, ServiceUnavailable

log = logging.getLogger("estkit.anchors")

_FileVersion = tuple[int, int, int, int]
_SIGNING_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    dsa.DSAPublicKey,
)


class AnchorCrlError(ValueError):
    """The CRL file cannot be used: unreadable, not a CRL, or not signed by the anchor."""


def _version(path: Path) -> _FileVersion:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _parse(path: Path, data: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise AnchorCrlError(f"{path} is not a CRL (DER or PEM)") from None


def _may_sign_crls(cert: x509.Certificate) -> bool:
    """RFC 5280 §4.2.1.3: with a keyUsage extension, cRLSign must be set."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.crl_sign


class AnchorCrl:
    """One anchor's CRL file, verified against the anchor's certificates."""

    def __init__(self, anchor: str, path: Path, certificates: Sequence[x509.Certificate]) -> None:
        self.anchor = anchor
        self.path = path
        self.certificates = tuple(certificates)
        self._lock = threading.Lock()
        self._version: _FileVersion | None = None
        self._loaded: tuple[x509.CertificateRevocationList, x509.Certificate] | None = None
        self._error: AnchorCrlError | None = None

    def load(self) -> tuple[x509.CertificateRevocationList, x509.Certificate]:
        """The CRL and the anchor certificate that signed it; re-read if the file changed."""
        with self._lock:
            try:
                version = _version(self.path)
            except OSError as exc:
                raise AnchorCrlError(f"cannot read {self.path}: {exc.strerror}") from None
            if version != self._version:
                reloading, self._version = self._version is not None, version
                try:
                    self._loaded, self._error = self._read(), None
                except AnchorCrlError as exc:
                    self._loaded, self._error = None, exc
                    if reloading:  # at start the error stops the server and says so itself
                        log.error("anchors.%s.crl: %s", self.anchor, exc)
                else:
                    if reloading:
                        log.info("anchors.%s.crl: loaded %s", self.anchor, self.path)
            if self._error is not None:
                raise self._error
            assert self._loaded is not None
            return self._loaded

    def _read(self) -> tuple[x509.CertificateRevocationList, x509.Certificate]:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise AnchorCrlError(f"cannot read {self.path}: {exc.strerror}") from None
        crl = _parse(self.path, data)
        issuers = [cert for cert in self.certificates if cert.subject == crl.issuer]
        if not issuers:
            raise AnchorCrlError(
                f"the CRL in {self.path} is issued by '{crl.issuer.rfc4514_string()}', not by "
                f"a certificate of anchors.{self.anchor}"
            )
        signers = [cert for cert in issuers if _may_sign_crls(cert)]
        if not signers:
            raise AnchorCrlError(
                f"the CRL in {self.path} is issued by '{crl.issuer.rfc4514_string()}' of "
                f"anchors.{self.anchor}, whose keyUsage lacks cRLSign (RFC 5280 §4.2.1.3)"
            )
        for issuer in signers:
            key = issuer.public_key()
            if isinstance(key, _SIGNING_KEYS) and crl.is_signature_valid(key):
                self._warn_if_stale(crl)
                return crl, issuer
        raise AnchorCrlError(
            f"the CRL in {self.path} does not verify with the key of anchors.{self.anchor} "
            f"('{crl.issuer.rfc4514_string()}')"
        )

    def _warn_if_stale(self, crl: x509.CertificateRevocationList) -> None:
        next_update = crl.next_update_utc
        if next_update is not None and next_update < datetime.now(UTC):
            log.warning(
                "anchors.%s.crl: %s is past its nextUpdate (%s); still using it, replace it "
                "with a current CRL",
                self.anchor,
                self.path,
                next_update.isoformat(),
            )

    def check(self, cert: x509.Certificate) -> None:
        """Refuse a client certificate that this anchor's CRL lists (403), or any certificate
        of this anchor while its CRL cannot be used (503)."""
        try:
            crl, issuer = self.load()
        except AnchorCrlError:
            raise ServiceUnavailable(
                f"the revocation status of the TLS client certificate cannot be checked: the "
                f"CRL of anchor '{self.anchor}' is unusable (see the server log); retry later"
            ) from None
        if cert == issuer or not is_issued_by(cert, issuer):
            return  # this CRL speaks for certificates its issuer signed, and only those
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            raise Forbidden(f"certificate revoked (listed on the CRL of anchor '{self.anchor}')")


def load_anchor_crls(
    files: Mapping[str, Path], anchors: Mapping[str, Sequence[x509.Certificate]]
) -> dict[str, AnchorCrl]:
    """Every configured anchor CRL, each loaded once now so that a bad file stops the start."""
    crls = {name: AnchorCrl(name, path, anchors[name]) for name, path in files.items()}
    for name, crl in crls.items():
        try:
            crl.load()
        except AnchorCrlError as exc:
            raise AnchorCrlError(f"anchors.{name}.crl: {exc}") from None
    return crls
