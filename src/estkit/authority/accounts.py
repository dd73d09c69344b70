"""HTTP Basic accounts: argon2id-hashed secrets, one-time bootstrap secrets, verification.

Verifying argon2id costs tens of milliseconds by design.  A device that enrolls, then renews
over TLS, pays it once; a busy gateway that re-authenticates often would pay it every time, so
a successful verification is remembered against the exact stored hash (an HMAC of the secret
under a per-process random key, never the secret itself).  A removed user, a changed secret or
a consumed bootstrap secret changes or removes the stored row, so the memory can never outlive
the account state it was checked against.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from estkit.authority.identity import Identity
from estkit.errors import AuthenticationRequired
from estkit.store import AuditEvent, Store, UserRecord

ONCE_SECRET_USED = "this one-time bootstrap secret has already been used"  # noqa: S105
GENERATED_SECRET_BYTES = 18
_VERIFIED_CACHE_SIZE = 4096
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-+")


class HashCheckNeeded(Exception):
    """authenticate(..., hash_allowed=False) found no remembered verification: the argon2id
    hash must be checked, which takes tens of milliseconds (not on an event loop)."""


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
            if not hash_allowed:
                raise HashCheckNeeded
            # Spend comparable time so a missing user cannot be told apart by timing.
            self._verify_hash(_dummy_hash(), secret)
            return None
        if not self._check(user, secret, hash_allowed):
            return None
        if user.consumed_at is not None:
            raise AuthenticationRequired(ONCE_SECRET_USED)
        return Identity(name=user.name, method="basic", labels=user.labels, once=user.once)

    def _check(self, user: UserRecord, secret: str, hash_allowed: bool) -> bool:
        digest = hmac.new(self._cache_key, secret.encode(), hashlib.sha256).digest()
        cache_key = (user.name, user.secret_hash)
        remembered = self._verified.get(cache_key)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            self._verified.move_to_end(cache_key)
            return True
        if not hash_allowed:
            raise HashCheckNeeded
        if not self._verify_hash(user.secret_hash, secret):
            return False
        self._verified[cache_key] = digest
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return True

    def _verify_hash(self, secret_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(secret_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users; made on first use, not at import (every
    CLI command imports this module, and hashing costs about 100 ms)."""
    return PasswordHasher().hash(secrets.token_urlsafe(16))
