"""CA and OCSP signing keys in a PKCS#11 token (an HSM, or SoftHSM2 for tests).

A key is named by an RFC 7512 URI, ``pkcs11:token=LABEL;object=LABEL``; the module (the
vendor's PKCS#11 library) and where the user PIN comes from are the ``[pkcs11]`` table.  The
private key never leaves the token: :class:`TokenEcKey` and :class:`TokenRsaKey` are
cryptography private-key objects whose ``sign`` asks the token, and whose ``private_bytes``
refuses.  Everything that signs through ``key.sign(...)`` (OCSP responses, CMS) works with
them unchanged; certificates and CRLs go through :mod:`estkit.authority.signing`.

One logged-in session per token and process is opened on first use and shared by every key
of that token; a lock serializes its use, since the server signs from worker threads and a
PKCS#11 session is not to be used by two threads at once.  After ``fork`` the child
re-initializes the module and opens its own session (PKCS#11 §6.7.1: a child process must
not use its parent's sessions).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Self, cast

import pkcs11
from cryptography import utils as crypto_utils
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    DeviceRemoved,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
)
from pkcs11.types import SignMixin
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from estkit.authority.keys import load_private_key
from estkit.authority.token_settings import (
    DEFAULT_PIN_ENV,
    KeyRef,
    Pkcs11Uri,
    TokenError,
    TokenKeyRef,
    TokenSettings,
)
from estkit.errors import ServiceUnavailable

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Library

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
)
"""Where distributions put SoftHSM2's module: the default of ``estkit init --pkcs11-module``
is the first that exists."""
KeyLookup = tuple[str | None, bytes | None]
"""How a key object is found again: (CKA_LABEL, CKA_ID), either may be None."""
_CURVES = {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}
TOKEN_KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
"""Key types estkit makes in a token (EdDSA support in tokens is too uneven)."""
_RSA_MECHANISMS = {
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}


TOKEN_LOOKUPS = 5
"""Looks for a token by its label, with the module's token list loaded again in between,
before the token is called missing.  SoftHSM2 once listed none of its tokens in one of two
worker processes that loaded it at the same moment (the other found it), which stopped the
whole server; a token that really is not there costs a second longer to report."""
_LOOKUP_PAUSE = 0.25

_SESSION_LOST = (
    DeviceRemoved,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserNotLoggedIn,
)
"""Errors after which the session is gone: the next signature opens and logs in again."""


class TokenUnavailable(TokenError, ServiceUnavailable):
    """The token would not sign while serving (gone, reset, refusing the login): a request
    gets 503 with Retry-After and nothing issued, a command its one-line error."""


def find_softhsm_module() -> Path | None:
    """SoftHSM2's PKCS#11 module where this system has one."""
    return next((Path(p) for p in MODULE_CANDIDATES if Path(p).is_file()), None)


_library_pid = os.getpid()
_registry_lock = threading.Lock()
_tokens: dict[tuple[str, str], Token] = {}


def _library(module: Path) -> Pkcs11Library:
    """The loaded module (python-pkcs11 keeps one per path and process, never unloaded)."""
    global _library_pid
    if not module.is_file():
        raise TokenError(f"PKCS#11 module {module} not found ([pkcs11] module)")
    try:
        library = pkcs11.lib(str(module))
        if _library_pid != os.getpid():  # forked: C_Initialize again in this process
            _library_pid = os.getpid()
            library.reinitialize()
    except PKCS11Error as exc:
        raise TokenError(f"cannot load PKCS#11 module {module}: {_describe(exc)}") from None
    return library


def open_token(settings: TokenSettings, label: str) -> Token:
    """The shared handle of token ``label`` in this process (logged in on first use)."""
    with _registry_lock:
        key = (str(settings.module), label)
        token = _tokens.get(key)
        if token is None:
            token = _tokens[key] = Token(settings, label)
        return token


def _find_token(library: Pkcs11Library, label: str) -> pkcs11.Token:
    """The token labelled so; NoSuchToken after TOKEN_LOOKUPS tries (see there).  Loading
    the list again (C_Finalize, C_Initialize) ends this process's other sessions, which
    reopen on their next use; it happens only while a token is missing."""
    for _ in range(TOKEN_LOOKUPS - 1):
        try:
            return library.get_token(token_label=label)
        except pkcs11.NoSuchToken:
            time.sleep(_LOOKUP_PAUSE)
            library.reinitialize()
    return library.get_token(token_label=label)


def _describe(exc: PKCS11Error) -> str:
    return str(exc) or type(exc).__name__


class Token:
    """One token's logged-in session in this process, used under a lock."""

    def __init__(self, settings: TokenSettings, label: str) -> None:
        self.settings = settings
        self.label = label
        self._lock = threading.RLock()
        self._session: pkcs11.Session | None = None
        self._pid = 0
        self._keys: dict[KeyLookup, pkcs11.PrivateKey] = {}

    @contextmanager
    def session(self) -> Iterator[pkcs11.Session]:
        """The session, opened and logged in if needed; PKCS#11 errors become TokenError."""
        with self._lock:
            if self._session is None or self._pid != os.getpid():
                self._open()
            assert self._session is not None
            try:
                yield self._session
            except PKCS11Error as exc:
                if isinstance(exc, _SESSION_LOST):
                    self._session = None  # the token was reset or replugged: reopen next time
                raise TokenError(f"token {self.label!r}: {_describe(exc)}") from None

    def _open(self) -> None:
        library = _library(self.settings.module)
        self._keys.clear()
        try:
            token = _find_token(library, self.label)
        except pkcs11.NoSuchToken:
            labels = sorted({t.label for t in library.get_tokens()})
            known = ", ".join(repr(label) for label in labels) or "none"
            raise TokenError(
                f"no PKCS#11 token labelled {self.label!r} in {self.settings.module} "
                f"(tokens: {known})"
            ) from None
        except PKCS11Error as exc:
            raise TokenError(f"token {self.label!r}: {_describe(exc)}") from None
        pin = self.settings.pin()
        try:
            try:
                self._session = token.open(rw=True, user_pin=pin)
            except UserAlreadyLoggedIn:  # the login of a parent process carried over a fork
                self._session = token.open(rw=True)
        except pkcs11.PinIncorrect:
            raise TokenError(f"wrong user PIN for PKCS#11 token {self.label!r}") from None
        except PKCS11Error as exc:
            raise TokenError(f"cannot log in to token {self.label!r}: {_describe(exc)}") from None
        self._pid = os.getpid()

    def private_key(
        self, label: str | None = None, key_id: bytes | None = None
    ) -> pkcs11.PrivateKey:
        """The private key object with this label and/or CKA_ID, found once and cached."""
        with self.session() as session:
            cached = self._keys.get((label, key_id))
            if cached is not None:
                return cached
            try:
                key = session.get_key(ObjectClass.PRIVATE_KEY, label=label, id=key_id)
            except pkcs11.NoSuchKey:
                what = f"labelled {label!r}" if label is not None else f"with id {key_id!r}"
                raise TokenError(f"token {self.label!r} holds no private key {what}") from None
            except pkcs11.MultipleObjectsReturned:
                raise TokenError(
                    f"token {self.label!r} holds several private keys labelled {label!r}"
                ) from None
            assert isinstance(key, pkcs11.PrivateKey)
            self._keys[(label, key_id)] = key
            return key

    def sign(self, find: KeyLookup, data: bytes, mechanism: Mechanism) -> bytes:
        """Sign with the private key found by (label, CKA_ID): looked up again after the
        session was reopened, so a key object never outlives its session."""
        with self._lock:
            try:
                with self.session():
                    return cast(SignMixin, self.private_key(*find)).sign(data, mechanism=mechanism)
            except TokenError:
                if self._session is not None:
                    raise
            try:
                with self.session():  # once more, on a new session, after the token dropped ours
                    return cast(SignMixin, self.private_key(*find)).sign(data, mechanism=mechanism)
            except TokenError as exc:
                raise TokenUnavailable(
                    f"the CA's signing key is unavailable ({exc}); nothing was signed, retry later"
                ) from None

    def public_key_der(self, key: pkcs11.PrivateKey) -> bytes:
        """The DER SubjectPublicKeyInfo of a private key, from its public key object."""
        with self.session() as session:
            attrs: dict[Attribute, Any] = {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.LABEL: key.label,
                Attribute.ID: key.id,
            }
            found = list(session.get_objects(attrs))
            if len(found) != 1:
                raise TokenError(
                    f"token {self.label!r}: no single public key beside private key "
                    f"{key.label!r}; estkit needs both halves of the pair"
                )
            return self._spki(cast(pkcs11.PublicKey, found[0]))

    def _spki(self, public: pkcs11.PublicKey) -> bytes:
        if public.key_type == KeyType.EC:
            return bytes(encode_ec_public_key(public))
        if public.key_type == KeyType.RSA:
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                int.from_bytes(public[Attribute.MODULUS], "big"),
            )
            return numbers.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        raise TokenError(
            f"token {self.label!r}: key {public.label!r} is {public.key_type.name}; "
            "estkit signs with EC (P-256, P-384) or RSA keys in a token"
        )

    def generate(self, key_type: str, label: str) -> CertificateIssuerPrivateKeyTypes:
        """A new non-extractable, sensitive key pair labelled ``label`` whose CKA_ID is the
        SubjectKeyIdentifier of its public key (how most PKCS#11 tools pair keys and certs)."""
        private = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
        }
        public = {Attribute.TOKEN: True, Attribute.VERIFY: True}
        with self.session() as session:
            if key_type in _CURVES:
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                    local=True,
                )
                pub, priv = params.generate_keypair(
                    store=True, label=label, private_template=private, public_template=public
                )
            elif key_type.startswith("rsa-"):
                pub, priv = session.generate_keypair(
                    KeyType.RSA,
                    int(key_type[4:]),
                    store=True,
                    label=label,
                    private_template=private,
                    public_template=public,
                )
            else:
                raise TokenError(
                    f"{key_type} keys cannot be made in a PKCS#11 token by estkit; use "
                    "ec-p256, ec-p384 or rsa-N"
                )
            public_key = _load_public(self._spki(pub))
            ski = x509.SubjectKeyIdentifier.from_public_key(public_key).digest
            pub[Attribute.ID] = ski
            priv[Attribute.ID] = ski
            return _wrap(self, (label, ski), public_key)

    def destroy(self, label: str, keep: set[bytes]) -> int:
        """Destroy the key pairs labelled ``label`` whose CKA_ID is not in keep; how many."""
        destroyed = 0
        with self.session() as session:
            for obj in list(session.get_objects({Attribute.LABEL: label})):
                if obj[Attribute.ID] not in keep:
                    if obj[Attribute.CLASS] == ObjectClass.PRIVATE_KEY:
                        destroyed += 1
                    obj.destroy()
            self._keys.clear()
        return destroyed


def _refuse(what: str) -> NoReturn:
    raise TokenError(f"{what}: the private key is in a PKCS#11 token and never leaves it")


class _InToken:
    """What both token key kinds share: where the key is, and that it never leaves."""

    def __init__(self, token: Token, find: KeyLookup) -> None:
        self.token = token
        self.find = find

    @property
    def label(self) -> str:
        return self.find[0] or ""

    def private_numbers(self) -> NoReturn:
        _refuse("private numbers")

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _refuse(f"cannot export key {self.label!r}")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class TokenEcKey(_InToken, ec.EllipticCurvePrivateKey):
    """An EC private key in a token: ECDSA signatures are made by the token (CKM_ECDSA over
    the digest, so any token that does ECDSA will do), then DER-encoded as cryptography's."""

    def __init__(self, token: Token, find: KeyLookup, public: ec.EllipticCurvePublicKey) -> None:
        super().__init__(token, find)
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(
        self, data: crypto_utils.Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TokenError(f"unsupported signature algorithm {signature_algorithm!r}")
        digest = _digest(bytes(data), signature_algorithm.algorithm)
        raw = self.token.sign(self.find, digest, Mechanism.ECDSA)
        half = len(raw) // 2
        return utils.encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        _refuse("ECDH with a signing key")


class TokenRsaKey(_InToken, rsa.RSAPrivateKey):
    """An RSA private key in a token: PKCS#1 v1.5 signatures (CKM_SHA*_RSA_PKCS)."""

    def __init__(self, token: Token, find: KeyLookup, public: rsa.RSAPublicKey) -> None:
        super().__init__(token, find)
        self._public = public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        if padding.name != "EMSA-PKCS1-v1_5" or not isinstance(algorithm, hashes.HashAlgorithm):
            raise TokenError("keys in a token sign with PKCS#1 v1.5 over the whole message")
        mechanism = _RSA_MECHANISMS.get(algorithm.name)
        if mechanism is None:
            raise TokenError(f"unsupported hash {algorithm.name} for an RSA key in a token")
        return self.token.sign(self.find, bytes(data), mechanism)

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        _refuse("decryption with a signing key")


TokenKey = TokenEcKey | TokenRsaKey


def _digest(data: bytes, algorithm: utils.Prehashed | hashes.HashAlgorithm) -> bytes:
    if isinstance(algorithm, utils.Prehashed):
        return data
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _load_public(spki: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    public = serialization.load_der_public_key(spki)
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TokenError(f"unsupported key type {type(public).__name__} in the token")
    return public


def _wrap(
    token: Token, find: KeyLookup, public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
) -> TokenKey:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return TokenEcKey(token, find, public)
    if isinstance(public, rsa.RSAPublicKey):
        return TokenRsaKey(token, find, public)
    raise TokenError(f"token {token.label!r}: unsupported key type {type(public).__name__}")


def find_token_key(token: Token, label: str | None = None, key_id: bytes | None = None) -> TokenKey:
    """The private key of token with this label and/or CKA_ID, with its public key."""
    key = token.private_key(label, key_id)
    return _wrap(token, (label, key_id), _load_public(token.public_key_der(key)))


def load_token_key(ref: TokenKeyRef) -> TokenKey:
    """The signing key a ``pkcs11:`` URI names; TokenError says what is missing."""
    return find_token_key(open_token(ref.settings, ref.uri.token), label=ref.uri.object)


def load_signing_key(ref: KeyRef) -> CertificateIssuerPrivateKeyTypes:
    """The key a configuration names; KeyFileError (TokenError for a token) says why not."""
    if isinstance(ref, TokenKeyRef):
        return load_token_key(ref)
    return load_private_key(ref)


__all__ = [
    "DEFAULT_PIN_ENV",
    "TOKEN_KEY_TYPES",
    "KeyRef",
    "Pkcs11Uri",
    "Token",
    "TokenEcKey",
    "TokenError",
    "TokenKey",
    "TokenKeyRef",
    "TokenRsaKey",
    "TokenSettings",
    "find_softhsm_module",
    "find_token_key",
    "load_signing_key",
    "load_token_key",
    "open_token",
]
