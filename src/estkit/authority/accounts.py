"""HTTP Basic accounts: argon2id-hashed secrets, one-time bootstrap secrets, verification.

Verifying argon2id costs tens of milliseconds by design.  A device that enrolls, then renews
over TLS, pays it once; a busy gateway that re-authenticates often would pay it every time, so
a successful verification is remembered against the exact stored hash (an HMAC of the secret
under a per-process random key, never the secret itself).  A removed user, a changed secret or
a consumed bootstrap secret changes or removes the stored row, so the memory can never outlive
the account state it was checked against.

Enrollment goes one step further (``recall``): the account itself is remembered with its
verification, so that the event loop need not read it from the store for every request, and
the transaction that records the certificate checks that the account is still stored as it
was (store/users.py ``confirm_user``).  A removed or replaced account therefore stops
working at once, as with a read, and is decided in the same transaction as the issuance.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from estkit.authority.identity import Identity
from estkit.errors import AuthenticationRequired
from estkit.store import AuditEvent, Store, UserRecord

ONCE_SECRET_USED = "this one-time bootstrap secret has already been used"  # noqa: S105
WRONG_CREDENTIALS = "wrong user name or password"
GENERATED_SECRET_BYTES = 18
_VERIFIED_CACHE_SIZE = 4096
_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-+")


class HashCheckNeeded(Exception):
    """authenticate(..., hash_allowed=False) or recall found no remembered verification: the
    argon2id hash must be checked, which takes tens of milliseconds (not on an event loop)."""


class AccountChanged(AuthenticationRequired):
    """A recalled account was removed or replaced before the certificate it asked for was
    recorded: refused as a wrong secret is, and forgotten (Accounts.forget)."""

    def __init__(self, name: str) -> None:
        super().__init__(WRONG_CREDENTIALS)
        self.name = name


def generate_secret() -> str:
    """A fresh random secret, URL-safe, 144 bits."""
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


def validate_user_name(name: str) -> None:
    if not name or len(name) > 128 or not set(name) <= _NAME_CHARACTERS:
        raise ValueError(
            "user names are 1-128 characters of A-Z a-z 0-9 . _ @ - + (no ':' or spaces)"
        )


class Accounts:
    """User management and password verification over the store."""

    def __init__(self, store: Store, hasher: PasswordHasher | None = None) -> None:
        self._store = store
        self._hasher = hasher or PasswordHasher()
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._accounts: OrderedDict[str, UserRecord] = OrderedDict()
        """The last record read of each account verified lately (for recall)."""

    def add(
        self,
        name: str,
        secret: str,
        labels: Sequence[str] | None,
        once: bool,
        actor: str,
    ) -> UserRecord:
        validate_user_name(name)
        if not secret or "\x00" in secret:
            raise ValueError("the secret must be non-empty and contain no NUL character")
        now = datetime.now(UTC)
        record = UserRecord(
            name=name,
            secret_hash=self._hasher.hash(secret),
            labels=None if not labels else tuple(labels),
            once=once,
            created_at=now,
        )
        event = AuditEvent(
            actor=actor,
            action="user.add",
            subject=name,
            at=now,
            detail={"labels": list(labels or []), "once": once},
        )
        self._store.add_user(record, audit=event)
        return record

    def remove(self, name: str, actor: str) -> bool:
        event = AuditEvent(actor=actor, action="user.remove", subject=name, at=datetime.now(UTC))
        return self._store.remove_user(name, audit=event)

    def list(self) -> list[UserRecord]:
        return self._store.users()

    def authenticate(self, name: str, secret: str, *, hash_allowed: bool = True) -> Identity | None:
        """The user's identity when the secret matches (and a one-time one is unused).

        A consumed one-time secret presented correctly is refused with a reason saying so, so
        a device that retries its bootstrap can tell "already used" from "wrong secret"; a
        wrong secret for a consumed account still looks like any other wrong secret.
        ``hash_allowed=False``: answer only from remembered verifications, and raise
        HashCheckNeeded where the hash itself would have to be checked.
        """
        user = self._store.user(name)
        if user is None:
            self._accounts.pop(name, None)
            if not hash_allowed:
                raise HashCheckNeeded
            # Spend comparable time so a missing user cannot be told apart by timing.
            self._verify_hash(_dummy_hash(), secret)
            return None
        if not self._check(user, secret, hash_allowed):
            return None
        _remember(self._accounts, name, user)
        if user.consumed_at is not None:
            raise AuthenticationRequired(ONCE_SECRET_USED)
        return Identity(name=user.name, method="basic", labels=user.labels, once=user.once)

    def recall(self, name: str, secret: str) -> Identity:
        """The user's identity from memory alone: no store read, no hash check.

        Only for a request whose issuing transaction checks the account (Identity.account):
        enrollment.  HashCheckNeeded unless the account was read and this very secret
        verified lately; a one-time account is never recalled (it is used once, and its use
        is what must be read)."""
        user = self._accounts.get(name)
        if user is None or user.once:
            raise HashCheckNeeded
        self._check(user, secret, hash_allowed=False)  # HashCheckNeeded unless remembered
        return Identity(name=user.name, method="basic", labels=user.labels, account=user)

    def forget(self, name: str) -> None:
        """Stop recalling an account (AccountChanged: it was removed or replaced)."""
        self._accounts.pop(name, None)

    def _check(self, user: UserRecord, secret: str, hash_allowed: bool) -> bool:
        digest = hmac.new(self._cache_key, secret.encode(), hashlib.sha256).digest()
        cache_key = (user.name, user.secret_hash)
        remembered = self._verified.get(cache_key)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            with contextlib.suppress(KeyError):  # forgotten by another thread meanwhile
                self._verified.move_to_end(cache_key)
            return True
        if not hash_allowed:
            raise HashCheckNeeded
        if not self._verify_hash(user.secret_hash, secret):
            return False
        _remember(self._verified, cache_key, digest)
        return True

    def _verify_hash(self, secret_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(secret_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def _remember(memory: OrderedDict[_Key, _Value], key: _Key, value: _Value) -> None:
    """Keep value as the most recent entry, forgetting the oldest beyond the limit.  Each
    step is one dictionary operation: the event loop and worker threads share the memory."""
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > _VERIFIED_CACHE_SIZE:
        with contextlib.suppress(KeyError):  # emptied by another thread meanwhile
            memory.popitem(last=False)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users; made on first use, not at import (every
    CLI command imports this module, and hashing costs about 100 ms)."""
    return PasswordHasher().hash(secrets.token_urlsafe(16))
